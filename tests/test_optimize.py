import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import optimizer_config, smooth_image

from jaxstyle import OptimizationError, StyleOptions, optimize, stylize
from jaxstyle.optimize import minimize

A = jnp.asarray(np.random.default_rng(0).normal(size=(6, 6)), jnp.float32)
H = A @ A.T + 6 * jnp.eye(6)  # a well-conditioned SPD matrix
B = jnp.arange(6.0)


def quadratic(x, h, b, _static):
    value = 0.5 * x @ h @ x - b @ x
    return value, {"value": value}


def nan_beyond(x, threshold, _static):
    value = jnp.sum((x - 5.0) ** 2)
    bad = jnp.where(x[0] > threshold, jnp.nan, 0.0)  # pulled towards 5, NaN past `threshold`
    return value + bad, {"content": value, "tv": bad}


@pytest.mark.parametrize("linesearch", ["none", "zoom", "backtracking", "hager-zhang"])
def test_lbfgs_matches_scipy_on_quadratic(linesearch):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    # SciPy gets the problem in float64 with tolerances that let it converge: on a float32
    # objective, SciPy 1.17's L-BFGS-B line search stops early on rounding noise.
    h, b = np.asarray(H, np.float64), np.asarray(B, np.float64)
    want = scipy_optimize.minimize(
        lambda x: 0.5 * x @ h @ x - b @ x, np.zeros(6), jac=lambda x: h @ x - b,
        method="L-BFGS-B", options={"ftol": 0.0, "gtol": 1e-10},
    ).x
    np.testing.assert_allclose(want, np.linalg.solve(h, b), atol=1e-6)
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=10, linesearch=linesearch)
    result = minimize(quadratic, None, jnp.zeros(6), (H, B), config, 40, chunk=7)
    np.testing.assert_allclose(result.x, want, atol=1e-4)
    np.testing.assert_allclose(result.x, jnp.linalg.solve(H, B), atol=1e-4)
    assert len(result.history["total"]) == 40
    assert result.evaluations >= 41


def linear(x, a, _static):
    value = a @ x
    return value, {"value": value}


def test_lbfgs_after_a_skipped_first_pair_steps_like_torch():
    # A linear loss has no curvature: the first pair has s.y = 0 and is skipped. torch's
    # L-BFGS then steps along -g with its initial scale 1 (not the first step's 1/|g|_1).
    a = jnp.asarray([3.0, -1.0, 2.0, 0.5])
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5, linesearch="none")
    first = minimize(linear, None, jnp.zeros(4), (a,), config, 1, memory_limit=0)
    np.testing.assert_allclose(first.x, -a / jnp.sum(jnp.abs(a)), rtol=1e-6)
    second = minimize(linear, None, jnp.zeros(4), (a,), config, 2, memory_limit=0)
    np.testing.assert_allclose(second.x, first.x - a, rtol=1e-6)


def pseudo_huber(x, b, _static):
    value = jnp.sum(jnp.sqrt(1.0 + (x - b) ** 2))
    return value, {"value": value}


def test_zoom_never_steps_uphill_where_unit_steps_do():
    # Far from its minimum the loss is nearly linear: secant steps overshoot by far.
    start = jnp.full(6, 10.0)
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5, linesearch="none")
    unit = minimize(pseudo_huber, None, start, (B,), config, 10, memory_limit=0)
    assert max(unit.history["total"]) > 1e3 * float(pseudo_huber(start, B, None)[0])
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5, linesearch="zoom")
    safe = minimize(pseudo_huber, None, start, (B,), config, 10, memory_limit=0)
    assert np.all(np.diff(safe.history["total"]) <= 0)
    np.testing.assert_allclose(safe.x, B, atol=1e-3)
    # The loss components come from the accepted step, not from a recomputation.
    np.testing.assert_allclose(safe.history["value"], safe.history["total"])


def test_zoom_costs_one_evaluation_when_the_quasi_newton_step_is_accepted():
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5, linesearch="zoom")
    result = minimize(quadratic, None, jnp.zeros(6), (H, B), config, 10, memory_limit=0)
    assert result.evaluations <= 10 + 1 + 3  # init, one per step, a few longer searches


def test_tolerance_stops_when_the_loss_stalls_and_only_then():
    config = optimizer_config(name="lbfgs", history=5, linesearch="zoom")
    full = minimize(quadratic, None, jnp.zeros(6), (H, B), config, 200, chunk=10)
    stopped = minimize(quadratic, None, jnp.zeros(6), (H, B), config, 200, chunk=10,
                       tolerance=1e-4)
    totals = stopped.history["total"]
    assert 10 < len(totals) < 200 and len(totals) % 10 == 0
    assert optimize.stalled(totals, 1e-4)
    assert not optimize.stalled(totals[:-10], 1e-4)
    np.testing.assert_array_equal(totals, full.history["total"][: len(totals)])
    # Continuing from the middle with the earlier losses stops at the same iteration.
    half = minimize(quadratic, None, jnp.zeros(6), (H, B), config, 10, chunk=10)
    rest = minimize(quadratic, None, half.x, (H, B), config, 200, chunk=10, state=half.state,
                    start_iteration=10, tolerance=1e-4, recent=half.history["total"])
    assert 10 + len(rest.history["total"]) == len(totals)


def test_stalled_ignores_a_rising_loss():
    assert not optimize.stalled([1.0] + [2.0] * 10, 1e-3)  # rose: not converging
    assert optimize.stalled([1.0] * 11, 1e-3)
    assert not optimize.stalled([1.0] * 10, 1e-3)  # too short to tell
    assert optimize.stalled([[1.0, 1.0]] * 11, 1e-3)  # a batch: summed
    assert optimize.stalled([0.0] * 11, 1e-3)  # a loss of exactly 0 is as low as it goes


def test_adam_converges_on_quadratic():
    config = optimizer_config(name="adam", learning_rate=0.05)
    result = minimize(quadratic, None, jnp.zeros(6), (H, B), config, 600, chunk=100)
    np.testing.assert_allclose(result.x, jnp.linalg.solve(H, B), atol=1e-3)


def test_chunks_report_progress_and_stop_at_requested_iterations():
    seen = []
    config = optimizer_config(name="lbfgs", history=5)
    minimize(quadratic, None, jnp.zeros(6), (H, B), config, 25, chunk=10,
             stops=lambda i: i % 4 == 0, callback=lambda p: seen.append(p.iteration))
    assert seen == [4, 8, 12, 16, 20, 24, 25]


def test_nan_stops_with_clear_error_naming_the_loss():
    config = optimizer_config(name="adam", learning_rate=0.5)
    seen = []
    with pytest.raises(OptimizationError, match=r"NaN or infinite at iteration \d+ \(bad: tv\)"):
        minimize(nan_beyond, None, jnp.zeros(3), (1.0,), config, 50, chunk=10,
                 callback=lambda p: seen.append(p))
    assert all(np.isfinite(p.value) and p.x[0] <= 1.0 for p in seen)


def test_stylize_is_deterministic_and_reports(tiny_weights):
    content, style = smooth_image(24, 32, 0), smooth_image(30, 30, 1)
    options = StyleOptions(size=32, iterations=6, init="noise", seed=3, progress_every=3)
    a = stylize(content, [style], tiny_weights, options)
    b = stylize(content, [style], tiny_weights, options)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (24, 32, 3) and a.image.min() >= 0 and a.image.max() <= 1
    assert len(a.history["total"]) == 6 and a.evaluations == 7
    assert a.history["total"][-1] < a.history["total"][0]
    assert set(a.losses) >= {"total", "content", "style", "tv"}
    other_seed = stylize(content, [style], tiny_weights, options.replace(seed=4))
    assert not np.array_equal(a.image, other_seed.image)


def test_stylize_init_image_and_adam(tiny_weights):
    content, style = smooth_image(20, 20, 0), smooth_image(20, 20, 1)
    init = np.zeros((10, 10, 3), np.float32)
    options = StyleOptions(size=20, iterations=0)
    result = stylize(content, [style], tiny_weights, options, init_image=init)
    assert np.allclose(result.image, 0.0, atol=1e-6)
    adam = stylize(content, [style], tiny_weights, options.replace(iterations=5, optimizer="adam"))
    assert adam.evaluations == 6 and adam.history["total"][-1] < adam.history["total"][0]


def test_stylize_rejects_too_small_output(tiny_weights):
    from jaxstyle import JaxstyleError

    with pytest.raises(JaxstyleError, match="too small for the network"):
        stylize(smooth_image(8, 8), [smooth_image(32, 32)], tiny_weights, StyleOptions(size=8))


def test_callers_arrays_survive_buffer_donation():
    x0 = jnp.zeros(6)
    config = optimizer_config(name="lbfgs", history=5)
    first = minimize(quadratic, None, x0, (H, B), config, 3, chunk=2)
    again = minimize(quadratic, None, x0, (H, B), config, 5, chunk=2, state=first.state,
                     start_iteration=3)
    np.testing.assert_array_equal(x0, jnp.zeros(6))
    assert np.isfinite(np.asarray(first.state.opt.value)) and len(again.history["total"]) == 2


def test_compiled_executables_are_bounded_and_least_recently_used_go_first():
    from jaxstyle import optimize

    jitted = jax.jit(lambda x: x * 2)
    first = jnp.zeros(1)
    cache = optimize.CompileCache(size=4)
    cache.compile(jitted, first)
    for n in range(2, cache.size + 4):
        cache.compile(jitted, first)  # keeps the first shape recently used
        cache.compile(jitted, jnp.zeros(n))
    assert len(cache.executables) == cache.size
    keys = [key for key in cache.executables if key[0] is jitted]
    assert ((1,), jnp.dtype("float32")) in [key[2][0] for key in keys]
    assert ((2,), jnp.dtype("float32")) not in [key[2][0] for key in keys]
    assert cache.seconds_since(0.0) > 0
    cache.clear()
    assert not cache.executables and cache.seconds_since(0.0) == 0
