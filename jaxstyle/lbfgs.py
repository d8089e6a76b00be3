"""L-BFGS whose direction comes from the compact representation: a jaxopt solver, state in,
state out.

`CompactLBFGS` is `jaxopt.LBFGS` with two changes: its direction is `compact_direction` (four
passes over the history where jaxopt's two-loop recursion visits every slot in turn), and its
curvature pairs follow torch.optim.LBFGS, as neural-style's runs do (a pair with s.y at most
`CURVATURE_EPS` is skipped; a fixed step starts at torch's first step). Its `init_state` and
`update` are pure functions of the image and the state, usable inside `jax.jit`::

    solver = CompactLBFGS(fun=loss, has_aux=True, history_size=10, stepsize=1.0)
    state = solver.init_state(x, *args)

    @jax.jit
    def step(x, state, *args):
        return solver.update(x, state, *args)  # (x, state)

    for _ in range(100):
        x, state = step(x, state, *args)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxopt

CURVATURE_EPS = 1e-10
"""torch.optim.LBFGS (and so neural-style) skips a curvature pair whose s.y is at most this."""


class LBFGSState(NamedTuple):
    """jaxopt's `LbfgsState`, field for field, plus the inner products between history pairs
    from which `compact_direction` builds the L-BFGS direction.

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


def compact_direction(state: LBFGSState) -> tuple[jax.Array, jax.Array, jax.Array]:
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



def first_gamma(grad: jax.Array, stepsize: float, first_step: float) -> jax.Array | None:
    """The ``gamma`` that makes an L-BFGS's first step, along ``-gamma * grad`` with an empty
    history, torch's: ``min(1, 1 / |grad|_1)`` for a fixed `stepsize`, `first_step` over the
    steepest component with a line search that is given one; None keeps jaxopt's."""
    if stepsize > 0:
        return jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(grad)))
    if first_step:
        return first_step / jnp.maximum(jnp.max(jnp.abs(grad)), 1e-30)
    return None


@dataclasses.dataclass(eq=False)
class CompactLBFGS(jaxopt.LBFGS):
    """jaxopt's L-BFGS with `compact_direction` in place of its two-loop recursion (which visits
    every history slot in turn, empty ones included, and cost a quarter of an iteration at
    history 100), and with torch.optim.LBFGS's curvature pairs. Everything else is as jaxopt
    does it: the line search or fixed step, the circular history, rho, gamma (Nocedal &
    Wright's (7.20)) and the state's fields, to which `LBFGSState` adds the inner products, one
    new column per iteration.

    It takes `jaxopt.LBFGS`'s arguments, of which it supports one real array of parameters, a
    fixed step or a line search that starts from `max_stepsize`:

    Attributes:
      fun: the loss, ``fun(x, *args) -> value``, or ``-> (value, aux)`` with ``has_aux``.
      history_size: m >= 1, the curvature pairs kept.
      stepsize: > 0: fixed steps of this size along the direction (neural-style's unit step is
        1); 0: a line search along it.
      linesearch: with stepsize 0, a jaxopt line search, by name or as an instance (e.g.
        `jaxstyle.linesearch.ZoomLineSearch`).
      linesearch_init: with stepsize 0, "max" only: every search first tries `max_stepsize`.
      max_stepsize: with a line search, the step each search tries first (1: the quasi-Newton
        step, usually accepted at once).
      first_step: with a line search, the largest change of any variable that the first step
        tries; 0: jaxopt's first step, along -g unscaled. A loss whose values are O(1) has a
        gradient far too small for that.
    """

    first_step: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.history_size < 1:
            raise ValueError(f"history_size: must be >= 1 (got {self.history_size})")
        if callable(self.stepsize) or self.stepsize <= 0 and self.linesearch_init != "max":
            raise ValueError(f"stepsize: a float > 0, or 0 with linesearch_init='max' (got "
                             f"{self.stepsize!r} with linesearch_init={self.linesearch_init!r})")

    def init_state(self, init_params: jax.Array, *args, **kwargs) -> LBFGSState:
        """The state at `init_params`: the loss, its gradient and aux (one evaluation), an
        empty history, and the scale gamma of the first step, -gamma * grad.

        With a fixed step, the first is torch.optim.LBFGS's: min(1, 1/|g|_1) * stepsize along
        -g; with a line search and `first_step`, one whose largest change is `first_step`.

        Args:
          init_params: the starting point, e.g. an image, float32 [H, W, 3].
          *args: the loss's arguments after the parameters.
          **kwargs: its keyword arguments.
        """
        state = super().init_state(init_params, *args, **kwargs)
        square = jnp.zeros((self.history_size,) * 2, state.rho_history.dtype)
        state = LBFGSState(**state._asdict(), s_dot_y=square, y_dot_y=square)
        gamma = first_gamma(state.grad, self.stepsize, self.first_step)
        return state if gamma is None else state._replace(gamma=gamma)

    def update(self, params: jax.Array, state: LBFGSState, *args,
               **kwargs) -> jaxopt.OptStep:
        """One iteration: the direction, a step along it, and the new curvature pair.

        Like torch, a pair with s.y <= `CURVATURE_EPS` is not used (jaxopt would keep it and
        may then step uphill on a non-convex objective): its rho is 0 and the scale gamma stays
        the last accepted pair's, or torch's initial 1 when the first pair is skipped (the
        seeded 1/|g|_1 belongs to the first step only; a `first_step` seed stays).

        Args:
          params: the current point, of `init_state`'s shape.
          state: the state at `params`.
          *args: the loss's arguments after the parameters.
          **kwargs: its keyword arguments.

        Returns:
          ``(params, state)`` after the step, as a `jaxopt.OptStep`.
        """
        direction, s_dot_y, y_dot_y = compact_direction(state)
        new_params, stepsize, value, grad, aux, counts = self._step(params, state, direction,
                                                                    args, kwargs)
        failed, evaluations, gradients, searches = counts
        s, y = new_params - params, grad - state.grad
        s_dot_y_new = jnp.vdot(s, y, precision=_HIGHEST)
        y_dot_y_new = jnp.vdot(y, y, precision=_HIGHEST)
        skip = s_dot_y_new <= CURVATURE_EPS
        first = state.gamma if self.first_step else jnp.ones_like(state.gamma)
        kept_gamma = jnp.where(state.iter_num == 0, first, state.gamma)
        slot = state.iter_num % self.history_size
        dtype = state.rho_history.dtype
        rho = jnp.where(s_dot_y_new == 0, 0.0, 1.0 / s_dot_y_new)
        gamma = jnp.where(y_dot_y_new > 0, s_dot_y_new / y_dot_y_new, 1.0).astype(dtype)
        return jaxopt.OptStep(new_params, LBFGSState(
            iter_num=state.iter_num + 1,
            value=value,
            grad=grad,
            stepsize=jnp.asarray(stepsize, dtype),
            error=jnp.sqrt(jnp.sum(jnp.square(grad))).astype(dtype),
            s_history=state.s_history.at[slot].set(s),
            y_history=state.y_history.at[slot].set(y),
            rho_history=state.rho_history.at[slot].set(jnp.where(skip, 0.0, rho)),
            gamma=jnp.where(skip, kept_gamma, gamma),
            aux=aux,
            failed_linesearch=failed,
            num_fun_eval=state.num_fun_eval + evaluations,
            num_grad_eval=state.num_grad_eval + gradients,
            num_linesearch_iter=state.num_linesearch_iter + searches,
            s_dot_y=s_dot_y,
            y_dot_y=y_dot_y,
        ))

    def _step(self, params: jax.Array, state: LBFGSState, direction: jax.Array, args: tuple,
              kwargs: dict) -> tuple:
        """A step along `direction`, fixed or the line search's: the new point, the step, the
        loss, gradient and aux there, and (failed search, evaluations, gradients, search
        iterations)."""
        if self.stepsize > 0:
            new_params = params + self.stepsize * direction
            (value, aux), grad = self._value_and_grad_with_aux(new_params, *args, **kwargs)
            return new_params, self.stepsize, value, grad, aux, (jnp.asarray(False), 1, 1, 0)
        stepsize, search = self.run_ls(
            self.max_stepsize, params, value=state.value, grad=state.grad,
            descent_direction=direction, fun_args=args, fun_kwargs=kwargs)
        return (search.params, stepsize, search.value, search.grad, search.aux,
                (search.failed, search.num_fun_eval, search.num_grad_eval, search.iter_num))
