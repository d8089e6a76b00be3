"""The memory check of a whole plan: a run whose largest stage would not fit is refused before
any target is computed (`check_plan_memory`), from shapes alone."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxstyle import pyramid
from jaxstyle.compiled import check_memory
from jaxstyle.options import StyleOptions
from jaxstyle.problem import (
    banded,
    network_params,
    objective_of,
    prepare_scale,
    stage_problem,
    start_variable,
)
from jaxstyle.stages import Stage
from jaxstyle.steps import Loss
from jaxstyle.vgg import VGGWeights


def check_plan_memory(stages: Sequence[Stage], content_shape: tuple[int, ...],
                      style_shapes: Sequence[tuple[int, ...]], weights: VGGWeights,
                      options: StyleOptions, masks: bool = False, content_mask: bool = False,
                      previous: int = 0, compile: bool = True) -> None:
    """Refuses a run whose largest stage would not fit in memory
    (``options.performance.memory_limit_gb``, default what the device has free), before any
    target is computed: the stage's problem is built from shapes alone (`jax.eval_shape`) and
    its compiled chunk's memory analysed; the compiled code is kept for the run
    (`jaxstyle.compiled.COMPILED`).

    Args:
      masks, content_mask: whether the run has style masks (one per style) and a content mask.
      previous: how many earlier frames the temporal loss holds it to (video).
      compile: False checks only what needs no compilation (the optimizer state's size, from
        the variable's shape alone: no target or network is traced); the
        stage's own check (`jaxstyle.optimize.minimize`) then estimates the rest, when its
        code has been compiled anyway.

    Raises:
      OutOfMemoryError: the estimate, its parts and what to change.
    """
    gb = options.performance.memory_limit_gb
    limit = None if gb is None else int(gb * 2**30)
    if limit == 0:
        return
    stage = max(stages, key=lambda s: s.window[2] * s.window[3])
    pre = weights.preprocessing
    luminance = options.objective.original_colors == "luminance"
    config = options.optimizer_config(pre.model_range(), luminance)
    chunk = options.performance.progress_every
    if not compile:
        check_memory(Loss(_state_only, None, ()), _variable_like(stage, weights, options),
                     config, chunk, limit, compile=False)
        return

    pixels = options.replace(parametrization="pixels")  # bands: see below

    def build(content, styles, style_masks, cmask, frames):
        scale = prepare_scale(content, styles, weights, options, stage._replace(tiles=1),
                              style_masks, cmask, previous=frames)
        problem = stage_problem(scale, scale.content_rgb, stage, weights, pixels)
        return problem.x0, problem.targets

    def like(shape):
        return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)

    size = (*stage.size, 3)
    x0, targets = jax.eval_shape(
        build, like(content_shape), [like(s) for s in style_shapes],
        [like(stage.size)] * len(style_shapes) if masks else None,
        like(stage.size) if content_mask else None,
        [(like(size), like(stage.size))] * previous or None)
    loss_fn, loss_static = objective_of(options, weights)
    params = jax.eval_shape(lambda p: network_params(p, options, x0.shape), weights.params)
    if options.optimization.parametrization == "pyramid":
        loss_fn, loss_static, shapes = banded(loss_fn, loss_static, x0.shape)
        x0 = jax.ShapeDtypeStruct((sum(math.prod(s) for s in shapes),), x0.dtype)
    check_memory(Loss(loss_fn, loss_static, (params, targets)), x0, config, chunk, limit)


def _state_only(x: jax.Array, static: None) -> tuple[jax.Array, dict]:
    """A stand-in objective for the optimizer state's size alone: the state holds the variable,
    its gradient and history, whatever the objective; only its scalar components (a few bytes)
    are left out. Tracing the real objective and its targets at the largest stage cost seconds
    (before a run's first picture) where the size needs none of it."""
    return jnp.sum(x), {}


def _variable_like(stage: Stage, weights: VGGWeights, options: StyleOptions
                   ) -> jax.ShapeDtypeStruct:
    """The shape and dtype of `stage`'s variable (`Problem.x0`, or its pyramid's bands),
    computing nothing."""
    *_, h, w = stage.window
    x0 = jax.eval_shape(lambda start: start_variable(start, weights, options),
                        jax.ShapeDtypeStruct((h, w, 3), jnp.float32))
    if options.optimization.parametrization == "pyramid":
        shapes = pyramid.band_shapes(tuple(x0.shape))
        return jax.ShapeDtypeStruct((sum(math.prod(s) for s in shapes),), x0.dtype)
    return x0
