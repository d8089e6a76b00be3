"""The optimizer as state-in, state-out functions, and a chunk of its iterations compiled.

`optimizer` turns an `OptimizerConfig` into an `Optimizer`, two pure functions of one image:
``init(x, *args) -> LoopState`` and ``step(x, state, *args) -> (x, LoopState)``, with
`jaxstyle.lbfgs.CompactLBFGS` or optax's Adam underneath (this is the only module that imports
optax). `chunk_functions` compiles them into what `jaxstyle.optimize.minimize` runs: many steps
per call inside a `lax.while_loop`, for one image or, with `jax.vmap`, a batch.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxstyle.lbfgs import CompactLBFGS
from jaxstyle.linesearch import ZoomLineSearch

CHANGE = "change"
"""The history entry of the image's mean absolute change per iteration, in grey levels."""


class Loss(NamedTuple):
    """What is minimized: ``fun(x, *args, static) -> (value, aux)`` over the image ``x``.

    Attributes:
      fun: a module-level function (it is a compile cache's key), e.g.
        `jaxstyle.losses.objective`; ``value`` is a scalar, ``aux`` a dict of scalar loss
        components.
      static: its last, hashable static argument, e.g. a `jaxstyle.losses.LossConfig`.
      args: the array arguments after ``x`` (parameters, targets), or their
        `jax.ShapeDtypeStruct`s where only shapes are needed (`jaxstyle.compiled`).
      batch_axes: optimize a batch: ``x`` has a leading axis and ``args[i]`` is mapped over its
        axis ``batch_axes[i]`` (None: shared); every image is optimized independently, exactly
        as on its own. None: one image.
      chunk_args: ``iteration -> args`` for the chunk starting at that iteration, arrays of
        the same shapes as `args` (a style loss that redraws random directions between
        chunks); the loss is fixed within a chunk. None: `args` throughout.
    """

    fun: Callable
    static: Any
    args: tuple
    batch_axes: tuple | None = None
    chunk_args: Callable[[int], tuple] | None = None


@dataclass(frozen=True)
class OptimizerConfig:
    """How the image is optimized. The defaults live in `jaxstyle.StyleOptions`: make one with
    ``StyleOptions(...).optimizer_config(preprocessing.model_range())``.

    Attributes:
      name: "lbfgs" or "adam".
      learning_rate: L-BFGS step size (1 = neural-style's unit step; with a line search, the
        step each search tries first) or Adam's learning rate, both in the network's input
        space.
      history: L-BFGS history size.
      linesearch: "none" for neural-style's fixed steps, or a jaxopt line search name.
      ema_decay: decay of the moving average of iterates kept in `LoopState.ema` (0: the average
        is just the current iterate).
      first_step: with a line search, the largest change of any variable that L-BFGS's first
        step tries (model units); 0: jaxopt's unscaled first step along -g. A loss whose
        values are O(1) (a normalised objective) has a gradient far too small for that.
      grey_level: variable units per grey level (1/255 of the pixel range): the unit of the
        ``change`` history, the mean absolute change of the image per iteration.
    """

    name: str
    learning_rate: float
    history: int
    linesearch: str
    ema_decay: float
    first_step: float = 0.0
    grey_level: float = 1.0


class LoopState(NamedTuple):
    """Everything the loop carries from one iteration to the next.

    Attributes:
      opt: the optimizer's own state (`jaxstyle.lbfgs.LBFGSState` or `AdamState`), with the loss
        ``value`` and components ``aux`` at the current iterate.
      ema: exponential moving average of the iterates (crowsonkb's iterate averaging).
      best_x: the iterate with the lowest loss so far.
      best_value: its loss.
    """

    opt: Any
    ema: jax.Array
    best_x: jax.Array
    best_value: jax.Array


class AdamState(NamedTuple):
    """Adam's state plus the loss, gradient and aux at the current image (as jaxopt keeps them)."""

    opt_state: Any
    value: jax.Array
    grad: jax.Array
    aux: Any
    num_fun_eval: jax.Array


class ChunkResult(NamedTuple):
    """What one compiled chunk returns.

    Attributes:
      x: the image after the last good step.
      state: the optimizer state after the last good step.
      steps: iterations taken, [] int32.
      history: ``{"total": [chunk], component: [chunk]}``, the loss after each step (NaN-padded).
      diverged: [] bool, whether a step produced a NaN or infinite loss (that step is not taken).
      bad_aux: the loss components of the diverged step (meaningful only when `diverged`).
    """

    x: jax.Array
    state: Any
    steps: jax.Array
    history: dict
    diverged: jax.Array
    bad_aux: dict



class Optimizer(NamedTuple):
    """An optimizer as two pure functions, state in and new state out (like optax's
    `GradientTransformation`), for one image; `jax.vmap` them for a batch.

    Attributes:
      init: ``init(x, *args) -> LoopState``, the state at the starting image (one evaluation).
      step: ``step(x, state, *args) -> (x, LoopState)``, one iteration.
    """

    init: Callable
    step: Callable


def lbfgs_solver(fun: Callable, config: OptimizerConfig) -> CompactLBFGS:
    """`config`'s L-BFGS for ``fun(x, *args) -> (value, aux)``: fixed steps of
    ``config.learning_rate`` (neural-style's) or a line search."""
    fixed = config.linesearch == "none"
    linesearch = config.linesearch
    if linesearch == "zoom":
        linesearch = ZoomLineSearch(fun=fun, has_aux=True, maxiter=30,
                                    max_stepsize=config.learning_rate)
    return CompactLBFGS(
        fun=fun,
        has_aux=True,
        history_size=config.history,
        stepsize=config.learning_rate if fixed else 0.0,
        linesearch="zoom" if fixed else linesearch,
        # Every search starts from the quasi-Newton step (1), not from the last step grown by
        # half (jaxopt's default): on these objectives that step is usually accepted at once.
        linesearch_init="max",
        max_stepsize=1.0 if fixed else config.learning_rate,
        maxiter=1,
        tol=0.0,
        first_step=config.first_step,
    )


def _adam(fun: Callable, learning_rate: float) -> tuple[Callable, Callable]:
    """optax's Adam as an (init, step) pair keeping the loss, gradient and aux in `AdamState`."""
    tx = optax.adam(learning_rate)
    value_and_grad = jax.value_and_grad(fun, has_aux=True)

    def init(x, *args):
        (value, aux), grad = value_and_grad(x, *args)
        return AdamState(tx.init(x), value, grad, aux, jnp.asarray(1, jnp.int32))

    def step(x, state, *args):
        updates, opt_state = tx.update(state.grad, state.opt_state, x)
        x = optax.apply_updates(x, updates)
        (value, aux), grad = value_and_grad(x, *args)
        return x, AdamState(opt_state, value, grad, aux, state.num_fun_eval + 1)

    return init, step


def optimizer(fun: Callable, config: OptimizerConfig) -> Optimizer:
    """`config`'s optimizer for ``fun(x, *args) -> (value, aux)`` (one image), keeping the
    moving average of the iterates and the best one in its `LoopState`.

    Raises:
      ValueError: an unknown ``config.name``.
    """
    if config.name == "lbfgs":
        solver = lbfgs_solver(fun, config)
        init_opt, opt_step = solver.init_state, solver.update
    elif config.name == "adam":
        init_opt, opt_step = _adam(fun, config.learning_rate)
    else:
        raise ValueError(f"optimizer: unknown {config.name!r}")

    def init(x, *args):
        opt = init_opt(x, *args)
        return LoopState(opt, x, x, opt.value)

    def step(x, state, *args):
        new_x, opt = opt_step(x, state.opt, *args)
        decay = config.ema_decay
        ema = decay * state.ema + (1.0 - decay) * new_x if decay else new_x
        better = opt.value < state.best_value
        best_x = jnp.where(better, new_x, state.best_x)
        return new_x, LoopState(opt, ema, best_x, jnp.where(better, opt.value, state.best_value))

    return Optimizer(init, step)


def _one_at_a_time(function: Callable) -> Callable:
    """`function` cached (`functools.lru_cache`) with one call at a time, so that threads asking
    for the same arguments at once get the same object back (it is a compile cache's key)."""
    cached = functools.lru_cache(maxsize=64)(function)
    lock = threading.Lock()

    @functools.wraps(function)
    def call(*args, **kwargs):
        with lock:
            return cached(*args, **kwargs)

    call.cache_clear, call.cache_info = cached.cache_clear, cached.cache_info
    return call


@_one_at_a_time
def chunk_functions(fun: Callable, static: Any, config: OptimizerConfig, chunk: int,
                    batch_axes: tuple | None = None) -> tuple[Callable, Callable]:
    """The jitted ``init(x, *args) -> LoopState`` and ``run_chunk(x, state, n, *args) ->
    ChunkResult`` (up to ``n <= chunk`` steps) of `config`'s optimizer for a `Loss`'s
    `fun`, `static` and `batch_axes`; cached, so that the same arguments give the same
    functions (and their compiled code in `jaxstyle.compiled.COMPILED` is found again).
    """

    def loss(x, *args):
        return fun(x, *args, static)

    init, step = optimizer(loss, config)
    if batch_axes is not None:
        init = jax.vmap(init, in_axes=(0, *batch_axes))
        step = jax.vmap(step, in_axes=(0, 0, *batch_axes))
    run_chunk = _chunk_runner(step, chunk, batch_axes is not None, config.grey_level)
    # The image and state going in are replaced by those coming out: donating them lets XLA
    # update in place instead of holding two copies of the L-BFGS history.
    return jax.jit(init), jax.jit(run_chunk, donate_argnums=(0, 1))


def _chunk_runner(step: Callable, chunk: int, batched: bool, grey_level: float) -> Callable:
    """``run_chunk(x, state, n, *args)``: up to `n` `step`s in a `lax.while_loop`, ending early
    at a step whose loss is NaN or infinite (that step is not taken)."""

    def record(history, i, value, change, aux):
        entries = {"total": value, CHANGE: change, **aux}
        return {k: history[k].at[i].set(entries[k]) for k in history}

    def run_chunk(x, state, n, *args):
        shape = (chunk, *jnp.shape(state.opt.value))  # (chunk,) or (chunk, batch)
        history = {"total": jnp.full(shape, jnp.nan), CHANGE: jnp.full(shape, jnp.nan)}
        history.update({k: jnp.full(shape, jnp.nan) for k in state.opt.aux})

        def cond(carry):
            i, _, _, _, diverged, _ = carry
            return (i < n) & ~diverged

        def body(carry):
            i, x, state, history, _, bad_aux = carry
            new_x, new_state = step(x, state, *args)
            ok = jnp.all(jnp.isfinite(new_state.opt.value))
            keep = functools.partial(jax.tree_util.tree_map, lambda a, b: jnp.where(ok, a, b))
            per_image = tuple(range(1, x.ndim)) if batched else None
            change = jnp.mean(jnp.abs(new_x - x), axis=per_image) / grey_level
            history = jax.lax.cond(
                ok, lambda h: record(h, i, new_state.opt.value, change, new_state.opt.aux),
                lambda h: h, history,
            )
            bad_aux = keep(bad_aux, new_state.opt.aux)
            return i + ok, keep(new_x, x), keep(new_state, state), history, ~ok, bad_aux

        carry = (jnp.asarray(0), x, state, history, jnp.asarray(False), state.opt.aux)
        i, x, state, history, diverged, bad_aux = jax.lax.while_loop(cond, body, carry)
        return ChunkResult(x, state, i, history, diverged, bad_aux)

    return run_chunk
