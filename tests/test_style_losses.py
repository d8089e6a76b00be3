"""The distribution style losses against NumPy references."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LAYER_FLAGS, TINY_LAYERS, smooth_image, write_image

from jaxstyle import StyleOptions, stylize
from jaxstyle.style_losses import (
    QUANTILES,
    gram_histogram,
    gram_statistics,
    mean_covariance_statistics,
    projection_directions,
    sliced_wasserstein,
    sorted_matching_distance,
    weighted_quantiles,
)
from jaxstyle.terms import self_similarity_loss

RNG = np.random.default_rng(0)


def _features(h, w, c, scale=1.0, shift=0.0):
    return (np.abs(RNG.normal(shift, scale, (h, w, c)))).astype(np.float32)


def test_quantiles_match_numpy_with_and_without_weights():
    values = RNG.gamma(2.0, 1.5, (500, 3)).astype(np.float32)
    levels = (np.arange(QUANTILES) + 0.5) / QUANTILES
    ours = np.asarray(weighted_quantiles(jnp.asarray(values), None))
    want = np.quantile(values, levels, axis=0, method="hazen").T
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)
    mask = (RNG.uniform(size=500) > 0.4).astype(np.float32)  # samples of weight 0 play no part
    ours = np.asarray(weighted_quantiles(jnp.asarray(values), jnp.asarray(mask)))
    want = np.quantile(values[mask == 1], levels, axis=0, method="inverted_cdf").T
    np.testing.assert_allclose(ours, want, rtol=1e-6)


def test_sorted_matching_is_the_squared_1d_wasserstein_distance():
    # With as many samples as quantile levels the target quantiles are the sorted samples, and
    # the distance is the exact W2^2 between the two empirical distributions.
    x = RNG.normal(0, 1, (QUANTILES, 4)).astype(np.float32)
    y = RNG.normal(1, 2, (QUANTILES, 4)).astype(np.float32)
    ours = sorted_matching_distance(jnp.asarray(x), None, weighted_quantiles(jnp.asarray(y), None))
    want = np.mean((np.sort(x, 0) - np.sort(y, 0)) ** 2)
    np.testing.assert_allclose(float(ours), want, rtol=1e-5)
    ones = jnp.ones(QUANTILES)
    weighted = sorted_matching_distance(jnp.asarray(x), ones,
                                        weighted_quantiles(jnp.asarray(y), None))
    np.testing.assert_allclose(float(weighted), want, rtol=1e-5)


def test_sliced_wasserstein_against_numpy_projections():
    loss = sliced_wasserstein(seed=3)
    style, out = _features(16, 16, 8, 2.0, 1.0), _features(16, 16, 8)
    target = loss.prepare(loss.statistics(jnp.asarray(style)))
    assert target["quantiles"].shape == (4 * 8, QUANTILES) and target["select"].shape == (8,)
    directions = np.asarray(projection_directions(3, 8, 32))
    np.testing.assert_allclose(np.linalg.norm(directions, axis=0), 1.0, rtol=1e-6)
    for key in (None, jax.random.key(1), jax.random.key(2)):
        t = target if key is None else loss.redraw(target, key)
        d = directions[:, np.asarray(t["select"])]
        projected = lambda f, d=d: np.sort(f.reshape(-1, 8) @ d, axis=0)
        want = np.mean((projected(out) - projected(style)) ** 2)
        np.testing.assert_allclose(float(loss.distance(jnp.asarray(out), t)), want, rtol=1e-4)
    a, b = (loss.redraw(target, jax.random.key(k))["select"] for k in (1, 2))
    assert len(set(np.asarray(a).tolist())) == 8 and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, loss.redraw(target, jax.random.key(1))["select"])
    assert float(loss.distance(jnp.asarray(style), target)) < 1e-9


def test_sliced_wasserstein_in_a_region_is_the_loss_of_the_region():
    loss = sliced_wasserstein()
    style, out = _features(16, 16, 8, 2.0, 1.0), _features(16, 32, 8)
    target = loss.prepare(loss.statistics(jnp.asarray(style)))
    left = np.zeros((16, 32), np.float32)
    left[:, :16] = 1.0
    masked = loss.distance(jnp.asarray(out), target, jnp.asarray(left))
    alone = loss.distance(jnp.asarray(out[:, :16]), target)
    np.testing.assert_allclose(float(masked), float(alone), rtol=1e-5)


def test_gram_histogram_adds_the_per_channel_histogram_loss():
    loss = gram_histogram(0.5)
    style, out = _features(16, 16, 4, 2.0, 1.0), _features(16, 16, 4)
    target = loss.statistics(jnp.asarray(style))
    gram = lambda f: f.reshape(-1, 4).T @ f.reshape(-1, 4) / (4 * 256)
    histogram = np.mean((np.sort(out.reshape(-1, 4), 0) - np.sort(style.reshape(-1, 4), 0)) ** 2)
    want = np.mean((gram(out) - gram(style)) ** 2) + 0.5 * histogram
    np.testing.assert_allclose(float(loss.distance(jnp.asarray(out), target)), want, rtol=1e-4)


@pytest.mark.parametrize("make", [lambda: sliced_wasserstein(), lambda: gram_histogram()])
def test_gradients_move_the_features_toward_the_style(make):
    loss = make()
    style, out = _features(8, 8, 4, 2.0, 1.0), _features(8, 8, 4)
    target = loss.prepare(loss.statistics(jnp.asarray(style)))
    value, grad = jax.value_and_grad(lambda f: loss.distance(f, target))(jnp.asarray(out))
    assert np.isfinite(np.asarray(grad)).all()
    smaller = loss.distance(jnp.asarray(out) - 1e-2 * grad / jnp.abs(grad).max(), target)
    assert float(smaller) < float(value)


def test_the_same_arguments_give_the_same_loss_object():
    assert sliced_wasserstein(0) is sliced_wasserstein(0)
    assert sliced_wasserstein(0) is not sliced_wasserstein(1)


def test_self_similarity_content_loss_against_numpy():
    features, target = _features(20, 24, 5), _features(20, 24, 5, 2.0)

    def normalised(f):
        flat = f.reshape(-1, 5).astype(np.float64)
        unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
        d = 1 - unit @ unit.T
        return d / d.sum(axis=0, keepdims=True)

    want = np.mean(np.abs(normalised(features) - normalised(target))) * 20 * 24
    ours = self_similarity_loss(jnp.asarray(features), jnp.asarray(target))
    np.testing.assert_allclose(float(ours), want, rtol=1e-4)
    assert float(self_similarity_loss(jnp.asarray(target), jnp.asarray(target))) < 1e-6
    # Larger maps are compared on a grid of at most 32 x 32 positions.
    big = jnp.asarray(_features(80, 64, 5))
    grid = self_similarity_loss(big, big * 1.5 + 0.1)
    np.testing.assert_allclose(float(grid), float(self_similarity_loss(
        big[1::3, 1::2], big[1::3, 1::2] * 1.5 + 0.1)) * 1.0, rtol=1e-5)


@pytest.mark.parametrize("style_loss", ["sliced_wasserstein", "gram_histogram"])
def test_runs_are_deterministic_lower_the_loss_and_resume_bit_for_bit(tiny_weights, style_loss):
    content, style = smooth_image(24, 32, 0), smooth_image(30, 30, 1)
    # Reports every 2 iterations at 32 px: the chunks the progress test's first run and the
    # scales case's first scale run below, compiled once for the module (the sorts' host
    # callbacks keep these programs out of the persistent compilation cache: 4-5 s each).
    options = StyleOptions(size=32, iterations=12, progress_every=2, style_loss=style_loss,
                           **TINY_LAYERS)
    full = stylize(content, [style], tiny_weights, options)
    again = stylize(content, [style], tiny_weights, options)
    np.testing.assert_array_equal(full.image, again.image)
    assert full.history["style"][-1] < full.history["style"][0]
    saved = []
    stylize(content, [style], tiny_weights, options.replace(iterations=8),
            callback=lambda p: saved.append(p.run_state()) if p.iteration == 4 else None)
    resumed = stylize(content, [style], tiny_weights, options, resume=saved[0])
    np.testing.assert_array_equal(full.image, resumed.image)
    assert full.history == resumed.history


def test_sliced_wasserstein_directions_change_between_chunks_and_with_the_seed(tiny_weights):
    from jaxstyle.losses import Targets, objective
    from jaxstyle.stage_run import redrawn_args
    from jaxstyle.targets import content_targets, style_targets

    options = StyleOptions(style_loss="sliced_wasserstein", redraw_every=5, **TINY_LAYERS)
    config = options.loss_config()
    x = jnp.asarray(smooth_image(16, 16, 0))
    targets = Targets(content_targets(tiny_weights.params, x, config),
                      (style_targets(tiny_weights.params, [jnp.asarray(smooth_image(16, 16, 1))],
                                     config),), weights=options.loss_weights())
    chunk_args = redrawn_args((tiny_weights.params, targets), options, jax.random.key(0))
    value = lambda args: float(objective(x, *args, config)[1]["style"])
    assert value(chunk_args(0)) == value(chunk_args(4))  # one chunk: one objective
    assert value(chunk_args(0)) != value(chunk_args(5))
    other = redrawn_args((tiny_weights.params, targets), options, jax.random.key(1))
    assert value(other(0)) != value(chunk_args(0))
    assert redrawn_args((tiny_weights.params, targets), StyleOptions(), jax.random.key(0)) is None


@pytest.mark.slow  # every run compiles again per report period: 15 s of the quick suite's CPU
@pytest.mark.parametrize("preset", ["balanced", "neural-style"])
def test_how_often_progress_is_reported_never_changes_a_result(tiny_weights, preset):
    # It once also set sliced Wasserstein's redraw period (outputs differed by up to 0.146).
    content, style = smooth_image(24, 32, 0), smooth_image(30, 30, 1)
    options = StyleOptions(preset=preset, size=32, iterations=24, redraw_every=6,
                           style_loss="sliced_wasserstein", style_strength=30.0, **TINY_LAYERS)
    runs = [stylize(content, [style], tiny_weights, options.replace(progress_every=every))
            for every in (2, 5, 24)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.image, runs[0].image)
        assert other.history == runs[0].history


def test_quality_reads_against_the_photo(tiny_weights):
    from jaxstyle.quality import measure, scorer

    content, style = smooth_image(32, 40, 0), smooth_image(30, 30, 1)
    options = StyleOptions(size=40, **TINY_LAYERS)
    photo = measure(tiny_weights, np.asarray(content), content, [style], options)
    assert photo.style_gram_ratio == pytest.approx(1.0)  # the photo against itself
    assert photo.style_sliced_wasserstein_ratio == pytest.approx(1.0)
    assert photo.content["relu2_1"] == pytest.approx(0.0, abs=1e-6)
    assert set(photo.style_gram) == {"relu1_1", "relu2_1"}
    result = stylize(content, [style], tiny_weights, options.replace(iterations=30,
                                                                      style_weight=1e4))
    quality = measure(tiny_weights, result.image, content, [style], options)
    assert quality.style_gram_ratio < 0.5 and quality.content["relu2_1"] > 0
    assert "x the photo's (Gram)" in quality.summary()
    # Made before the output exists (as a run makes it while it optimizes), the same figures.
    early = scorer(tiny_weights, result.image.shape[:2], content, [style], options)
    assert early.measure(result.image) == quality
    with pytest.raises(ValueError, match="^image: 8x8, scored at 32x40$"):
        early.measure(np.zeros((8, 8, 3), np.float32))


def test_the_quality_line_prepared_during_the_run_reads_the_same(tiny_weights, tmp_path):
    from jaxstyle.inputs import Inputs
    from jaxstyle.pipeline import finish_image, network_of, scoring_ahead

    content, style = smooth_image(32, 40, 0), smooth_image(30, 30, 1)
    options = StyleOptions(size=40, iterations=3, **TINY_LAYERS)
    inputs, network = Inputs(styles=[style], content=content), network_of(tiny_weights, "tiny")
    result = stylize(content, [style], tiny_weights, options)
    alone, _ = finish_image(tmp_path / "a.png", result, content, inputs, options, network, None)
    scoring = scoring_ahead(inputs, network, options)
    scoring.start()  # the run's first progress starts it
    ahead, _ = finish_image(tmp_path / "b.png", result, content, inputs, options, network, None,
                            scoring=scoring)
    assert ahead == alone
    # A job for another output shape (a run stopped at a coarser scale) is not used.
    other = scoring_ahead(inputs, network, options.replace(size=20))
    assert finish_image(tmp_path / "c.png", result, content, inputs, options, network, None,
                        scoring=other)[0] == alone


QUICK_PAIRS = {("scales", "gram_histogram")}
"""The quick suite's case (the default's coarse to fine with a sort in the loss); CI's slow run
takes the whole grid (each case compiles its own programs, 6-12 s of CPU)."""


@pytest.mark.parametrize("control, style_loss", [
    pytest.param(control, loss, id=f"{control}-{loss}",
                 marks=() if (control, loss) in QUICK_PAIRS else pytest.mark.slow)
    for control in ("masks", "scales", "tiles", "self_similarity")
    for loss in ("sliced_wasserstein", "gram_histogram")])
def test_each_loss_works_with_masks_scales_and_tiles(tiny_weights, style_loss, control):
    content, a, b = smooth_image(48, 64, 0), smooth_image(40, 40, 1), smooth_image(40, 40, 2)
    options = StyleOptions(size=64, iterations=4, progress_every=2, style_loss=style_loss,
                           **TINY_LAYERS)
    styles, kwargs = [a], {}
    if control == "masks":
        left = np.zeros((48, 64), np.float32)
        left[:, :32] = 1
        styles, kwargs = [a, b], {"style_masks": [left, 1 - left]}
    elif control == "scales":
        options = options.replace(scales=(32, 64))
    elif control == "tiles":
        # Two 48 px tiles, and the style (64 px at this size) in four of one shape: 40 px tiles
        # cut it into nine shapes, nine compilations of its statistics (6 CPU s).
        options = options.replace(tile_size=48, tile_overlap=8)
    else:
        options = options.replace(content_loss="self_similarity", content_weight=1.0)
    result = stylize(content, styles, tiny_weights, options, **kwargs)
    assert result.image.shape == (48, 64, 3) and np.isfinite(result.image).all()
    assert np.abs(result.image - content).mean() > 1e-3
    assert all(np.isfinite(v) for v in result.losses.values())


def test_the_xla_sort_path_for_gpus_agrees_with_the_numpy_one_for_cpus():
    from jaxstyle import style_losses as sl

    values = RNG.gamma(2.0, 1.5, (3, 400)).astype(np.float32)
    mask = (RNG.uniform(size=400) > 0.3).astype(np.float32) * RNG.uniform(0.2, 1, 400)
    for weights in (np.ones(400, np.float32), mask.astype(np.float32)):
        np.testing.assert_allclose(np.asarray(sl._positions_xla(jnp.asarray(values),
                                                                 jnp.asarray(weights))),
                                   sl.positions_host(values, weights), rtol=1e-5, atol=1e-6)
        for uniform in (True, False):
            if uniform and weights is mask:
                continue
            xla = sl._quantiles_xla(jnp.asarray(values), jnp.asarray(weights), 64, uniform)
            host = sl.quantiles_host(values, weights, 64, uniform)
            np.testing.assert_allclose(np.asarray(xla), host, rtol=1e-5, atol=1e-5)


ONE_THREAD = """
import jax, jax.numpy as jnp, numpy as np
from jaxstyle.style_losses import QUANTILES, _positions, weighted_quantiles
values = jax.random.normal(jax.random.key(0), (100000, 64))  # still being computed: it hangs
ours = jax.jit(lambda v: weighted_quantiles(v, None))(values)
levels = (np.arange(QUANTILES) + 0.5) / QUANTILES
want = np.quantile(np.asarray(values), levels, axis=0, method="hazen").T
np.testing.assert_allclose(np.asarray(ours), want, rtol=1e-5, atol=1e-5)
order = jax.random.permutation(jax.random.key(1), jnp.arange(100000.0))
ranks = jax.jit(_positions)(jnp.tile(order, (64, 1)), jnp.ones(100000))
np.testing.assert_allclose(np.asarray(ranks), np.tile(order + 0.5, (64, 1)) / 100000, rtol=1e-5)
print("done")
"""


@pytest.mark.slow
def test_sorting_finishes_where_jaxlibs_cpu_pool_has_one_thread():
    # With PJRT_NPROC=1 NumPy's callback hangs for good on this operand (jax 0.10.2): XLA sorts.
    env = {**os.environ, "PJRT_NPROC": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", ONE_THREAD], env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("sorting with a one-thread CPU pool hung")
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]


def test_the_command_line_gives_a_one_thread_pool_a_second_thread(monkeypatch):
    from jaxstyle import cpu_pool

    monkeypatch.setattr(cpu_pool, "_jax_started", lambda: False)
    monkeypatch.setenv("PJRT_NPROC", "1")
    assert not cpu_pool.host_callbacks_safe()
    cpu_pool.ensure_two_threads()
    assert os.environ["PJRT_NPROC"] == "2" and cpu_pool.host_callbacks_safe()
    monkeypatch.delenv("PJRT_NPROC")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cpu_pool.pool_threads() == 1
    cpu_pool.ensure_two_threads()
    assert os.environ["PJRT_NPROC"] == "2"


ONE_THREAD_CLI = """
import sys, jax, jax.numpy as jnp
from jaxstyle import cpu_pool
from jaxstyle.cli import main
jnp.zeros(1).block_until_ready()  # JAX started with a one-thread pool: too late to change it
assert cpu_pool._jax_started()
status = main(sys.argv[1:])
print("host callbacks safe:", cpu_pool.host_callbacks_safe())
sys.exit(status)
"""


@pytest.mark.slow
def test_the_command_line_in_a_process_whose_jax_has_one_thread_finishes(tmp_path,
                                                                         tiny_weights_file):
    # A test (or a notebook) calls main() after JAX started: the variable stays, XLA sorts.
    # Whether the hang strikes depends on a race (is the callback's operand still being
    # computed?), so the guard's reading of the pool is checked too: that part cannot pass by luck.
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    for path, seed in ((content, 0), (style, 1)):
        write_image(path, smooth_image(30, 40, seed))
    env = {**os.environ, "PJRT_NPROC": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", ONE_THREAD_CLI, "stylize", str(content), str(style), "-o",
             str(tmp_path / "out.png"), "--weights", str(tiny_weights_file), "--size", "40",
             "--iterations", "2", *TINY_LAYER_FLAGS],
            env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("the command line with a one-thread CPU pool hung")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "quality:" in done.stderr
    assert "host callbacks safe: False" in done.stdout


def test_mean_covariance_gradient_is_finite_with_dead_channels_and_matches_differences():
    from jaxstyle.style_losses import MEAN_COVARIANCE

    style = _features(8, 8, 6, 2.0, 1.0)
    style[..., 4:] = 0.0  # channels a ReLU left at zero: repeated zero eigenvalues
    out = _features(8, 8, 6)
    out[..., 5] = 0.0
    target = MEAN_COVARIANCE.prepare(MEAN_COVARIANCE.statistics(jnp.asarray(style)))
    loss = lambda f: MEAN_COVARIANCE.distance(f, target)
    grad = np.asarray(jax.grad(loss)(jnp.asarray(out)))
    assert np.isfinite(grad).all()  # differentiating through eigh gave NaN here
    generic = jnp.asarray(_features(8, 8, 6) + 0.1)
    direction = jnp.asarray(RNG.normal(size=generic.shape), jnp.float32)
    g = jax.grad(loss)(generic)
    eps = 1e-2
    numeric = (loss(generic + eps * direction) - loss(generic - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(g * direction)), float(numeric), rtol=2e-2)


def test_gram_statistics_differentiate_like_their_formula_in_both_modes():
    # gram_statistics' own derivative rule (one product in the gradient instead of two)
    # against JAX's differentiation of F^T F / (C * area), forward and reverse.
    features = jnp.asarray(_features(9, 7, 5))
    mask = jnp.asarray(RNG.uniform(size=(9, 7)), jnp.float32)
    weights = jnp.asarray(RNG.normal(size=(5, 5)), jnp.float32)

    def by_formula(f, m):
        flat = (f * (1.0 if m is None else m[..., None])).reshape(-1, 5)
        area = 63 if m is None else jnp.sum(m)
        return flat.T @ flat / (5 * area)

    for m in (None, mask):
        ours = lambda f, m=m: jnp.sum(jnp.sin(gram_statistics(f, m)) * weights)
        theirs = lambda f, m=m: jnp.sum(jnp.sin(by_formula(f, m)) * weights)
        np.testing.assert_allclose(jax.grad(ours)(features), jax.grad(theirs)(features),
                                   rtol=1e-5, atol=1e-7)
        tangent = jnp.asarray(RNG.normal(size=features.shape), jnp.float32)
        np.testing.assert_allclose(jax.jvp(ours, (features,), (tangent,))[1],
                                   jax.jvp(theirs, (features,), (tangent,))[1], rtol=1e-5)
    cov = lambda f: jnp.sum(mean_covariance_statistics(f)["cov"] * weights)
    plain = lambda f: jnp.sum(jnp.cov(f.reshape(-1, 5).T, bias=True) * weights)
    np.testing.assert_allclose(cov(features), plain(features), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(cov)(features), jax.grad(plain)(features), rtol=1e-4,
                               atol=1e-6)


def test_the_quality_score_is_sliced_wasserstein_along_its_first_directions():
    # The quality line sorts the style along the C directions it scores, not the whole bank of
    # 4C a run redraws from: the same figure to float32 rounding.
    from jaxstyle import quality
    from jaxstyle.style_losses import sliced_wasserstein

    style = jax.random.uniform(jax.random.key(0), (12, 10, 16))
    output = jax.random.uniform(jax.random.key(1), (9, 11, 16))
    run_loss = sliced_wasserstein(quality.SCORING_SEED)
    target = run_loss.prepare(run_loss.statistics(style))
    scored = quality._quantiles(np.asarray(quality._projected(style)))
    assert scored.shape[0] == 16
    np.testing.assert_allclose(quality._matching_distance(np.asarray(quality._projected(output)),
                                                          scored),
                               run_loss.distance(output, target), rtol=1e-5)


def test_the_quality_scores_compile_without_host_callbacks(tiny_weights):
    # A compiled function with a host callback is never written to JAX's persistent cache, so
    # the quality line would compile again in every process: its sorting stays out of them.
    from jaxstyle import StyleOptions, quality

    config = StyleOptions(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1")
                          ).loss_config()
    image = jnp.zeros((16, 16, 3))
    grams = {n: jnp.zeros((c, c)) for n, c in (("relu1_1", 8), ("relu2_1", 16))}
    content = {"relu2_1": jnp.zeros((8, 8, 16))}
    for lowered in (quality._style_scores.lower(tiny_weights.params, image, config),
                    quality._image_scores.lower(tiny_weights.params, image, grams, content,
                                                config)):
        assert "callback" not in lowered.as_text()
    # The run's sliced loss, by contrast, sorts through a callback on CPUs (where it can).
    from jaxstyle.cpu_pool import host_callbacks_safe
    from jaxstyle.style_losses import sorted_matching_distance

    text = jax.jit(sorted_matching_distance).lower(jnp.ones((5, 3)), None,
                                                   jnp.ones((3, 4))).as_text()
    assert ("callback" in text) == (jax.default_backend() == "cpu" and host_callbacks_safe())
