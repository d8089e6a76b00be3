"""jaxopt's zoom line search with the loss compiled once and no extra forward pass.

`ZoomLineSearch` is jaxopt's `jaxopt.ZoomLineSearch` (strong Wolfe conditions, searching both
ways), step for step; it works by re-tracing that class's own branches, so it depends on their
names (private to jaxopt, which is no longer developed: this module pins their use to one place).
`jaxstyle.lbfgs.CompactLBFGS` takes it as its ``linesearch``.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxopt


class SearchStep(NamedTuple):
    """What a line search's `run` returns, as jaxopt's searches return it.

    Attributes:
      stepsize: [] the step accepted along the descent direction.
      state: the search's final state (jaxopt's `ZoomLineSearchState`): the accepted point
        ``params`` with its ``value``, ``grad`` and ``aux``, ``failed``, and the evaluations.
    """

    stepsize: jax.Array
    state: Any


class ZoomLineSearch(jaxopt.ZoomLineSearch):
    """jaxopt's zoom line search without the forward pass it adds to every search.

    jaxopt's L-BFGS does not hand the search the loss components (aux) at the current image, so
    jaxopt's search recomputes them, only to return them should no step be taken. Here that case
    returns zeros for them instead (a failed search; the loss and image are unaffected), and a
    search that accepts L-BFGS's own step costs one evaluation. `run` compiles the loss once
    where jaxopt's compiles it four times. Arguments as for `jaxopt.ZoomLineSearch`.
    """

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
            fun_args=(), fun_kwargs=None) -> SearchStep:
        """jaxopt's search, step for step, with the loss evaluated in one place.

        jaxopt evaluates it inside each branch of a conditional (bracketing the step, zooming
        in, the safe step after a failed search) and unrolls the first step out of its loop, and
        XLA compiles the network once for each of those places. Here one loop does one
        evaluation per turn: each branch is traced twice, first without the evaluation to learn
        the point it asks for, then on the loss evaluated once at that point. A failed search's
        safe step takes one more turn of the loop.

        Args:
          init_stepsize: [] the first step tried.
          params: the point the search starts from, e.g. float32 [H, W, 3].
          value: the loss there (None: computed here).
          grad: its gradient there (None: computed here).
          descent_direction: the direction searched along, of `params`' shape.
          fun_args: the loss's arguments after `params`.
          fun_kwargs: its keyword arguments.

        Returns:
          The accepted step and the search's final state.
        """
        fun_kwargs = fun_kwargs or {}
        state = self.init_state(init_stepsize, params, value, grad, descent_direction,
                                fun_args, fun_kwargs)
        init_stepsize = jnp.asarray(init_stepsize).astype(state.prev_stepsize.dtype)

        def keep_going(carry):
            _, state, safe, turns = carry
            return safe | (~(state.done | state.failed) & (turns < self.maxiter))

        carry = (init_stepsize, state, jnp.asarray(False), jnp.asarray(0))
        stepsize, state, _, _ = jax.lax.while_loop(
            keep_going, lambda carry: self._turn(carry, fun_args, fun_kwargs), carry)
        return SearchStep(stepsize=stepsize, state=state)

    def _traced_with(self, name: str, stand_in, method: str, *args):
        """The branch `method` of this search, which calls `name` (a method or an attribute)
        once, traced on a copy of this search with `stand_in` in its place."""
        other = copy.copy(self)
        setattr(other, name, stand_in)
        return getattr(other, method)(*args)

    def _point_asked(self, stepsize, state, safe, fun_args, fun_kwargs):
        """Where this turn evaluates: the search's next trial or, after a failed search, its
        safe step; the branches' other work is left to the second tracing (`_turn`)."""
        on_line = jaxopt.tree_util.tree_add_scalar_mul

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

                self._traced_with(name, record, method, stepsize, state, fun_args, fun_kwargs)
                return asked[0]
            return run_branch

        search, zoom = (probe(method, "_value_and_slope_on_line")
                        for method in ("_search_interval", "_zoom_into_interval"))
        return jax.lax.cond(
            safe, probe("_make_safe_step", "_value_and_grad_fun_with_aux"),
            lambda _: jax.lax.cond(state.interval_found, zoom, search, None), None)

    def _turn(self, carry, fun_args, fun_kwargs):
        """One turn of the search: the loss at the point asked for, then the branch that asked
        for it traced again on that value."""
        stepsize, state, safe, turns = carry
        point = self._point_asked(stepsize, state, safe, fun_args, fun_kwargs)
        (value, aux), grad = self._value_and_grad_fun_with_aux(point, *fun_args, **fun_kwargs)

        def after_search(_):
            slope = jaxopt.tree_util.tree_vdot_real(jaxopt.tree_util.tree_conj(grad),
                                                    state.descent_direction)
            found = (value, slope, point, grad, aux)
            new_stepsize, new_state = jax.lax.cond(
                state.interval_found,
                *(lambda _, m=method: self._traced_with("_value_and_slope_on_line",
                                                        lambda *_: found, m, stepsize, state,
                                                        fun_args, fun_kwargs)
                  for method in ("_zoom_into_interval", "_search_interval")), None)
            return new_stepsize, new_state, new_state.failed

        def after_safe_step(_):
            new_stepsize, new_state = self._traced_with(
                "_value_and_grad_fun_with_aux", lambda *_: ((value, aux), grad),
                "_make_safe_step", stepsize, state, fun_args, fun_kwargs)
            return new_stepsize, new_state, jnp.asarray(False)

        new_stepsize, new_state, safe_next = jax.lax.cond(safe, after_safe_step,
                                                          after_search, None)
        new_state = new_state._replace(num_fun_eval=new_state.num_fun_eval + 1,
                                       num_grad_eval=new_state.num_grad_eval + 1)
        return new_stepsize, new_state, safe_next, turns + jnp.where(safe, 0, 1)
