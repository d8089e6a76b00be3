"""`CompactLBFGS` used on its own, as a researcher would: `init_state` and `update` in a jitted
loop, against the exact minimum of a quadratic and against what `stylize` makes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LAYERS, smooth_image

from jaxstyle import StyleOptions, network_params, prepare, stylize
from jaxstyle.lbfgs import CompactLBFGS
from jaxstyle.linesearch import ZoomLineSearch
from jaxstyle.steps import lbfgs_solver

A = np.random.default_rng(1).normal(size=(8, 8))
H = jnp.asarray(A @ A.T + 0.5 * np.eye(8), jnp.float32)  # condition number in the hundreds
B = jnp.linspace(-2.0, 2.0, 8)


def quadratic(x, h, b):
    value = 0.5 * x @ h @ x - b @ x
    return value, {"value": value}


def run(solver, x, iterations, *args):
    """`iterations` updates from `x` in one jitted `fori_loop`."""
    state = solver.init_state(x, *args)

    @jax.jit
    def loop(x, state):
        def body(_, carry):
            return tuple(solver.update(*carry, *args))

        return jax.lax.fori_loop(0, iterations, body, (x, state))

    return loop(x, state)


@pytest.mark.parametrize("kind", ["unit steps", "zoom"])
def test_init_state_and_update_minimize_a_quadratic_inside_jit(kind):
    if kind == "zoom":
        search = ZoomLineSearch(fun=quadratic, has_aux=True, maxiter=30, max_stepsize=1.0)
        solver = CompactLBFGS(fun=quadratic, has_aux=True, history_size=5, stepsize=0.0,
                              linesearch=search, linesearch_init="max", max_stepsize=1.0)
    else:
        solver = CompactLBFGS(fun=quadratic, has_aux=True, history_size=5, stepsize=1.0)
    x, state = run(solver, jnp.zeros(8), 60, H, B)
    np.testing.assert_allclose(x, jnp.linalg.solve(H, B), rtol=1e-4, atol=1e-4)
    assert float(state.error) < 1e-3 and int(state.iter_num) == 60
    assert state.aux["value"] == pytest.approx(float(quadratic(x, H, B)[0]), rel=1e-5)


def test_a_hand_written_loop_makes_stylize_s_picture(tiny_weights):
    content, style = smooth_image(24, 32, 0), smooth_image(30, 30, 1)
    options = StyleOptions(size=32, iterations=4, preset="neural-style", **TINY_LAYERS)
    made = stylize(content, [style], tiny_weights, options)
    problem = prepare(content, [style], tiny_weights, options)

    def fun(x, *args):
        return problem.loss_fn(x, *args, problem.loss_static)

    solver = lbfgs_solver(fun, options.optimizer_config(
        tiny_weights.preprocessing.model_range(), problem.pixel_units))
    params = network_params(tiny_weights.params, options, problem.x0.shape)
    x, state = run(solver, problem.x0, 4, params, problem.targets)
    # The same iterations compiled into another loop: XLA may round a few values differently.
    np.testing.assert_allclose(problem.to_rgb(x), made.image, atol=1e-4)
    assert float(state.value) == pytest.approx(made.history["total"][-1], rel=1e-4)
    assert int(state.num_fun_eval) == made.evaluations


def test_rejects_what_it_does_not_support():
    with pytest.raises(ValueError, match="history_size: must be >= 1"):
        CompactLBFGS(fun=quadratic, has_aux=True, history_size=0, stepsize=1.0)
    with pytest.raises(ValueError, match="stepsize: a float > 0, or 0 with linesearch_init"):
        CompactLBFGS(fun=quadratic, has_aux=True, history_size=5, stepsize=0.0)
