"""Driving the image with jaxopt's L-BFGS or optax's Adam, many steps per compiled call.

This is the only module that imports jaxopt (no longer developed) or optax, so replacing either
touches one file. The loop is "state in, new state out": `init` builds an `OptState`-like state,
`run_chunk` advances it by up to a chunk of iterations inside compiled code (a `lax.while_loop`),
and `minimize` strings chunks together, returning to Python only between chunks.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxopt
import numpy as np
import optax
from jaxopt._src.base import LineSearchStep  # not exported; `_Zoom.run` returns one

from jaxstyle.errors import OptimizationError, OutOfMemoryError

# torch.optim.LBFGS (and so neural-style) skips a curvature pair whose s.y is at most this.
_CURVATURE_EPS = 1e-10

STALL_WINDOW = 10
"""Iterations over which a `StopRule` measures progress; it is checked every this many
iterations of a run (whatever the chunk length), so where a run stops does not depend on how
often it reports."""

CHANGE = "change"
"""The history entry of the image's mean absolute change per iteration, in grey levels."""


class StopRule(NamedTuple):
    """When `minimize` ends a run before its iterations, checked every `STALL_WINDOW` iterations
    over the last `STALL_WINDOW` (0 turns a rule off; with both on, either stops).

    Attributes:
      loss: the loss fell by less than this fraction per iteration (a rising loss never stops).
      change: the picture changed by less than this many grey levels per iteration, on
        average over its pixels (for a batch: every image's did).
    """

    loss: float = 0.0
    change: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.loss or self.change)

    def met(self, history: dict[str, list]) -> bool:
        """Whether the run whose history (each entry a loss, or per-image losses for a batch)
        this is should stop now."""
        return bool(self.loss and stalled(history["total"], self.loss)
                    or self.change and settled(history[CHANGE], self.change))


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
      opt: the optimizer's own state (jaxopt's `LbfgsState` or `AdamState`), with the loss
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


class _Zoom(jaxopt.ZoomLineSearch):
    """jaxopt's zoom line search (strong Wolfe conditions, searching both ways) without the
    forward pass it adds to every search: jaxopt's L-BFGS does not hand it the loss components
    (aux) at the current image, so it recomputes them, only to return them should no step be
    taken. Here that case returns zeros for them instead (a failed search; the loss and image
    are unaffected), and a search that accepts L-BFGS's own step costs one evaluation. `run`
    compiles the loss once where jaxopt's compiles it four times."""

    def __post_init__(self):
        super().__post_init__()
        fun_with_aux = self._fun_with_aux

        def zeros_for_aux(params, *args, **kwargs):
            _, aux = jax.eval_shape(fun_with_aux, params, *args, **kwargs)
            return None, jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), aux)

        self._fun_with_aux = zeros_for_aux

    def init_state(self, init_stepsize, params, value=None, grad=None, *args, **kwargs):
        state = super().init_state(init_stepsize, params, value, grad, *args, **kwargs)
        if value is None or grad is None:  # it evaluated the loss itself, aux included
            return state
        # It counted the forward pass `zeros_for_aux` no longer makes.
        return state._replace(num_fun_eval=state.num_fun_eval - 1,
                              num_grad_eval=state.num_grad_eval - 1)

    def run(self, init_stepsize, params, value=None, grad=None, descent_direction=None,
            fun_args=(), fun_kwargs=None) -> LineSearchStep:
        """jaxopt's search, step for step, with the loss evaluated in one place.

        jaxopt evaluates it inside each branch of a conditional (bracketing the step, zooming
        in, the safe step after a failed search) and unrolls the first step out of its loop, and
        XLA compiles the network once for each of those places. Here one loop does one
        evaluation per turn: each branch is traced twice, first without the evaluation to learn
        the point it asks for, then on the loss evaluated once at that point. A failed search's
        safe step takes one more turn of the loop.
        """
        fun_kwargs = fun_kwargs or {}
        state = self.init_state(init_stepsize, params, value, grad, descent_direction,
                                fun_args, fun_kwargs)
        init_stepsize = jnp.asarray(init_stepsize).astype(state.prev_stepsize.dtype)
        on_line = jaxopt.tree_util.tree_add_scalar_mul

        def traced_with(name, stand_in, method, *args):
            # The branch `method` calls `name` (a method or an attribute) once: trace it on a
            # copy of this search with `stand_in` in its place.
            other = copy.copy(self)
            setattr(other, name, stand_in)
            return getattr(other, method)(*args)

        def point_asked(stepsize, state, safe):
            # Where this turn evaluates: the search's next trial or, after a failed search,
            # its safe step; the branches' other work is left to the second tracing.
            def probe(method, name):
                def run_branch(_):
                    asked = []

                    def record(*args):
                        if name == "_value_and_grad_fun_with_aux":  # (point, *fun_args)
                            asked.append(args[0])
                            return (state.value, state.aux), state.grad
                        params, step, direction = args[:3]
                        asked.append(on_line(params, step, direction))
                        return state.value, state.slope_init, state.params, state.grad, state.aux

                    traced_with(name, record, method, stepsize, state, fun_args, fun_kwargs)
                    return asked[0]
                return run_branch

            search, zoom = (probe(method, "_value_and_slope_on_line")
                            for method in ("_search_interval", "_zoom_into_interval"))
            return jax.lax.cond(
                safe, probe("_make_safe_step", "_value_and_grad_fun_with_aux"),
                lambda _: jax.lax.cond(state.interval_found, zoom, search, None), None)

        def keep_going(carry):
            _, state, safe, turns = carry
            return safe | (~(state.done | state.failed) & (turns < self.maxiter))

        def turn(carry):
            stepsize, state, safe, turns = carry
            point = point_asked(stepsize, state, safe)
            (value, aux), grad = self._value_and_grad_fun_with_aux(point, *fun_args,
                                                                   **fun_kwargs)

            def after_search(_):
                slope = jaxopt.tree_util.tree_vdot_real(jaxopt.tree_util.tree_conj(grad),
                                                        state.descent_direction)
                found = (value, slope, point, grad, aux)
                new_stepsize, new_state = jax.lax.cond(
                    state.interval_found,
                    *(lambda _, m=method: traced_with("_value_and_slope_on_line",
                                                      lambda *_: found, m, stepsize, state,
                                                      fun_args, fun_kwargs)
                      for method in ("_zoom_into_interval", "_search_interval")), None)
                return new_stepsize, new_state, new_state.failed

            def after_safe_step(_):
                new_stepsize, new_state = traced_with(
                    "_value_and_grad_fun_with_aux", lambda *_: ((value, aux), grad),
                    "_make_safe_step", stepsize, state, fun_args, fun_kwargs)
                return new_stepsize, new_state, jnp.asarray(False)

            new_stepsize, new_state, safe_next = jax.lax.cond(safe, after_safe_step,
                                                              after_search, None)
            new_state = new_state._replace(num_fun_eval=new_state.num_fun_eval + 1,
                                           num_grad_eval=new_state.num_grad_eval + 1)
            return new_stepsize, new_state, safe_next, turns + jnp.where(safe, 0, 1)

        carry = (init_stepsize, state, jnp.asarray(False), jnp.asarray(0))
        stepsize, state, _, _ = jax.lax.while_loop(keep_going, turn, carry)
        return LineSearchStep(stepsize=stepsize, state=state)


class _CompactState(NamedTuple):
    """jaxopt's `LbfgsState`, field for field, plus the inner products between history pairs
    from which `_compact_direction` builds the L-BFGS direction.

    With m the history size and (s_i, y_i) the pair in slot i of the circular history:

    Attributes:
      s_dot_y: [m, m], s_i . y_j wherever pair i is not newer than pair j, for every pair j
        but the newest (slot ``(iter_num - 1) % m``), whose column the next update adds; other
        entries are stale and never read.
      y_dot_y: [m, m], y_i . y_j, likewise but for the newest pair.
    """

    iter_num: jax.Array
    value: jax.Array
    grad: jax.Array
    stepsize: jax.Array
    error: jax.Array
    s_history: jax.Array
    y_history: jax.Array
    rho_history: jax.Array
    gamma: jax.Array
    aux: Any
    failed_linesearch: jax.Array
    num_fun_eval: jax.Array
    num_grad_eval: jax.Array
    num_linesearch_iter: jax.Array
    s_dot_y: jax.Array
    y_dot_y: jax.Array


_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32 on GPUs, as in jaxopt's own inner products


def _dots(history: jax.Array, vectors: jax.Array) -> jax.Array:
    """[m, *shape] history against [k, *shape] vectors -> [m, k], reading the history once."""
    axes = tuple(range(1, history.ndim))
    return jnp.tensordot(history, vectors, axes=(axes, axes), precision=_HIGHEST)


def _combine(coefficients: jax.Array, history: jax.Array) -> jax.Array:
    """sum_i coefficients[i] * history[i]: [m] and [m, *shape] -> [*shape]."""
    return jnp.tensordot(coefficients, history, axes=1, precision=_HIGHEST)


def _compact_direction(state: _CompactState) -> tuple[jax.Array, jax.Array, jax.Array]:
    """L-BFGS's direction -H grad from the compact representation (Byrd, Nocedal & Schnabel
    1994): the two-loop recursion's vector (Nocedal & Wright, Algorithm 7.4, as jaxopt
    computes it) up to rounding, with four passes over the history instead of a loop over its
    slots, empty ones included.

    One pass over each history gives S grad, Y grad and the newest pair's column of S Y^T and
    Y Y^T, from the vectors as stored (the update's own y, recomputed by XLA in another fusion,
    can differ from the stored one in its last bits, and y is a difference of nearly equal
    gradients). The two-loop's scalars then solve two m x m triangular systems of these inner
    products: with the pairs oldest first and U the strictly upper triangle of [s_i . y_j], the
    first loop's alphas solve (I + diag(rho) U) alpha = rho * (S grad), and the second loop's
    alpha - beta =: delta solve (I + U diag(rho))^T delta = alpha - gamma * rho *
    (Y grad - Y Y^T alpha). Then H grad = gamma * (grad - Y^T alpha) + S^T delta, two more
    passes. Both systems are unit triangular, scaled by rho as the two-loop multiplies by rho:
    substitution is the two-loop's own scalar recurrence, so the systems are exactly as well
    conditioned as the two-loop itself, nothing is inverted and no pivot is ever 0. What
    differs in float32 is the rounding of the inner products: on CPUs XLA's matrix products
    add up an image's worth of terms less accurately than the tree-reduced vector dot
    products of the two-loop, so the direction strays further from the exact one (relative
    errors of 3e-7 to 1.4e-6 against 1e-7 on VGG16 runs' histories, 2e-5 against 2e-7 on a
    chained Rosenbrock function's; benchmarks/lbfgs_direction.py), still well inside how far
    rounding alone carries unit-step iterates (benchmarks/lbfgs_trajectory.py).
    A pair with rho = 0 (an empty slot, or one the skip rule dropped) gets a unit row and
    column and a zero right-hand side, so its alpha and delta are 0 and it contributes
    nothing, exactly as in the two-loop.

    Args:
      state: the solver state (one image; `jax.vmap` it for a batch).

    Returns:
      The direction, of `state.grad`'s shape, and the state's `s_dot_y` and `y_dot_y` with the
      newest pair's column added.
    """
    m = state.rho_history.shape[0]
    newest = (state.iter_num - 1) % m
    vectors = jnp.stack([state.y_history[newest], state.grad])
    with_s, with_y = _dots(state.s_history, vectors), _dots(state.y_history, vectors)
    s_dot_y = state.s_dot_y.at[:, newest].set(with_s[:, 0])
    y_dot_y = state.y_dot_y.at[:, newest].set(with_y[:, 0]).at[newest].set(with_y[:, 0])

    order = (state.iter_num + jnp.arange(m)) % m  # slots, oldest pair first
    rho = state.rho_history[order]
    kept = rho != 0
    both = kept[:, None] & kept[None, :]
    upper = jnp.where(both, jnp.triu(s_dot_y[order][:, order], 1), 0.0)
    solve = functools.partial(jax.scipy.linalg.solve_triangular, lower=False,
                              unit_diagonal=True)
    alpha = solve(rho[:, None] * upper, jnp.where(kept, rho * with_s[order, 1], 0.0))
    y_residual = with_y[order, 1] - jnp.dot(jnp.where(both, y_dot_y[order][:, order], 0.0),
                                            alpha, precision=_HIGHEST)
    delta = solve(upper * rho[None, :],
                  jnp.where(kept, alpha - state.gamma * rho * y_residual, 0.0), trans="T")
    in_slots = jnp.zeros_like(alpha)
    alpha, delta = in_slots.at[order].set(alpha), in_slots.at[order].set(delta)
    h_grad = (state.gamma * (state.grad - _combine(alpha, state.y_history))
              + _combine(delta, state.s_history))
    return -h_grad, s_dot_y, y_dot_y


class _CompactLBFGS(jaxopt.LBFGS):
    """jaxopt's L-BFGS with `_compact_direction` in place of its two-loop recursion, which
    visits every history slot in turn (empty ones included) and cost a quarter of an
    iteration at history 100. Everything else is as jaxopt does it: the line search or fixed
    step, the circular history, rho, gamma (Nocedal & Wright's (7.20)) and the state's fields,
    to which `_CompactState` adds the inner products, one new column per iteration. Only what
    `_lbfgs` configures: one real array of parameters, a fixed float step or
    ``linesearch_init="max"``.
    """

    def __post_init__(self):
        super().__post_init__()
        if self.history_size < 1 or callable(self.stepsize) or (
                self.stepsize <= 0 and self.linesearch_init != "max"):
            raise ValueError("_CompactLBFGS: history_size >= 1 and a float stepsize or "
                             "linesearch_init='max' only")

    def init_state(self, init_params: jax.Array, *args, **kwargs) -> _CompactState:
        state = super().init_state(init_params, *args, **kwargs)
        square = jnp.zeros((self.history_size,) * 2, state.rho_history.dtype)
        return _CompactState(**state._asdict(), s_dot_y=square, y_dot_y=square)

    def update(self, params: jax.Array, state: _CompactState, *args,
               **kwargs) -> jaxopt.OptStep:
        direction, s_dot_y, y_dot_y = _compact_direction(state)
        if self.stepsize > 0:
            stepsize = self.stepsize
            new_params = params + stepsize * direction
            (value, aux), grad = self._value_and_grad_with_aux(new_params, *args, **kwargs)
            failed, evaluations, gradients, searches = jnp.asarray(False), 1, 1, 0
        else:
            stepsize, search = self.run_ls(
                self.max_stepsize, params, value=state.value, grad=state.grad,
                descent_direction=direction, fun_args=args, fun_kwargs=kwargs)
            new_params, value, grad, aux = search.params, search.value, search.grad, search.aux
            failed, searches = search.failed, search.iter_num
            evaluations, gradients = search.num_fun_eval, search.num_grad_eval
        s, y = new_params - params, grad - state.grad
        s_dot_y_new = jnp.vdot(s, y, precision=_HIGHEST)
        y_dot_y_new = jnp.vdot(y, y, precision=_HIGHEST)
        slot = state.iter_num % self.history_size
        dtype = state.rho_history.dtype
        return jaxopt.OptStep(new_params, _CompactState(
            iter_num=state.iter_num + 1,
            value=value,
            grad=grad,
            stepsize=jnp.asarray(stepsize, dtype),
            error=jnp.sqrt(jnp.sum(jnp.square(grad))).astype(dtype),
            s_history=state.s_history.at[slot].set(s),
            y_history=state.y_history.at[slot].set(y),
            rho_history=state.rho_history.at[slot].set(
                jnp.where(s_dot_y_new == 0, 0.0, 1.0 / s_dot_y_new)),
            gamma=jnp.where(y_dot_y_new > 0, s_dot_y_new / y_dot_y_new, 1.0).astype(dtype),
            aux=aux,
            failed_linesearch=failed,
            num_fun_eval=state.num_fun_eval + evaluations,
            num_grad_eval=state.num_grad_eval + gradients,
            num_linesearch_iter=state.num_linesearch_iter + searches,
            s_dot_y=s_dot_y,
            y_dot_y=y_dot_y,
        ))


def _lbfgs(fun: Callable, config: OptimizerConfig) -> jaxopt.LBFGS:
    fixed = config.linesearch == "none"
    linesearch = config.linesearch
    if linesearch == "zoom":
        linesearch = _Zoom(fun=fun, has_aux=True, maxiter=30, max_stepsize=config.learning_rate)
    return _CompactLBFGS(
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
    )


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
def _compiled(loss_fn: Callable, loss_static: Any, config: OptimizerConfig, chunk: int,
              batch_axes: tuple | None = None):
    """Builds (and caches) the jitted init and chunk functions for one objective and optimizer.

    With `batch_axes` (one `jax.vmap` in_axes entry per argument after x), x and the state get a
    leading batch axis and every image is optimized independently, exactly as on its own.
    """

    def fun(x, *args):
        return loss_fn(x, *args, loss_static)

    value_and_grad = jax.value_and_grad(fun, has_aux=True)

    if config.name == "lbfgs":
        solver = _lbfgs(fun, config)

        def init_opt(x, *args):
            state = solver.init_state(x, *args)
            if config.linesearch == "none":
                # torch.optim.LBFGS's first step is min(1, 1/|g|_1) * lr along -g; with an empty
                # history jaxopt steps along -gamma * g, so seeding gamma reproduces it exactly.
                state = state._replace(gamma=jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(state.grad))))
            elif config.first_step:
                steepest = jnp.maximum(jnp.max(jnp.abs(state.grad)), 1e-30)
                state = state._replace(gamma=config.first_step / steepest)
            return state

        def opt_step(x, state, *args):
            new_x, new_state = solver.update(x, state, *args)
            # Like torch, ignore a curvature pair with s.y <= eps (jaxopt would keep it and may
            # then step uphill on this non-convex objective): zero its rho and keep the last
            # accepted pair's scale, or torch's initial scale 1 when the first pair is skipped
            # (the seeded 1/|g|_1 belongs to the first step only).
            sy = jnp.vdot(new_x - x, new_state.grad - state.grad)
            skip = sy <= _CURVATURE_EPS
            slot = state.iter_num % config.history
            first = jnp.ones_like(state.gamma) if not config.first_step else state.gamma
            kept_gamma = jnp.where(state.iter_num == 0, first, state.gamma)
            new_state = new_state._replace(
                rho_history=jnp.where(
                    skip, new_state.rho_history.at[slot].set(0.0), new_state.rho_history
                ),
                gamma=jnp.where(skip, kept_gamma, new_state.gamma),
            )
            return new_x, new_state

    elif config.name == "adam":
        tx = optax.adam(config.learning_rate)

        def init_opt(x, *args):
            (value, aux), grad = value_and_grad(x, *args)
            return AdamState(tx.init(x), value, grad, aux, jnp.asarray(1, jnp.int32))

        def opt_step(x, state, *args):
            updates, opt_state = tx.update(state.grad, state.opt_state, x)
            x = optax.apply_updates(x, updates)
            (value, aux), grad = value_and_grad(x, *args)
            return x, AdamState(opt_state, value, grad, aux, state.num_fun_eval + 1)

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

    if batch_axes is not None:
        init = jax.vmap(init, in_axes=(0, *batch_axes))
        step = jax.vmap(step, in_axes=(0, 0, *batch_axes))

    def run_chunk(x, state, n, *args):
        def record(history, i, value, change, aux):
            entries = {"total": value, CHANGE: change, **aux}
            return {k: history[k].at[i].set(entries[k]) for k in history}

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
            per_image = None if batch_axes is None else tuple(range(1, x.ndim))
            change = jnp.mean(jnp.abs(new_x - x), axis=per_image) / config.grey_level
            history = jax.lax.cond(
                ok, lambda h: record(h, i, new_state.opt.value, change, new_state.opt.aux),
                lambda h: h, history,
            )
            bad_aux = keep(bad_aux, new_state.opt.aux)
            return i + ok, keep(new_x, x), keep(new_state, state), history, ~ok, bad_aux

        carry = (jnp.asarray(0), x, state, history, jnp.asarray(False), state.opt.aux)
        i, x, state, history, diverged, bad_aux = jax.lax.while_loop(cond, body, carry)
        return ChunkResult(x, state, i, history, diverged, bad_aux)

    # The image and state going in are replaced by those coming out: donating them lets XLA
    # update in place instead of holding two copies of the L-BFGS history.
    return jax.jit(init), jax.jit(run_chunk, donate_argnums=(0, 1))


class MemoryEstimate(NamedTuple):
    """Peak bytes a run needs, from XLA's memory analysis of its compiled chunk.

    Attributes:
      total: arguments (image, optimizer state, network, targets) + outputs + XLA temporaries.
      state: the optimizer state's share (the L-BFGS history: 2 x history x image size).
      temporaries: XLA's working memory (activations kept for the backward pass, ...).
    """

    total: int
    state: int
    temporaries: int


def estimate_memory(
    loss_fn: Callable, loss_static: Any, x0: jax.Array, args: tuple, config: OptimizerConfig,
    chunk: int, batch_axes: tuple | None = None, cache: CompileCache | None = None,
) -> MemoryEstimate:
    """Estimates a run's peak memory without allocating it (the compiled chunk is kept in
    `cache`, default `COMPILED`, and reused by `minimize`)."""
    cache = cache or COMPILED
    init, run_chunk = _compiled(loss_fn, loss_static, config, chunk, batch_axes)
    compiled_init = cache.compile(init, x0, *args)
    # The state as init will lay it out (shape, dtype and sharding), without computing it.
    state = jax.tree_util.tree_map(
        lambda aval, sharding: jax.ShapeDtypeStruct(aval.shape, aval.dtype, sharding=sharding),
        jax.eval_shape(init, x0, *args), compiled_init.output_shardings,
    )
    compiled = cache.compile(run_chunk, x0, state, jnp.asarray(chunk), *args)
    analysis = compiled.memory_analysis()
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(state))
    total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
    return MemoryEstimate(int(total), int(state_bytes), int(analysis.temp_size_in_bytes))


def check_memory(loss_fn: Callable, loss_static: Any, x0: jax.Array, args: tuple,
                 config: OptimizerConfig, chunk: int, memory_limit: int | None = None,
                 batch_axes: tuple | None = None, cache: CompileCache | None = None,
                 compile: bool = True) -> None:
    """Refuses a run that would not fit, before anything is allocated: `estimate_memory`
    against `memory_limit` bytes (None: what the device has free; 0: no check). `x0` and `args`
    may be `jax.ShapeDtypeStruct`s, so a run can be checked before its targets are computed.
    `compile` False checks only what needs no compilation (the optimizer state's size).

    Raises:
      OutOfMemoryError: the estimate and its parts, and what to change.
    """
    if memory_limit == 0:
        return
    limit = memory_limit or available_memory()
    if not limit:
        return
    advice = ("use a smaller --size, --scales to finish large sizes with fewer iterations, a "
              "shorter --lbfgs-history, or --optimizer adam (no history)")
    # The optimizer state's size needs no compilation: a run whose state alone does not fit
    # is refused at once.
    init, _ = _compiled(loss_fn, loss_static, config, chunk, batch_axes)
    state = sum(leaf.size * leaf.dtype.itemsize
                for leaf in jax.tree_util.tree_leaves(jax.eval_shape(init, x0, *args)))
    if state > limit:
        raise OutOfMemoryError(f"this run needs more than {_size(state)} (its optimizer state "
                               f"alone) but {_size(limit)} is available: {advice}")
    if not compile:
        return
    need = estimate_memory(loss_fn, loss_static, x0, args, config, chunk, batch_axes, cache)
    if need.total > limit:
        rest = need.total - need.state - need.temporaries
        raise OutOfMemoryError(
            f"this run needs about {_size(need.total)} (optimizer state {_size(need.state)}, "
            f"network activations {_size(need.temporaries)}, network, targets and image "
            f"{_size(rest)}) but {_size(limit)} is available: {advice}")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def available_memory() -> int | None:
    """Bytes free for a run on the default device: the GPU/TPU's free memory, or the host's
    MemAvailable on CPU; None when unknown."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def state_like(
    loss_fn: Callable, loss_static: Any, x0: jax.Array, args: tuple, config: OptimizerConfig,
    chunk: int,
):
    """The structure, shapes and dtypes of the optimizer state `minimize` would start from."""
    init, _ = _compiled(loss_fn, loss_static, config, chunk)
    return jax.eval_shape(init, x0, *args)


def num_evaluations(state) -> int:
    """Loss-and-gradient evaluations so far, counted by the optimizer (from a `LoopState`; for a
    batch, per image)."""
    return int(jnp.max(state.opt.num_fun_eval))


@dataclass
class Progress:
    """Reported to `minimize`'s callback after each chunk.

    Attributes:
      iteration: iterations done so far.
      total_iterations: iterations asked for.
      x: the current image in model space, float32 [H, W, 3].
      state: the optimizer state (the whole run can continue from ``x`` and ``state``).
      value: the current total loss.
      components: the current loss components.
      evaluations: loss-and-gradient evaluations so far.
      elapsed: seconds since `minimize` started, compilation included.
      history: the loss after each iteration so far, by component.
    """

    iteration: int
    total_iterations: int
    x: jax.Array
    state: Any
    value: float
    components: dict[str, float]
    evaluations: int
    elapsed: float
    history: dict[str, list[float]]


class MinimizeResult(NamedTuple):
    x: jax.Array
    state: Any
    history: dict[str, list[float]]
    evaluations: int
    compile_seconds: float
    run_seconds: float


def minimize(
    loss_fn: Callable,
    loss_static: Any,
    x0: jax.Array,
    args: tuple,
    config: OptimizerConfig,
    iterations: int,
    *,
    chunk: int = 10,
    stops: Callable[[int], bool] | None = None,
    callback: Callable[[Progress], None] | None = None,
    state: Any = None,
    start_iteration: int = 0,
    history: dict[str, list[float]] | None = None,
    batch_axes: tuple | None = None,
    memory_limit: int | None = None,
    chunk_args: Callable[[int], tuple] | None = None,
    cache: CompileCache | None = None,
    stop: StopRule = StopRule(),
    recent: dict[str, list] | None = None,
) -> MinimizeResult:
    """Minimizes ``loss_fn(x, *args, loss_static) -> (value, aux)`` over the image `x`.

    Args:
      loss_fn: a module-level function (it is a cache key), e.g. `jaxstyle.losses.objective`.
      loss_static: its last, hashable static argument, e.g. a `LossConfig`.
      x0: the starting image, float32 [H, W, 3] in model space.
      args: the array arguments after `x` (parameters, targets).
      config: the optimizer.
      iterations: total iterations to reach (counting `start_iteration`).
      chunk: most iterations per compiled call; each chunk ends with a `callback` call.
      stops: extra iterations at which a chunk must end (e.g. where images are saved).
      callback: called with a `Progress` after every chunk.
      state: an optimizer state to continue from (with `x0` the image it belongs to).
      start_iteration: iterations already done when continuing.
      history: the loss history of those iterations, continued in the result.
      batch_axes: optimize a batch: x has a leading axis and `args[i]` is mapped over its axis
        ``batch_axes[i]`` (None: shared). History entries are then per-image lists; `Progress`
        reports sums over the batch.
      memory_limit: refuse to start when the estimated peak exceeds this many bytes (default:
        the memory free on the device); 0 disables the check.
      chunk_args: ``iteration -> args`` for the chunk starting at that iteration, arrays of the
        same shapes as `args` (a style loss that redraws random directions between chunks); the
        objective is fixed within a chunk. Default: `args` throughout.
      cache: where compiled executables are kept and reused (default `COMPILED`).
      stop: end the run early once its `StopRule` is met (checked every `STALL_WINDOW`
        iterations, counting from 0, over the history including `recent`).
      recent: the history of the iterations just before `start_iteration` when continuing,
        which the stop rule's window may reach back into (so that a resumed run stops where the
        uninterrupted one would).

    Returns:
      The final image and state, the loss history by component, evaluations and timings.

    Raises:
      OptimizationError: a loss became NaN or infinite; the message names the loss.
      OutOfMemoryError: the run would not fit in memory (checked before anything is allocated).
    """
    cache = cache or COMPILED
    start = time.perf_counter()  # the memory estimate compiles the run: count it as compilation
    check_memory(loss_fn, loss_static, x0, args, config, chunk, memory_limit, batch_axes, cache)
    init, run_chunk = _compiled(loss_fn, loss_static, config, chunk, batch_axes)
    # The chunks donate their image and state buffers; copies keep the caller's arrays alive.
    x0 = jnp.array(x0, copy=True)
    if state is None:
        state = cache.compile(init, x0, *args)(x0, *args)
    else:
        state = jax.tree_util.tree_map(lambda leaf: jnp.array(leaf, copy=True), state)
    compiled_chunk = cache.compile(run_chunk, x0, state, jnp.asarray(chunk), *args)
    compile_seconds = cache.seconds_since(start)
    x = x0
    history = {k: list(v) for k, v in (history or {}).items()}
    for key in ("total", CHANGE, *state.opt.aux):
        history.setdefault(key, [])

    def progress() -> Progress:
        return Progress(
            iteration=done,
            total_iterations=iterations,
            x=x,
            state=state,
            value=float(jnp.sum(state.opt.value)),
            components={k: float(jnp.sum(v)) for k, v in state.opt.aux.items()},
            evaluations=num_evaluations(state),
            elapsed=time.perf_counter() - start,
            history=history,
        )
    done = start_iteration
    while done < iterations:
        n = min(chunk, iterations - done)
        n = next((k for k in range(1, n + 1) if stop and (done + k) % STALL_WINDOW == 0
                  or stops is not None and stops(done + k)), n)
        result = compiled_chunk(x, state, jnp.asarray(n),
                                *(args if chunk_args is None else chunk_args(done)))
        _wait_in_python(result.steps)
        steps = int(result.steps)
        x, state = result.x, result.state
        for key, values in result.history.items():
            history[key].extend(np.asarray(values[:steps]).tolist())
        done += steps
        if bool(result.diverged):
            bad = sorted(k for k, v in result.bad_aux.items() if not jnp.all(jnp.isfinite(v)))
            raise OptimizationError(
                f"the loss became NaN or infinite at iteration {done + 1} "
                f"(bad: {', '.join(bad) or 'total'}); the last good image is from iteration {done}",
                last_good=progress(),
            )
        if callback is not None:
            callback(progress())
        if stop and done % STALL_WINDOW == 0 and stop.met(
                {k: [*(recent or {}).get(k, ()), *history[k]] for k in ("total", CHANGE)}):
            break
    total = time.perf_counter() - start
    return MinimizeResult(x, state, history, num_evaluations(state), compile_seconds,
                          total - compile_seconds)


def _wait_in_python(value: jax.Array) -> None:
    """Waits for a dispatched computation by polling, not by blocking inside XLA: Python runs
    signal handlers only between its own instructions, so a Ctrl-C during a long chunk is
    heard at once (and a second one can end the process) instead of when the chunk ends."""
    pause = 0.001
    while not value.is_ready():
        time.sleep(pause)
        pause = min(2 * pause, 0.02)


def settled(changes: list, tolerance: float, window: int = STALL_WINDOW) -> bool:
    """Whether the picture changed by less than `tolerance` per iteration on average over the
    last `window` iterations (`changes`: per iteration, a number or one per image of a batch,
    the largest of which counts)."""
    if len(changes) < window:
        return False
    return float(np.mean([np.max(c) for c in changes[-window:]])) < tolerance


def stalled(totals: list, tolerance: float, window: int = STALL_WINDOW) -> bool:
    """Whether the loss (per iteration; a batch's entries are summed) fell by at least 0 and
    by less than `tolerance` per iteration, relative to its last value, over the last `window`
    iterations."""
    if len(totals) <= window:
        return False
    before, now = float(np.sum(totals[-window - 1])), float(np.sum(totals[-1]))
    return 0.0 <= (before - now) / (window * max(abs(now), 1e-30)) < tolerance  # a 0 loss: done


class CompileCache:
    """Compiled executables kept for reuse in this process, and how long compiling took.

    A long-lived process that sees many shapes keeps the `size` most recently used (two per
    shape a run uses); `minimize` and `estimate_memory` use `COMPILED` unless given another.
    ``COMPILED.clear()`` frees them all. Threads may share it: an executable one thread is
    compiling is waited for, not compiled twice, by another that asks for it (the driver
    compiles a run's next scale in the background while the current one runs).
    """

    def __init__(self, size: int = 16):
        self.size = size
        self.executables: collections.OrderedDict = collections.OrderedDict()
        # (finished at, seconds, thread id): compiling, or waiting for another thread's.
        self.log: list[tuple[float, float, int]] = []
        self._pending: dict = {}
        self._lock = threading.Lock()

    def compile(self, jitted: Callable, *args):
        """`jitted` compiled ahead of time for these arguments' shapes and dtypes."""
        leaves, treedef = jax.tree_util.tree_flatten(args)
        key = (jitted, treedef, tuple((jnp.shape(a), jnp.result_type(a)) for a in leaves))
        with self._lock:
            if key in self.executables:
                self.executables.move_to_end(key)
                return self.executables[key]
            pending = self._pending.get(key)
            mine = pending is None
            if mine:
                pending = self._pending[key] = concurrent.futures.Future()
        t0 = time.perf_counter()
        if not mine:
            try:
                return pending.result()  # raises what compiling it raised
            finally:
                self._logged(t0)
        try:
            executable = jitted.lower(*args).compile()
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            self.executables[key] = executable
            del self._pending[key]
            while len(self.executables) > self.size:
                self.executables.popitem(last=False)
        self._logged(t0)
        pending.set_result(executable)
        return executable

    def _logged(self, t0: float) -> None:
        now = time.perf_counter()
        with self._lock:
            self.log.append((now, now - t0, threading.get_ident()))
            del self.log[:-1000]

    def seconds_since(self, start: float) -> float:
        """Seconds this thread spent compiling, or waiting for another thread's compilation,
        since `start` (a `time.perf_counter` reading)."""
        me = threading.get_ident()
        with self._lock:
            return sum(seconds for finished, seconds, thread in self.log
                       if finished >= start and thread == me)

    def clear(self) -> None:
        """Drops every executable and traced function kept."""
        with self._lock:
            self.executables.clear()
            self.log.clear()
        _compiled.cache_clear()


COMPILED = CompileCache()
"""The process's `CompileCache`."""
