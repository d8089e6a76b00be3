"""One stage of a run minimized (`run_stage`): its `jaxstyle.steps.Loss` for one image's
problem or a batch's sharded over devices (`jax.vmap`-ped by the optimizer), the style targets
redrawn chunk by chunk when the style loss has random parts, a resumed stage's state, and the
stage's images and final losses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxstyle import losses
from jaxstyle.compiled import estimate_memory, state_like
from jaxstyle.errors import JaxstyleError, OptimizationError
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
    devices: Sequence[jax.Device] | None  # None: one image, not batched
    style_cache: dict | None = None  # stage size -> Targets.style, kept between calls (video)


def run_stage(walk: Walk, problems: list[Problem], stage: Stage, resume: RunState | None,
              share_style: bool, params: dict | None, as_run: Callable[[Progress], object]):
    """Minimizes one stage's problems: one image (`walk.devices` None), or a batch sharded over
    `walk.devices` whose style targets are shared or (colour-matched styles) per image;
    ``walk.callback`` gets `minimize`'s progress as `as_run` makes it the whole run's.

    Returns ``(images, finals, result)``: each image's stage result as RGB float32 [h, w, 3],
    its final loss components, and `minimize`'s result.
    """
    options, weights = walk.options, walk.weights
    first = problems[0]
    config = options.optimizer_config(weights.preprocessing.model_range(), first.pixel_units)
    redraw_key = jax.random.fold_in(jax.random.fold_in(walk.key, 1), stage.index)
    if params is None:
        params = network_params(weights.params, options, first.image_shape)
    loss, x0 = stage_loss(problems, params, walk.devices, share_style, options, redraw_key)
    continuation = None
    if resume is not None:
        x0, continuation = _continuation(resume, loss, x0, config, stage, options)
    result = _minimize_stage(walk, loss, x0, config, continuation, stage, as_run)
    return _stage_outputs(problems, result, options, walk.devices is not None)


def _continuation(resume: RunState, loss: Loss, x0: jax.Array, config, stage: Stage,
                  options: StyleOptions) -> tuple[jax.Array, Continuation]:
    """``(x0, continuation)`` of the stage `resume` is in: its image and optimizer state."""
    if np.shape(resume.x) != x0.shape:
        raise JaxstyleError(f"resume: image of shape {np.shape(resume.x)}, run has {x0.shape}")
    like = state_like(loss, x0, config, options.performance.progress_every)
    state = restore_state(jax.tree_util.tree_leaves(resume.state), like)
    x0, start = jnp.asarray(resume.x), resume.iteration - stage.offset
    # This stage's iterations so far end the saved history (a batch's holds none).
    recent = {k: v[len(v) - start:] for k, v in resume.history.items()}
    return x0, Continuation(state, start, recent=recent)


def _minimize_stage(walk: Walk, loss: Loss, x0: jax.Array, config,
                    continuation: Continuation | None, stage: Stage,
                    as_run: Callable[[Progress], object]):
    """`minimize`'s result for the stage, reported to ``walk.callback`` as the whole run's
    progress (`as_run`); an `OptimizationError` carries its last good state as the run's."""
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
        last = exc.last_good and as_run(exc.last_good)
        raise OptimizationError(str(exc), last_good=last) from None


def _stage_outputs(problems: list[Problem], result, options: StyleOptions,
                   batched: bool) -> tuple[list, list[dict], object]:
    """`run_stage`'s ``(images, finals, result)`` from `minimize`'s result."""
    first = problems[0]
    chosen = _pick_output(result.state, result.x, options)
    opt = result.state.opt
    if not batched:
        return ([first.to_rgb(chosen)],
                [{"total": float(opt.value), **{k: float(v) for k, v in opt.aux.items()}}], result)
    return ([p.to_rgb(chosen[i]) for i, p in enumerate(problems)],
            [{"total": float(opt.value[i]), **{k: float(v[i]) for k, v in opt.aux.items()}}
             for i in range(len(problems))], result)


def compile_stage(options: StyleOptions, weights: VGGWeights, problem: Problem,
                  params: dict) -> None:
    """Compiles (into `COMPILED`) the init and chunk `run_stage` will run for `problem`."""
    config = options.optimizer_config(weights.preprocessing.model_range(), problem.pixel_units)
    estimate_memory(Loss(problem.loss_fn, problem.loss_static, (params, problem.targets)),
                    problem.x0, config, options.performance.progress_every)


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


def stage_loss(problems: list[Problem], params: dict, devices: Sequence[jax.Device] | None,
               share_style: bool, options: StyleOptions,
               redraw_key: jax.Array) -> tuple[Loss, jax.Array]:
    """``(loss, x0)`` of a stage: one image's problem (`devices` None), or a batch sharded over
    `devices` whose style targets are shared or (colour-matched styles) per image; with its
    chunks' arguments redrawn from `redraw_key` (`redrawn_args`)."""
    first = problems[0]
    if devices is None:
        loss_fn, loss_static, x0 = first.loss_fn, first.loss_static, first.x0
        args, batch_axes, place = (params, first.targets), None, (lambda t: t)
    else:
        loss_fn, loss_static, x0, args, batch_axes, place = _sharded(problems, params, devices,
                                                                     share_style)
    # Per-image style targets of a batch (colour-matched styles) keep their first draw.
    chunk_args = redrawn_args(args, options, redraw_key, place) if share_style else None
    return Loss(loss_fn, loss_static, args, batch_axes, chunk_args), x0


def _sharded(problems: list[Problem], params: dict, devices: Sequence[jax.Device],
             share_style: bool) -> tuple:
    """``(loss_fn, loss_static, x0, args, batch_axes, place)`` of a batch: the problems padded
    to a multiple of the devices, stacked and sharded over them (`batched_objective`)."""
    first = problems[0]
    mesh = Mesh(np.array(devices), ("batch",))
    by_image = NamedSharding(mesh, PartitionSpec("batch"))
    everywhere = NamedSharding(mesh, PartitionSpec())
    padded = problems + [problems[-1]] * (-len(problems) % len(devices))
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
    place = functools.partial(jax.device_put, device=everywhere)
    return loss_fn, loss_static, x0, args, (None, None, 0), place


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
