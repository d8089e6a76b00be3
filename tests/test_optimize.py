import dataclasses
import functools

import jax
import jax.numpy as jnp
import jaxopt
import numpy as np
import pytest
from conftest import optimizer_config, smooth_image

from jaxstyle import OptimizationError, StyleOptions, compiled, lbfgs, optimize, steps, stylize
from jaxstyle.linesearch import ZoomLineSearch
from jaxstyle.optimize import Continuation, minimize
from jaxstyle.steps import Loss

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
    result = minimize(Loss(quadratic, None, (H, B)), jnp.zeros(6), config, 40, chunk=7)
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
    first = minimize(Loss(linear, None, (a,)), jnp.zeros(4), config, 1, memory_limit=0)
    np.testing.assert_allclose(first.x, -a / jnp.sum(jnp.abs(a)), rtol=1e-6)
    second = minimize(Loss(linear, None, (a,)), jnp.zeros(4), config, 2, memory_limit=0)
    np.testing.assert_allclose(second.x, first.x - a, rtol=1e-6)


def pseudo_huber(x, b, _static):
    value = jnp.sum(jnp.sqrt(1.0 + (x - b) ** 2))
    return value, {"value": value}


def test_zoom_never_steps_uphill_where_unit_steps_do():
    # Far from its minimum the loss is nearly linear: secant steps overshoot by far.
    start = jnp.full(6, 10.0)
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5, linesearch="none")
    unit = minimize(Loss(pseudo_huber, None, (B,)), start, config, 10, memory_limit=0)
    assert max(unit.history["total"]) > 1e3 * float(pseudo_huber(start, B, None)[0])
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5, linesearch="zoom")
    safe = minimize(Loss(pseudo_huber, None, (B,)), start, config, 10, memory_limit=0)
    assert np.all(np.diff(safe.history["total"]) <= 0)
    np.testing.assert_allclose(safe.x, B, atol=1e-3)
    # The loss components come from the accepted step, not from a recomputation.
    np.testing.assert_allclose(safe.history["value"], safe.history["total"])


def test_zoom_costs_one_evaluation_when_the_quasi_newton_step_is_accepted():
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5, linesearch="zoom")
    result = minimize(Loss(quadratic, None, (H, B)), jnp.zeros(6), config, 10, memory_limit=0)
    assert result.evaluations <= 10 + 1 + 3  # init, one per step, a few longer searches


def wavy(x, _static):
    value = jnp.sum(jnp.cosh(x - 1.0) + 0.3 * jnp.sin(7.0 * x))
    return value, {"value": value, "sines": jnp.sum(jnp.sin(x))}


@pytest.mark.parametrize("start, direction, first, maxiter, fails", [
    (0.0, 1.0, 0.3, 30, False),   # the first trial is accepted
    (0.0, 1.0, 1.0, 30, False),   # one trial past the interval, then zoomed into
    (-4.0, 1.0, 1e-3, 30, False),  # the interval grown, then zoomed into
    (0.0, 1.0, 50.0, 30, False),  # zoomed into from a long first trial
    (-4.0, 1.0, 1e-3, 2, True),   # out of turns while growing: the safe step
    (0.0, 1.0, 50.0, 2, True),    # out of turns while zooming: the safe step
    (0.0, -1.0, 1.0, 30, True),   # uphill: the search fails, the safe step
])
def test_zoom_search_is_jaxopts_with_the_loss_compiled_once(start, direction, first, maxiter,
                                                            fails):
    fun = functools.partial(wavy, _static=None)
    search = ZoomLineSearch(fun=fun, has_aux=True, maxiter=maxiter, max_stepsize=100.0)
    x = jnp.full(3, start, jnp.float32).at[1].add(0.5)
    (value, _), grad = jax.value_and_grad(fun, has_aux=True)(x)
    d = direction * -grad / jnp.linalg.norm(grad)
    ours = jax.jit(lambda x, d: search.run(first, x, value, grad, d))
    theirs = jax.jit(lambda x, d: jaxopt.ZoomLineSearch.run(search, first, x, value, grad, d))
    got, want = ours(x, d), theirs(x, d)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)
    assert bool(got.state.failed) == fails and bool(got.state.done) != fails
    # One evaluation per turn of the search, and one more for a failed search's safe step.
    assert got.state.num_fun_eval == got.state.iter_num + fails
    assert (got.state.num_fun_eval == 1) == (first == 0.3)
    # jaxopt traces the loss in three places at least; here once (and its gradient).
    assert str(jax.make_jaxpr(ours)(x, d)).count("cosh") == 1
    assert str(jax.make_jaxpr(theirs)(x, d)).count("cosh") >= 3


@pytest.mark.parametrize("rule", [optimize.StopRule(loss=1e-4), optimize.StopRule(change=1e-3)])
def test_stop_rules_stop_when_met_and_only_then(rule):
    config = optimizer_config(name="lbfgs", history=5, linesearch="zoom")
    full = minimize(Loss(quadratic, None, (H, B)), jnp.zeros(6), config, 200, chunk=10)
    stopped = minimize(Loss(quadratic, None, (H, B)), jnp.zeros(6), config, 200, chunk=10,
                       stop=rule)
    totals = stopped.history["total"]
    assert 10 < len(totals) < 200 and len(totals) % optimize.STALL_WINDOW == 0
    assert rule.met(stopped.history)
    assert not rule.met({k: v[:-10] for k, v in stopped.history.items()})
    np.testing.assert_array_equal(totals, full.history["total"][: len(totals)])
    # Continuing from the middle with the earlier history stops at the same iteration.
    half = minimize(Loss(quadratic, None, (H, B)), jnp.zeros(6), config, 15, chunk=10)
    rest = minimize(Loss(quadratic, None, (H, B)), half.x, config, 200, chunk=10, stop=rule,
                    resume=Continuation(half.state, 15, recent=half.history))
    assert 15 + len(rest.history["total"]) == len(totals)


@pytest.mark.parametrize("chunk", [3, 7, 10, 25])
def test_where_a_run_stops_does_not_depend_on_its_chunk_length(chunk):
    config = optimizer_config(name="lbfgs", history=5, linesearch="zoom")
    rule = optimize.StopRule(change=1e-3)
    loss = Loss(quadratic, None, (H, B))
    reference = minimize(loss, jnp.zeros(6), config, 200, chunk=10, stop=rule)
    other = minimize(loss, jnp.zeros(6), config, 200, chunk=chunk, stop=rule)
    assert other.history == reference.history
    np.testing.assert_array_equal(other.x, reference.x)


def test_change_history_is_the_mean_absolute_step_in_grey_levels():
    config = optimizer_config(name="lbfgs", history=5, linesearch="zoom", grey_level=0.5)
    xs = []
    result = minimize(Loss(quadratic, None, (H, B)), jnp.zeros(6), config, 3, chunk=1,
                      callback=lambda p: xs.append(np.asarray(p.x)))
    steps = np.diff(np.stack([np.zeros(6), *xs]), axis=0)
    np.testing.assert_allclose(result.history["change"], np.abs(steps).mean(-1) / 0.5,
                               rtol=1e-6)


def test_settled_takes_the_window_mean_and_a_batch_s_largest():
    assert optimize.settled([0.05] * 10, 0.1)
    assert not optimize.settled([0.05] * 9, 0.1)  # too short to tell
    assert not optimize.settled([0.05] * 9 + [1.0], 0.1)
    assert not optimize.settled([[0.05, 0.5]] * 10, 0.1)  # one image of the batch still moves


def test_stalled_ignores_a_rising_loss():
    assert not optimize.stalled([1.0] + [2.0] * 10, 1e-3)  # rose: not converging
    assert optimize.stalled([1.0] * 11, 1e-3)
    assert not optimize.stalled([1.0] * 10, 1e-3)  # too short to tell
    assert optimize.stalled([[1.0, 1.0]] * 11, 1e-3)  # a batch: summed
    assert optimize.stalled([0.0] * 11, 1e-3)  # a loss of exactly 0 is as low as it goes


def test_adam_converges_on_quadratic():
    config = optimizer_config(name="adam", learning_rate=0.05)
    result = minimize(Loss(quadratic, None, (H, B)), jnp.zeros(6), config, 600, chunk=100)
    np.testing.assert_allclose(result.x, jnp.linalg.solve(H, B), atol=1e-3)


def test_chunks_report_progress_and_stop_at_requested_iterations():
    seen = []
    config = optimizer_config(name="lbfgs", history=5)
    minimize(Loss(quadratic, None, (H, B)), jnp.zeros(6), config, 25, chunk=10,
             chunk_ends=lambda i: i % 4 == 0, callback=lambda p: seen.append(p.iteration))
    assert seen == [4, 8, 12, 16, 20, 24, 25]


def test_nan_stops_with_clear_error_naming_the_loss():
    config = optimizer_config(name="adam", learning_rate=0.5)
    seen = []
    with pytest.raises(OptimizationError, match=r"NaN or infinite at iteration \d+ \(bad: tv\)"):
        minimize(Loss(nan_beyond, None, (1.0,)), jnp.zeros(3), config, 50, chunk=10,
                 callback=lambda p: seen.append(p))
    assert all(np.isfinite(p.value) and p.x[0] <= 1.0 for p in seen)


def test_stylize_is_deterministic_and_reports(tiny_weights):
    content, style = smooth_image(24, 32, 0), smooth_image(30, 30, 1)
    options = StyleOptions(size=32, iterations=6, init="noise", seed=3, progress_every=3)
    a = stylize(content, [style], tiny_weights, options)
    b = stylize(content, [style], tiny_weights, options)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (24, 32, 3) and a.image.min() >= 0 and a.image.max() <= 1
    assert len(a.history["total"]) == 6 and a.evaluations == b.evaluations >= 7
    assert a.history["total"][-1] < a.history["total"][0]
    assert set(a.losses) >= {"total", "content", "style", "tv"}
    other_seed = stylize(content, [style], tiny_weights, options.replace(seed=4))
    assert not np.array_equal(a.image, other_seed.image)


@pytest.mark.slow
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
    first = minimize(Loss(quadratic, None, (H, B)), x0, config, 3, chunk=2)
    again = minimize(Loss(quadratic, None, (H, B)), x0, config, 5, chunk=2,
                     resume=Continuation(first.state, 3))
    np.testing.assert_array_equal(x0, jnp.zeros(6))
    assert np.isfinite(np.asarray(first.state.opt.value)) and len(again.history["total"]) == 2


def test_compiled_executables_are_bounded_and_least_recently_used_go_first():
    jitted = jax.jit(lambda x: x * 2)
    first = jnp.zeros(1)
    cache = compiled.CompileCache(size=4)
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


def two_loop(s, y, rho, gamma, grad, iter_num):
    """Nocedal & Wright's Algorithm 7.4 in NumPy: -H grad from the circular history whose
    oldest pair sits in slot ``iter_num % m``."""
    m = len(rho)
    slots = [(iter_num + i) % m for i in range(m)]  # oldest first
    q, alphas = grad.copy(), {}
    for i in reversed(slots):
        alphas[i] = rho[i] * (s[i] @ q)
        q = q - alphas[i] * y[i]
    r = gamma * q
    for i in slots:
        r = r + (alphas[i] - rho[i] * (y[i] @ r)) * s[i]
    return -r


def random_history(rng, m, n, pairs, skipped):
    """A circular history after `pairs` pairs from a random SPD curvature (plus noise), those
    numbered in `skipped` kept but with rho 0 as the skip rule leaves them."""
    a = rng.normal(size=(n, n))
    curvature = a @ a.T / n + 0.1 * np.eye(n)
    s, y, rho = np.zeros((m, n)), np.zeros((m, n)), np.zeros(m)
    for k in range(pairs):
        s[k % m] = rng.normal(size=n)
        y[k % m] = curvature @ s[k % m] + 0.05 * rng.normal(size=n)
        rho[k % m] = 0.0 if k in skipped else 1.0 / (s[k % m] @ y[k % m])
    return s, y, rho


def compact_state(s, y, rho, gamma, grad, iter_num, dtype):
    """A `LBFGSState` whose inner products are exact, NaN wherever they must not be read:
    stale entries (s newer than y), pairs with rho 0 and the newest pair's column, which
    `compact_direction` adds itself."""
    m = len(rho)
    age = (np.arange(m) - iter_num) % m  # 0: oldest
    readable = (age[:, None] <= age[None, :]) & (rho != 0)[:, None] & (rho != 0)[None, :]
    readable[:, (iter_num - 1) % m] = False
    yy_readable = readable | readable.T
    c = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    zero = c(0.0)
    return lbfgs.LBFGSState(
        jnp.asarray(iter_num), zero, c(grad), zero, zero, c(s), c(y), c(rho), c(gamma), {},
        jnp.asarray(False), 0, 0, 0, c(np.where(readable, s @ y.T, np.nan)),
        c(np.where(yy_readable, y @ y.T, np.nan)))


@pytest.mark.parametrize("m, pairs, skipped", [
    (6, 0, ()),  # first iteration: every slot empty
    (6, 4, ()),  # empty slots after the filled ones
    (6, 6, (0,)),  # full, the oldest pair skipped
    (6, 17, (12, 16)),  # wrapped around, the newest pair skipped
    (30, 75, (50, 61, 62)),  # wrapped, several skipped
])
def test_compact_direction_is_the_two_loop_direction(m, pairs, skipped):
    rng = np.random.default_rng(pairs)
    n = 40
    s, y, rho = random_history(rng, m, n, pairs, set(skipped))
    grad, gamma = rng.normal(size=n), 0.7
    want = two_loop(s, y, rho, gamma, grad, pairs)
    with jax.enable_x64():
        state = compact_state(s, y, rho, gamma, grad, pairs, jnp.float64)
        got, s_dot_y, y_dot_y = jax.jit(lbfgs.compact_direction)(state)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
        newest = (pairs - 1) % m
        np.testing.assert_allclose(s_dot_y[:, newest], s @ y[newest], rtol=1e-12)
        np.testing.assert_allclose(y_dot_y[newest], y @ y[newest], rtol=1e-12)
    # float32, on these well-conditioned histories: within 1e-5 of the float64 direction.
    got32, _, _ = jax.jit(lbfgs.compact_direction)(
        compact_state(s, y, rho, gamma, grad, pairs, jnp.float32))
    np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def cauchy(x, b, _static):
    # Non-convex beyond |x - b| > 1, so some curvature pairs have s.y < 0 and are skipped.
    value = jnp.sum(jnp.log1p((x - b) ** 2)) + 0.05 * jnp.sum(x**2)
    return value, {"value": value}


@dataclasses.dataclass(eq=False)
class TwoLoopLBFGS(jaxopt.LBFGS):
    """jaxopt's own L-BFGS (its two-loop direction and its update) with torch's first step and
    pair rule applied around it, as jaxstyle ran before the compact direction."""

    first_step: float = 0.0

    def init_state(self, x, *args):
        state = super().init_state(x, *args)
        gamma = lbfgs.first_gamma(state.grad, self.stepsize, self.first_step)
        return state if gamma is None else state._replace(gamma=gamma)

    def update(self, x, state, *args):
        new_x, new_state = super().update(x, state, *args)
        skip = jnp.vdot(new_x - x, new_state.grad - state.grad) <= lbfgs.CURVATURE_EPS
        slot = state.iter_num % self.history_size
        first = state.gamma if self.first_step else jnp.ones_like(state.gamma)
        return jaxopt.OptStep(new_x, new_state._replace(
            rho_history=jnp.where(skip, new_state.rho_history.at[slot].set(0.0),
                                  new_state.rho_history),
            gamma=jnp.where(skip, jnp.where(state.iter_num == 0, first, state.gamma),
                            new_state.gamma)))


@pytest.fixture
def two_loop_solver(monkeypatch):
    """Call it to make `minimize` run `TwoLoopLBFGS`; what was compiled with it is dropped
    afterwards."""

    def use():
        compiled.COMPILED.clear()  # the compiled functions hold the solver they were built with
        monkeypatch.setattr(steps, "CompactLBFGS", TwoLoopLBFGS)

    yield use
    compiled.COMPILED.clear()


@pytest.mark.parametrize("linesearch", ["none", "zoom"])
def test_compact_lbfgs_takes_jaxopts_iterates(linesearch, two_loop_solver):
    b = jnp.linspace(-3.0, 3.0, 24).reshape(2, 4, 3)  # an image, as `minimize` expects
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5,
                              linesearch=linesearch)
    newest_rho = []

    def record(p):
        newest_rho.append(float(p.state.opt.rho_history[(p.iteration - 1) % config.history]))

    with jax.enable_x64():
        start, b = jnp.full((2, 4, 3), 4.0, jnp.float64), b.astype(jnp.float64)
        new = minimize(Loss(cauchy, None, (b,)), start, config, 25, chunk=1, memory_limit=0,
                       callback=record)
        two_loop_solver()
        old = minimize(Loss(cauchy, None, (b,)), start, config, 25, chunk=1, memory_limit=0)
    if linesearch == "none":  # unit steps: the skip rule drops the first pairs
        assert 0.0 in newest_rho[:3] and 0.0 not in newest_rho[5:10]
    assert not isinstance(old.state.opt, lbfgs.LBFGSState)
    np.testing.assert_allclose(new.history["total"], old.history["total"], rtol=1e-10)
    np.testing.assert_allclose(new.x, old.x, rtol=1e-9, atol=1e-9)
    assert new.evaluations == old.evaluations


def test_compact_lbfgs_batch_is_each_image_alone():
    config = optimizer_config(name="lbfgs", learning_rate=1.0, history=5, linesearch="zoom")
    with jax.enable_x64():
        b = jnp.linspace(-3.0, 3.0, 48, dtype=jnp.float64).reshape(2, 2, 4, 3)
        start = jnp.stack([jnp.full((2, 4, 3), 4.0), jnp.full((2, 4, 3), -1.0)])
        both = minimize(Loss(cauchy, None, (b,), batch_axes=(0,)), start, config, 12, chunk=5,
                        memory_limit=0)
        for i in range(2):
            alone = minimize(Loss(cauchy, None, (b[i],)), start[i], config, 12, chunk=5,
                             memory_limit=0)
            np.testing.assert_allclose(both.x[i], alone.x, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(np.asarray(both.history["total"])[:, i],
                                       alone.history["total"], rtol=1e-10)
