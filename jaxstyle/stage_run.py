"""One stage of a run minimized (`run_stage`): its `jaxstyle.steps.Loss` for the images as
their `jaxstyle.layouts.Layout` lays them out (one image, or a batch sharded over devices), the
style targets redrawn chunk by chunk when the style loss has random parts, a resumed stage's
state, and the stage's images and final losses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.compiled import estimate_memory, state_like
from jaxstyle.errors import JaxstyleError, OptimizationError, RunDivergedError
from jaxstyle.layouts import Layout
from jaxstyle.optimize import Continuation, Progress, StopRule, minimize
from jaxstyle.options import StyleOptions
from jaxstyle.problem import Problem, network_params
from jaxstyle.run_state import RunState, restore_state
from jaxstyle.stages import Stage
from jaxstyle.steps import Loss
from jaxstyle.targets import redraw_targets
from jaxstyle.vgg import VGGWeights


class Walk(NamedTuple):
    """What the driver needs besides the images: fixed for the whole run."""

    weights: VGGWeights
    options: StyleOptions
    key: jax.Array
    callback: Callable | None
    report_at: Callable[[int], bool] | None
    layout: Layout  # one image, or a batch sharded over devices
    style_cache: dict | None = None  # (stage size, regions) -> Targets.style, kept between calls


def run_stage(walk: Walk, problems: list[Problem], stage: Stage, resume: RunState | None,
              share_style: bool, params: dict | None, as_run: Callable[[Progress], object]):
    """Minimizes one stage's problems, one per image laid out as ``walk.layout`` says, whose
    style targets are shared or (colour-matched styles) each image's own; ``walk.callback``
    gets `minimize`'s progress as `as_run` makes it the whole run's.

    Returns ``(images, finals, result)``: each image's stage result as RGB float32 [h, w, 3],
    its final loss components, and `minimize`'s result.
    """
    options, weights = walk.options, walk.weights
    config = options.optimizer_config(weights.preprocessing.model_range(),
                                      problems[0].pixel_units)
    redraw_key = jax.random.fold_in(jax.random.fold_in(walk.key, 1), stage.index)
    if params is None:
        params = network_params(weights.params, options, problems[0].image_shape)
    loss, x0 = stage_loss(walk.layout, problems, params, share_style, options, redraw_key)
    continuation = None
    if resume is not None:
        x0, continuation = _continuation(resume, loss, x0, config, stage, options)
    result = _minimize_stage(walk, loss, x0, config, continuation, stage, as_run)
    return _stage_outputs(walk.layout, problems, result, options)


def _continuation(resume: RunState, loss: Loss, x0: jax.Array, config, stage: Stage,
                  options: StyleOptions) -> tuple[jax.Array, Continuation]:
    """``(x0, continuation)`` of the stage `resume` is in: its image and optimizer state."""
    if np.shape(resume.x) != x0.shape:
        raise JaxstyleError(f"resume: image of shape {np.shape(resume.x)}, run has {x0.shape}")
    like = state_like(loss, x0, config, options.performance.progress_every)
    state = restore_state(jax.tree_util.tree_leaves(resume.state), like)
    x0, start = jnp.asarray(resume.x), resume.iteration - stage.offset
    # This stage's iterations so far end the saved history.
    recent = {k: v[len(v) - start:] for k, v in resume.history.items()}
    return x0, Continuation(state, start, recent=recent)


def _minimize_stage(walk: Walk, loss: Loss, x0: jax.Array, config,
                    continuation: Continuation | None, stage: Stage,
                    as_run: Callable[[Progress], object]):
    """`minimize`'s result for the stage, reported to ``walk.callback`` as the whole run's
    progress (`as_run`); divergence raises `RunDivergedError` with the last good state as the
    run's."""
    options = walk.options

    def report(p: Progress) -> None:
        walk.callback(as_run(p))

    def stops(i: int) -> bool:  # a chunk must end here: a report asked for, or a redraw
        redraw = loss.chunk_args is not None and i % options.objective.redraw_every == 0
        return redraw or walk.report_at is not None and walk.report_at(stage.offset + i)

    try:
        return minimize(
            loss, x0, config, stage.iterations,
            stop=StopRule(options.optimization.stop_tolerance, options.optimization.stop_change),
            callback=report if walk.callback else None,
            chunk=options.performance.progress_every, chunk_ends=stops, resume=continuation,
            memory_limit=memory_limit_bytes(options),
        )
    except OptimizationError as exc:
        raise RunDivergedError(str(exc), exc.last_good, as_run(exc.last_good)) from None


def _stage_outputs(layout: Layout, problems: list[Problem], result,
                   options: StyleOptions) -> tuple[list, list[dict], object]:
    """`run_stage`'s ``(images, finals, result)`` from `minimize`'s result."""
    chosen = _pick_output(result.state, result.x, options)
    opt = result.state.opt
    aux = {k: layout.split(v) for k, v in opt.aux.items()}
    finals = [{"total": float(value), **{k: float(v[i]) for k, v in aux.items()}}
              for i, value in enumerate(layout.split(opt.value))]
    return [p.to_rgb(x) for p, x in zip(problems, layout.split(chosen))], finals, result


def compile_stage(walk: Walk, problems: list[Problem], share_style: bool,
                  params: dict) -> None:
    """Compiles (into `COMPILED`) the init and chunk `run_stage` will run for `problems` (any
    of the stage's shapes: their values do not matter)."""
    options = walk.options
    config = options.optimizer_config(walk.weights.preprocessing.model_range(),
                                      problems[0].pixel_units)
    loss, x0, _ = walk.layout.lay_out(problems, params, share_style)
    estimate_memory(loss, x0, config, options.performance.progress_every)


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


def stage_loss(layout: Layout, problems: list[Problem], params: dict, share_style: bool,
               options: StyleOptions, redraw_key: jax.Array) -> tuple[Loss, jax.Array]:
    """``(loss, x0)`` of a stage's problems laid out by `layout`, whose style targets are shared
    or (colour-matched styles) each image's own; with its chunks' arguments redrawn from
    `redraw_key` (`redrawn_args`)."""
    loss, x0, place = layout.lay_out(problems, params, share_style)
    # Per-image style targets of a batch (colour-matched styles) keep their first draw.
    chunk_args = (redrawn_args(loss.args, options, redraw_key, place, problems[0].redraw)
                  if share_style else None)
    return loss._replace(chunk_args=chunk_args), x0


def redrawn_args(args: tuple, options: StyleOptions, key: jax.Array,
                 place: Callable = lambda t: t, redraw: Callable | None = None
                 ) -> Callable[[int], tuple] | None:
    """For an objective with random parts (sliced Wasserstein's directions; `redraw`, the
    problem's own, `Problem.redraw`): the optimizer's arguments for the chunk starting at an
    iteration, with the targets among them (the ones at index 1) redrawn every
    ``options.objective.redraw_every`` iterations from `key` and that period, so an
    interrupted and resumed run draws what the uninterrupted one drew. None otherwise."""
    if redraw is None:
        config = options.loss_config()
        if not config.style_loss.redraws:
            return None
        redraw = jax.jit(functools.partial(redraw_targets, config=config))
    return lambda iteration: (args[0], place(redraw(
        args[1], key=jax.random.fold_in(key, iteration // options.objective.redraw_every))),
        *args[2:])
