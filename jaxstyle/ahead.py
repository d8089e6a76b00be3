"""A run's scales prepared: each image's inputs at a scale (`prepare_scales`), and the later
scales of a run (or other work a run will need) prepared in a background thread while the
current one runs (`Ahead`).

The preparation reads the run's `jaxstyle.stage_run.Walk` as the driver (`jaxstyle.driver`)
does, so a scale prepared ahead is the one the driver would have prepared.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import threading
import weakref
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxstyle.checks import ImageInputs
from jaxstyle.problem import Scale, network_params, prepare_scale, stage_problem
from jaxstyle.stage_run import Walk, compile_stage
from jaxstyle.stages import Stage


def prepare_scales(walk: Walk, stage: Stage, images: list[ImageInputs],
                   styles: list[jax.Array], share_style: bool) -> list[Scale]:
    """Each image's inputs at the stage's scale (`jaxstyle.problem.prepare_scale`), the style
    targets computed once for all of them (and kept in ``walk.style_cache`` across calls)."""
    cache = walk.style_cache if share_style and walk.style_cache is not None else {}
    scales = []
    for image in images:
        regions = image.style_masks is not None  # which style targets the image needs
        style = cache.get((stage.size, stage.final, regions))
        scales.append(prepare_scale(image.content, styles, walk.weights, walk.options, stage,
                                    image.style_masks, image.content_mask,
                                    style if share_style else None, image.previous, walk.key))
        cache[stage.size, stage.final, regions] = scales[-1].style
    return scales


class Ahead:
    """Jobs run one after another in a background thread while a run optimizes, each taken by
    its number (`take`): the quality line's preparation (`jaxstyle.pipeline.scoring_ahead`),
    and a run's later scales, prepared while the current scale runs: their inputs and targets
    (`prepare_scales`), network parameters, and compiled init and chunk (in `COMPILED`, where
    `minimize` finds them). A new shape costs seconds of compilation per scale
    (tens at 512 px and more from an empty cache) that would otherwise come between two scales;
    the coarse scales, small and overhead-bound, leave a core for it. Every value is computed
    as the main thread would compute it, so results do not change."""

    def __init__(self, jobs: list[tuple[int, Callable[[], tuple]]]):
        self._futures = {scale: concurrent.futures.Future() for scale, _ in jobs}
        # A daemon thread, so that a run that ends early (Ctrl-C, an error) is not held by it;
        # the process's exit waits for it (`_finish_preparing`).
        self._thread = threading.Thread(target=self._work, args=(jobs,), daemon=True,
                                        name="jaxstyle-next-scales")

    def start(self) -> None:
        """Starts the work (once the current scale's own compilation, which the run waits
        for, is done: the two would share the CPU)."""
        if not self._thread.is_alive() and self._thread.ident is None:
            _PREPARING.add(self)
            self._thread.start()

    def join(self) -> None:
        """Drops what has not started and waits for what has."""
        self.cancel()
        if self._thread.ident is not None:
            self._thread.join()

    def _work(self, jobs) -> None:
        for scale, job in jobs:
            future = self._futures[scale]
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to whoever takes the scale
                future.set_exception(exc)

    def take(self, scale: int) -> tuple | None:
        """``(scales, params)`` of scale number `scale`, waiting for it (None: not
        prepared)."""
        future = self._futures.pop(scale, None)
        return None if future is None else future.result()

    def start_after_first_report(self, walk: Walk) -> Walk:
        """`walk` whose callback starts this work once it has taken the stage's first
        progress, so that a first picture (the studio's first preview) does not share the CPU
        with the later scales' compiling; without a callback the work starts at once. Starting
        is idempotent, and the results do not depend on when it starts."""
        if walk.callback is None:
            self.start()
            return walk

        def callback(progress) -> None:
            walk.callback(progress)
            self.start()

        return walk._replace(callback=callback)

    def cancel(self) -> None:
        """Drops what has not started (what has runs to its end, unused)."""
        for future in self._futures.values():
            future.cancel()


_PREPARING: weakref.WeakSet[Ahead] = weakref.WeakSet()
"""Every `Ahead` started in this process and not yet collected."""


@atexit.register
def _finish_preparing() -> None:
    """Waits, as the process exits, for a background preparation still at work. Left running,
    a daemon thread inside XLA is torn down mid-call at the interpreter's end, and the process
    aborts ("FATAL: exception not rethrown", exit 134) instead of exiting with its own code,
    as an interrupted run did when a later scale was still being prepared. The wait is at
    most what that one job has left (its scale's compilation, seconds)."""
    for ahead in list(_PREPARING):
        ahead.join()


def prepares_ahead(stages: Sequence[Stage]) -> bool:
    """Whether `prepare_later_scales` prepares later scales of `stages` (untiled scales)."""
    return all(s.tiles == 1 for s in stages) and len({s.size for s in stages}) > 1


def prepare_later_scales(walk: Walk, stages: tuple[Stage, ...], images: list[ImageInputs],
                         styles: list[jax.Array], share_style: bool) -> Ahead | None:
    """Starts preparing the scales after the first of `stages` (the ones the walk runs), when
    the scales are untiled; None when there is nothing to prepare."""
    if not prepares_ahead(stages):
        return None
    # Not the neural-neighbour route's last pass: prepared while the finest scale runs (its
    # style's four rotated copies read at the full size), it raised the run's peak memory at
    # 512 px from 2.6 to 3.7 GB; prepared in turn it costs seconds (docs/guide/losses.md).
    later = [s for s in stages[1:]
             if s.tile == 0 and s.size != stages[0].size and not s.final]
    options, weights = walk.options, walk.weights

    def prepare(stage: Stage) -> tuple:
        here = walk._replace(options=options.at_scale(max(stage.size)))
        scales = prepare_scales(here, stage, images, styles, share_style)
        # The problem as the stage will pose it, from any start of the right shape.
        problem = stage_problem(scales[0], np.asarray(scales[0].content_rgb), stage, weights,
                                here.options)
        params = network_params(weights.params, here.options, problem.image_shape)
        compile_stage(here, [problem] * len(scales), share_style, params)
        return scales, params

    return Ahead([(s.scale, functools.partial(prepare, s)) for s in later])
