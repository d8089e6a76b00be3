"""`stylize` and `stylize_batch`: from RGB arrays to stylized RGB arrays, one driver for both.

A run is a plan (`jaxstyle.stages`): stages of scale x tile. The driver walks it: for each stage
it builds the problem (targets, masks, start image from the canvas), calls
`jaxstyle.optimize.minimize` and pastes the result into the canvas. Every control composes with
every other because none of them is a branch of the driver: scales only change the stage's size,
tiles its window, masks and colour modes the problem, a batch the number of canvases walked in
lockstep, and a resumed run starts at the stage its checkpoint recorded.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxstyle import losses
from jaxstyle.choices import NEURAL_NEIGHBOUR
from jaxstyle.compiled import COMPILED, estimate_memory, state_like
from jaxstyle.errors import JaxstyleError, OptimizationError
from jaxstyle.optimize import Continuation, Progress, StopRule, minimize
from jaxstyle.option_fields import OptionsError
from jaxstyle.options import StyleOptions
from jaxstyle.problem import (
    Problem,
    Scale,
    carried_canvas,
    check_arguments,
    check_image,
    check_inputs,
    check_masks,
    check_plan_memory,
    finish,
    network_params,
    prepare_scale,
    stage_problem,
    start_canvas,
)
from jaxstyle.run_state import RunState, restore_state
from jaxstyle.stages import Stage, total_iterations
from jaxstyle.steps import Loss
from jaxstyle.targets import redraw_targets
from jaxstyle.tiling import paste
from jaxstyle.vgg import VGGWeights


@dataclass
class StylizeProgress:
    """Passed to `stylize`'s callback after each chunk of iterations.

    Attributes:
      iteration: iterations of the whole run done (through all stages).
      total_iterations: iterations of the whole run.
      stage: the stage running (`jaxstyle.stages.Stage`: its scale, tile, window, ...).
      value: this stage's total loss now.
      components: its loss components (``content``, ``style``, ``tv``, ``style/<layer>``).
      evaluations: loss-and-gradient evaluations of this stage so far.
      elapsed: seconds since this stage's optimization started (compilation included).
      x: the stage's variable (model-space image [h, w, 3], or luminance [h, w, 1]).
      state: the optimizer state that goes with `x`.
      history: the loss after each iteration of the whole run so far, by component.
      canvas: float32 [H, W, 3] RGB, the scale's picture as it was when the stage started.
      picture: returns the whole current picture (the stage's `x` pasted into `canvas`).
      stages: the run's whole plan (`work`).
    """

    iteration: int
    total_iterations: int
    stage: Stage
    value: float
    components: dict[str, float]
    evaluations: int
    elapsed: float
    x: jax.Array
    state: object
    history: dict[str, list[float]]
    canvas: np.ndarray
    picture: Callable[[], np.ndarray]
    stages: tuple[Stage, ...] = ()

    @property
    def scale(self) -> int:
        return self.stage.scale

    @property
    def tile(self) -> int:
        return self.stage.tile

    @property
    def tiles(self) -> int:
        return self.stage.tiles

    def run_state(self) -> RunState:
        """Everything needed to continue the run from here (see `stylize`'s `resume`)."""
        return RunState(self.iteration, np.asarray(self.x),
                        jax.tree_util.tree_map(np.asarray, self.state),
                        {k: list(v) for k, v in self.history.items()},
                        stage=self.stage.index, canvas=np.asarray(self.canvas))

    def image(self) -> np.ndarray:
        """The current picture as float32 [H, W, 3] RGB in [0, 1]."""
        return self.picture()

    def work(self) -> tuple[int, int]:
        """``(done, total)`` of the run's work in pixel-iterations: each stage's iterations
        times its window's pixels, so that an iteration counts for what it costs (at 512 px
        one is sixteen of 128 px's) and a pace measured at one scale predicts the others."""
        done = total = 0
        for s in self.stages:
            pixels = s.window[2] * s.window[3]
            total += s.iterations * pixels
            if s.index < self.stage.index:
                done += s.iterations * pixels
            elif s.index == self.stage.index:
                done += (self.iteration - s.offset) * pixels
        return done, total


@dataclass
class StylizeResult:
    """What `stylize` returns.

    Attributes:
      image: float32 [H, W, 3] RGB in [0, 1].
      history: the loss after each iteration, by component (``total``, ``content``, ...),
        through all stages in order.
      losses: the final loss components (the mean over the last scale's tiles when tiled).
      evaluations: loss-and-gradient evaluations made by the optimizer.
      timings: seconds spent on ``targets``, ``compile``, ``optimize`` and ``total``.
      weights_source: where the network's weights came from.
      devices: how many devices the run was sharded over.
      scales: per scale run (coarse to fine): ``(size, iterations, seconds)``, its output's
        (H, W), the iterations it ran (fewer than planned when a stop rule ended it; a resumed
        scale's count is from its resume point) and its seconds, tiles together.
    """

    image: np.ndarray
    history: dict[str, list[float]]
    losses: dict[str, float]
    evaluations: int
    timings: dict[str, float]
    weights_source: str
    devices: int = 1
    scales: tuple[tuple[tuple[int, int], int, float], ...] = ()


def memory_limit_bytes(options: StyleOptions) -> int | None:
    """``options.performance.memory_limit_gb`` in bytes (None: what the device has free; 0: no
    check)."""
    if options.performance.memory_limit_gb is None:
        return None
    return int(options.performance.memory_limit_gb * 2**30)


def _pick_output(state, x, options: StyleOptions) -> jax.Array:
    if options.optimization.keep_best:
        return state.best_x
    if options.optimization.ema_decay:
        return state.ema
    return x


def redrawn_args(args: tuple, options: StyleOptions, key: jax.Array,
                 place: Callable = lambda t: t) -> Callable[[int], tuple] | None:
    """For a style loss with random parts (sliced Wasserstein's directions): the optimizer's
    arguments for the chunk starting at an iteration, with the `Targets` among them (the one at
    index 1) redrawn every ``options.objective.redraw_every`` iterations from `key` and that
    period, so an interrupted and resumed run draws what the uninterrupted one drew. None
    otherwise."""
    config = options.loss_config()
    if not config.style_loss.redraws:
        return None
    redraw = jax.jit(functools.partial(redraw_targets, config=config))
    return lambda iteration: (args[0], place(redraw(
        args[1], key=jax.random.fold_in(key, iteration // options.objective.redraw_every))),
        *args[2:])


def batched_objective(x, params, shared: losses.Targets, per_image: losses.Targets, static):
    """One image's loss with its targets split into a shared part and a per-image part (the
    fields that are not None); ``static`` is ``(loss_fn, loss_static)`` of the single-image
    problem. `jax.vmap` maps x and `per_image` over the batch."""
    loss_fn, loss_static = static
    targets = losses.Targets(*[s if p is None else p for s, p in zip(shared, per_image)])
    return loss_fn(x, params, targets, loss_static)


def _stack(trees: Sequence) -> object:
    return jax.tree_util.tree_map(lambda *t: jnp.stack(t), *trees)


class _Walk(NamedTuple):
    """What the driver needs besides the images: fixed for the whole run."""

    weights: VGGWeights
    options: StyleOptions
    key: jax.Array
    callback: Callable | None
    report_at: Callable[[int], bool] | None
    devices: Sequence[jax.Device] | None  # None: one image, not batched
    style_cache: dict | None = None  # stage size -> Targets.style, kept between calls (video)


def _progress(p: Progress, stage: Stage, stages: tuple[Stage, ...], history: dict | None,
              canvas: np.ndarray, problem: Problem, overlap: int) -> StylizeProgress:
    """`minimize`'s progress as the whole run's (history None: a batch, whose per-image
    histories are not reported)."""
    def picture() -> np.ndarray:
        x = p.x if history is not None else p.x[0]
        return paste(canvas, problem.to_rgb(x), stage.window, overlap)

    whole = {} if history is None else {k: history.get(k, []) + v for k, v in p.history.items()}
    return StylizeProgress(stage.offset + p.iteration, total_iterations(stages), stage, p.value,
                           p.components, p.evaluations, p.elapsed, p.x, p.state, whole, canvas,
                           picture, stages)


def _run_stage(walk: _Walk, problems: list[Problem], stage: Stage, stages: tuple[Stage, ...],
               canvas: np.ndarray, history: dict | None, resume: RunState | None,
               share_style: bool, params: dict | None = None):
    """Minimizes one stage's problems: one image (`walk.devices` None), or a batch sharded over
    `walk.devices` whose style targets are shared or (colour-matched styles) per image.

    Returns ``(images, finals, result)``: each image's stage result as RGB float32 [h, w, 3],
    its final loss components, and `minimize`'s result.
    """
    options, weights = walk.options, walk.weights
    first = problems[0]
    config = options.optimizer_config(weights.preprocessing.model_range(), first.pixel_units)
    redraw_key = jax.random.fold_in(jax.random.fold_in(walk.key, 1), stage.index)
    batched = walk.devices is not None
    if params is None:
        params = network_params(weights.params, options, first.image_shape)
    if not batched:
        loss_fn, loss_static, x0 = first.loss_fn, first.loss_static, first.x0
        args, batch_axes, place = (params, first.targets), None, (lambda t: t)
    else:
        mesh = Mesh(np.array(walk.devices), ("batch",))
        by_image = NamedSharding(mesh, PartitionSpec("batch"))
        everywhere = NamedSharding(mesh, PartitionSpec())
        padded = problems + [problems[-1]] * (-len(problems) % len(walk.devices))
        shared = first.targets._replace(content=None, previous=None, style_reference=None,
                                        style=first.targets.style if share_style else None)
        per_style = None if share_style else _stack([p.targets.style for p in padded])

        def each(field):  # a per-image field, stacked (None where the run has none)
            values = [getattr(p.targets, field) for p in padded]
            return _stack(values) if values[0] is not None else None

        per_image = losses.Targets(_stack([p.targets.content for p in padded]), per_style,
                                   previous=each("previous"),
                                   style_reference=each("style_reference"))
        loss_fn, loss_static = batched_objective, (first.loss_fn, first.loss_static)
        x0 = jax.device_put(jnp.stack([p.x0 for p in padded]), by_image)
        args = (jax.device_put(params, everywhere), jax.device_put(shared, everywhere),
                jax.device_put(per_image, by_image))
        batch_axes = (None, None, 0)
        place = functools.partial(jax.device_put, device=everywhere)
    # Per-image style targets of a batch (colour-matched styles) keep their first draw.
    chunk_args = redrawn_args(args, options, redraw_key, place) if share_style else None
    loss = Loss(loss_fn, loss_static, args, batch_axes, chunk_args)
    continuation = None
    if resume is not None:
        if np.shape(resume.x) != x0.shape:
            raise JaxstyleError(f"resume: image of shape {np.shape(resume.x)}, run has {x0.shape}")
        like = state_like(loss, x0, config, options.performance.progress_every)
        state = restore_state(jax.tree_util.tree_leaves(resume.state), like)
        x0, start = jnp.asarray(resume.x), resume.iteration - stage.offset
        # This stage's iterations so far end the saved history (a batch's holds none).
        recent = {k: v[len(v) - start:] for k, v in resume.history.items()}
        continuation = Continuation(state, start, recent=recent)

    def report(p: Progress) -> None:
        walk.callback(_progress(p, stage, stages, history, canvas, first,
                                options.plan.tile_overlap))

    def stops(i: int) -> bool:  # a chunk must end here: a report asked for, or a redraw
        redraw = chunk_args is not None and i % options.objective.redraw_every == 0
        return redraw or walk.report_at is not None and walk.report_at(stage.offset + i)

    try:
        result = minimize(
            loss, x0, config, stage.iterations,
            stop=StopRule(options.optimization.stop_tolerance, options.optimization.stop_change),
            callback=report if walk.callback else None,
            chunk=options.performance.progress_every, chunk_ends=stops, resume=continuation,
            memory_limit=memory_limit_bytes(options),
        )
    except OptimizationError as exc:
        last = exc.last_good and _progress(exc.last_good, stage, stages, history, canvas, first,
                                           options.plan.tile_overlap)
        raise OptimizationError(str(exc), last_good=last) from None
    chosen = _pick_output(result.state, result.x, options)
    opt = result.state.opt
    if not batched:
        return ([first.to_rgb(chosen)],
                [{"total": float(opt.value), **{k: float(v) for k, v in opt.aux.items()}}], result)
    return ([p.to_rgb(chosen[i]) for i, p in enumerate(problems)],
            [{"total": float(opt.value[i]), **{k: float(v[i]) for k, v in opt.aux.items()}}
             for i in range(len(problems))], result)


def _start_canvases(stage: Stage, resume: RunState | None, canvases: list[np.ndarray],
                    scales: list[Scale], options: StyleOptions, key: jax.Array,
                    init_images: list) -> list[np.ndarray]:
    """The pictures a stage starts from, one per image, float32 [H, W, 3] RGB at the stage's
    scale: the checkpoint's canvas in the stage a run resumes in; within a scale, the canvas so
    far (earlier tiles pasted); at a later scale's first tile, the previous scale's result
    upsampled with the photo's finer detail (`carried_canvas`); at the very start,
    `init_images`, noise or the content (``options.optimization.init``)."""
    if resume is not None and resume.canvas is not None:
        return [np.asarray(resume.canvas, np.float32)]
    if resume is not None and stage.index > 0:
        raise JaxstyleError(f"resume: the checkpoint has no canvas for stage {stage.index + 1} "
                            "(it was written by an older version)")
    if stage.tile > 0:
        return canvases
    if stage.scale > 0:
        return [carried_canvas(c, s.content_rgb) for c, s in zip(canvases, scales)]
    return [start_canvas(s.content_rgb, options, key, init)
            for s, init in zip(scales, init_images)]


def _prepare_scales(walk: _Walk, stage: Stage, contents: list[jax.Array],
                    styles: list[jax.Array], style_masks, content_mask,
                    previous: list | None, share_style: bool) -> list[Scale]:
    """Each image's inputs at the stage's scale (`jaxstyle.problem.prepare_scale`), the style
    targets computed once for all of them (and kept in ``walk.style_cache`` across calls)."""
    cache = walk.style_cache if share_style and walk.style_cache is not None else {}
    style = cache.get(stage.size)
    scales = []
    for content, earlier in zip(contents, previous or [None] * len(contents)):
        scales.append(prepare_scale(content, styles, walk.weights, walk.options, stage,
                                    style_masks, content_mask, style if share_style else None,
                                    earlier))
        style = cache[stage.size] = scales[-1].style
    return scales


class _Ahead:
    """A run's later scales prepared in a background thread while the current scale runs: their
    inputs and targets (`_prepare_scales`), network parameters, and compiled init and chunk (in
    `COMPILED`, where `minimize` finds them). A new shape costs seconds of compilation per scale
    (tens at 512 px and more from an empty cache) that would otherwise come between two scales;
    the coarse scales, small and overhead-bound, leave a core for it. Every value is computed
    as the main thread would compute it, so results do not change."""

    def __init__(self, jobs: list[tuple[tuple[int, int], Callable[[], tuple]]]):
        self._futures = {size: concurrent.futures.Future() for size, _ in jobs}
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
        for size, job in jobs:
            future = self._futures[size]
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to whoever takes the scale
                future.set_exception(exc)

    def take(self, size: tuple[int, int]) -> tuple | None:
        """``(scales, params)`` of the scale of `size`, waiting for it (None: not prepared)."""
        future = self._futures.pop(size, None)
        return None if future is None else future.result()

    def cancel(self) -> None:
        """Drops what has not started (what has runs to its end, unused)."""
        for future in self._futures.values():
            future.cancel()


_PREPARING: weakref.WeakSet[_Ahead] = weakref.WeakSet()
"""Every `_Ahead` started in this process and not yet collected."""


@atexit.register
def _finish_preparing() -> None:
    """Waits, as the process exits, for a background preparation still at work. Left running,
    a daemon thread inside XLA is torn down mid-call at the interpreter's end, and the process
    aborts ("FATAL: exception not rethrown", exit 134) instead of exiting with its own code,
    as an interrupted run did when a later scale was still being prepared. The wait is at
    most what that one job has left (its scale's compilation, seconds)."""
    for ahead in list(_PREPARING):
        ahead.join()


def _prepares_ahead(stages: Sequence[Stage], devices) -> bool:
    """Whether `_ahead` prepares later scales of `stages` (one image, untiled scales)."""
    return (devices is None and all(s.tiles == 1 for s in stages)
            and len({s.size for s in stages}) > 1)


def _ahead(walk: _Walk, stages: tuple[Stage, ...], contents, styles, style_masks, content_mask,
           previous, share_style: bool) -> _Ahead | None:
    """Starts preparing the scales after the first of `stages` (the ones the walk runs), for
    one image whose scales are untiled; None when there is nothing to prepare."""
    if not _prepares_ahead(stages, walk.devices):
        return None
    later = [s for s in stages[1:] if s.tile == 0 and s.size != stages[0].size]
    options, weights = walk.options, walk.weights

    def prepare(stage: Stage) -> tuple:
        here = walk._replace(options=options.at_scale(max(stage.size)))
        scales = _prepare_scales(here, stage, contents, styles, style_masks, content_mask,
                                 previous, share_style)
        # The problem as the stage will pose it, from any start of the right shape.
        problem = stage_problem(scales[0], np.asarray(scales[0].content_rgb), stage, weights,
                                here.options)
        params = network_params(weights.params, here.options, problem.image_shape)
        _compile_stage(here.options, weights, problem, params)
        return scales, params

    return _Ahead([(s.size, functools.partial(prepare, s)) for s in later])


def _compile_stage(options: StyleOptions, weights: VGGWeights, problem: Problem,
                   params: dict) -> None:
    """Compiles (into `COMPILED`) the init and chunk `_run_stage` will run for `problem`."""
    config = options.optimizer_config(weights.preprocessing.model_range(), problem.pixel_units)
    estimate_memory(Loss(problem.loss_fn, problem.loss_static, (params, problem.targets)),
                    problem.x0, config, options.performance.progress_every)


def _walk_plan(walk: _Walk, contents: list[jax.Array], styles: list[jax.Array],
               stages: tuple[Stage, ...], init_images: list, style_masks, content_mask,
               resume: RunState | None, previous: list | None = None,
               compiled: float = 0.0) -> list[StylizeResult]:
    """The driver: walks `stages` for the content images (one, or a batch in lockstep);
    `previous` holds each image's temporal targets (video), or is None; `compiled`: seconds
    spent compiling before the walk (the memory check)."""
    options = walk.options
    share_style = not (options.objective.match_style_colors
                       or options.objective.original_colors == "luminance")
    begin = 0 if resume is None else resume.stage
    if not 0 <= begin < len(stages) or resume is not None and not (
            0 <= resume.iteration - stages[begin].offset <= stages[begin].iterations):
        raise JaxstyleError(f"resume: stage {begin} at iteration {resume.iteration} is not part "
                            f"of this run's plan of {len(stages)} stages")
    # The whole run's loss history per image; a resumed run's comes from its checkpoint.
    histories = ([{} for _ in contents] if resume is None
                 else [{k: list(v) for k, v in resume.history.items()}])
    totals = {"targets": 0.0, "compile": compiled, "optimize": 0.0, "total": compiled}
    ahead = _ahead(walk, stages[begin:], contents, styles, style_masks, content_mask, previous,
                   share_style)
    try:
        return _walk_stages(walk, contents, styles, stages, init_images, style_masks,
                            content_mask, resume, previous, begin, share_style, histories,
                            totals, ahead)
    finally:
        if ahead is not None:
            ahead.cancel()


def _walk_stages(walk, contents, styles, stages, init_images, style_masks, content_mask, resume,
                 previous, begin, share_style, histories, totals, ahead) -> list[StylizeResult]:
    """`_walk_plan`'s loop over the stages from `begin`, with `ahead` (or None) preparing the
    later scales."""
    options, weights = walk.options, walk.weights
    count = len(contents)
    canvases: list[np.ndarray] = []
    scales: list[Scale] = []
    per_stage: list[list[dict]] = []  # the current scale's final losses, stage by stage
    evaluations = [0] * count
    ran: dict[tuple[int, int], list] = {}  # each scale's size: [iterations, seconds]
    for stage in stages[begin:]:
        started = time.perf_counter()
        resuming = resume if stage.index == begin else None
        here = walk._replace(options=options.at_scale(max(stage.size)))
        params = None
        if stage.tile == 0 or resuming is not None:
            prepared = ahead and stage.tile == 0 and ahead.take(stage.size)
            if prepared:
                scales, params = prepared
            else:
                scales = _prepare_scales(here, stage, contents, styles, style_masks,
                                         content_mask, previous, share_style)
            per_stage = [] if stage.tile == 0 else per_stage
        canvases = _start_canvases(stage, resuming, canvases, scales, options, walk.key,
                                   init_images)
        problems = [stage_problem(s, c, stage, weights, here.options)
                    for s, c in zip(scales, canvases)]
        jax.block_until_ready([p.targets for p in problems])
        totals["targets"] += time.perf_counter() - started
        if ahead is not None:  # this scale compiled first, then the later ones behind it
            compiling = time.perf_counter()
            if params is None:
                params = network_params(weights.params, here.options, problems[0].image_shape)
            _compile_stage(here.options, weights, problems[0], params)
            totals["compile"] += COMPILED.seconds_since(compiling)
            ahead.start()
        images, finals, result = _run_stage(
            here, problems, stage, stages, canvases[0],
            histories[0] if walk.devices is None else None, resuming, share_style, params)
        canvases = [image if stage.tiles == 1 else paste(c, image, stage.window,
                                                         options.plan.tile_overlap)
                    for c, image in zip(canvases, images)]
        per_stage.append(finals)
        for i in range(count):
            for key, values in result.history.items():
                steps = values if walk.devices is None else [step[i] for step in values]
                histories[i].setdefault(key, []).extend(steps)
            evaluations[i] += (result.evaluations if walk.devices is None
                               else int(result.state.opt.num_fun_eval[i]))
        totals["compile"] += result.compile_seconds
        totals["optimize"] += result.run_seconds
        totals["total"] += time.perf_counter() - started
        scale = ran.setdefault(stage.size, [0, 0.0])
        scale[0] += len(result.history.get("total", ()))
        scale[1] += time.perf_counter() - started
    return [StylizeResult(
        image=finish(canvases[i], scales[i], options),
        history=histories[i],
        losses={k: float(np.mean([f[i][k] for f in per_stage])) for k in per_stage[-1][i]},
        evaluations=evaluations[i],
        timings=dict(totals),
        weights_source=weights.source,
        devices=1 if walk.devices is None else len(walk.devices),
        scales=tuple((size, n, seconds) for size, (n, seconds) in ran.items()),
    ) for i in range(count)]


def stylize(
    content: jax.Array,
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions | None = None,
    *,
    key: jax.Array | None = None,
    init_image: jax.Array | None = None,
    style_masks: Sequence[jax.Array | None] | None = None,
    content_mask: jax.Array | None = None,
    callback: Callable[[StylizeProgress], None] | None = None,
    report_at: Callable[[int], bool] | None = None,
    resume: RunState | None = None,
    previous: Sequence[tuple[jax.Array, jax.Array]] | None = None,
    style_cache: dict | None = None,
) -> StylizeResult:
    """Repaints `content` in the style of `styles` (Gatys et al. 2015, neural-style's objective).

    Has no side effects: it reads its arguments and returns; files are the caller's business.
    Scales, tiles, masks, colour modes and resuming all combine (`jaxstyle.stages`).

    Args:
      content: float [H, W, 3] RGB in [0, 1]; resized so its longest side is ``options.plan.size``.
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1], resized to
        ``options.objective.style_scale`` (or their own ``options.objective.style_scales``) times
        the output's longest side.
      weights: VGG weights from `jaxstyle.load_weights` or `jaxstyle.random_weights`.
      options: hyper-parameters; `StyleOptions()` by default.
      key: where randomness enters (the noise start, sliced Wasserstein's redraws); default
        ``jax.random.key(options.seed)``, which is what the command line makes of its seed.
      init_image: start from this image instead of ``options.optimization.init``.
      style_masks: one mask image per style (float [H, W] or [H, W, 3], any size; white = this
        style applies there), to paint different styles in different regions.
      content_mask: a mask image; the content loss counts only where it is white.
      callback: called with a `StylizeProgress` every ``options.performance.progress_every``
        iterations and at the end of every stage.
      report_at: iterations of the whole run at which a chunk must also end and `callback` be
        called.
      resume: continue a run from this state (from `StylizeProgress.run_state` or a
        checkpoint), at any stage of any plan; the inputs and options must be the run's own. The
        result is bit for bit that of the uninterrupted run on the same machine.
      previous: for video (`jaxstyle.video`): ``(warped, weights)`` pairs, earlier stylized
        frames warped to this one (float [H, W, 3] RGB in [0, 1], resized to the output) and
        their per-pixel consistency weights float [H, W] in [0, 1]; adds the temporal loss
        weighted by ``options.video.temporal_weight``.
      style_cache: a dict kept between calls with the same styles and options (the frames of a
        video): the style targets are computed once and reused from it.

    Returns:
      A `StylizeResult` with the image, the loss history through all stages, evaluations and
      timings.

    Raises:
      JaxstyleError: invalid inputs or a `resume` state that does not fit;
        `OptimizationError` if the loss becomes NaN or infinite (it carries the last good state).
    """
    options = check_arguments(weights, options)
    content = check_image(content, "content")
    styles = [check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]
    init_image = None if init_image is None else check_image(init_image, "init_image")
    style_masks, content_mask = check_masks(style_masks, content_mask, len(styles))
    stages = check_inputs(content.shape, [s.shape for s in styles], options)
    started = time.perf_counter()  # the memory check compiles the run: count it as compiling
    # With scales prepared ahead, the largest is compiled while the smaller ones run, and
    # checked then (by `minimize`, before it allocates anything).
    first = 0 if resume is None else resume.stage
    check_plan_memory(stages, content.shape, [s.shape for s in styles], weights, options,
                      style_masks is not None, content_mask is not None, len(previous or ()),
                      compile=not _prepares_ahead(stages[first:], None))
    walk = _Walk(weights, options, jax.random.key(options.seed) if key is None else key,
                 callback, report_at, None, style_cache)
    return _walk_plan(walk, [content], styles, stages, [init_image], style_masks, content_mask,
                      resume, [previous] if previous else None,
                      COMPILED.seconds_since(started))[0]


def stylize_batch(
    contents: Sequence[jax.Array],
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions | None = None,
    *,
    key: jax.Array | None = None,
    devices: Sequence[jax.Device] | None = None,
    callback: Callable[[StylizeProgress], None] | None = None,
    init_images: Sequence[jax.Array | None] | None = None,
    previous: Sequence[Sequence[tuple[jax.Array, jax.Array]]] | None = None,
    style_cache: dict | None = None,
) -> list[StylizeResult]:
    """Stylizes several content images with the same styles and options, batched and sharded.

    Images whose plans match (the same output size at every scale) run together: the
    single-image optimizer step is `jax.vmap`-ped, so every image keeps its own optimizer state
    and ends where a run of its own would, and the batch axis is sharded across `devices`. Each
    batch walks the plan's stages (scales, tiles) in lockstep.

    Args:
      contents: float [H_i, W_i, 3] RGB images in [0, 1].
      styles: the style images, as for `stylize`.
      weights: the network.
      options: as for `stylize`.
      key: as for `stylize`.
      devices: devices to shard each batch over (default: all local devices). A batch is padded
        with copies of its last image to a multiple of their number.
      callback: called with a `StylizeProgress` (its ``value`` summed over the batch, its
        ``history`` empty) after each chunk.
      init_images: a start image per content image (None entries: ``options.optimization.init``).
      previous: per content image, its temporal targets as `stylize` takes them (video's
        multi-pass mode); all images or none have them.
      style_cache: as for `stylize`.

    Returns:
      One `StylizeResult` per content image, in order; each equals what `stylize` gives for that
      image alone (up to floating-point reassociation in batched kernels).

    Raises:
      JaxstyleError: invalid inputs or options.
    """
    options = check_arguments(weights, options)
    if options.preset == NEURAL_NEIGHBOUR:
        raise OptionsError(f"preset: {NEURAL_NEIGHBOUR} does not run batches yet; stylize "
                           "each image on its own")
    if not contents:
        raise JaxstyleError("contents: no content images")
    contents = [check_image(c, f"contents[{i}]") for i, c in enumerate(contents)]
    styles = [check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]
    walk = _Walk(weights, options, jax.random.key(options.seed) if key is None else key,
                 callback, None, list(devices or jax.local_devices()), style_cache)
    init_images = list(init_images or [None] * len(contents))
    if previous is not None and (len(previous) != len(contents)
                                 or len({len(p or ()) for p in previous}) > 1):
        raise JaxstyleError("previous: one list of the same length per content image")
    groups: dict[tuple, list[int]] = {}
    plans = {}
    for index, content in enumerate(contents):
        stages = check_inputs(content.shape, [s.shape for s in styles], options)
        signature = tuple(stage.size for stage in stages)
        groups.setdefault(signature, []).append(index)
        plans[signature] = stages
    results: list[StylizeResult | None] = [None] * len(contents)
    for signature, indices in groups.items():
        try:
            done = _walk_plan(walk, [contents[i] for i in indices], styles, plans[signature],
                              [init_images[i] for i in indices], None, None, None,
                              None if previous is None or not previous[0]
                              else [previous[i] for i in indices])
        except OptimizationError as exc:
            size = signature[-1]
            raise OptimizationError(f"batch of {len(indices)} images at {size[1]}x{size[0]}: "
                                    f"{exc}") from None
        for index, result in zip(indices, done):
            results[index] = result
    return results
