"""The neural-neighbour route with the controls it composes with (issue 38, item 4): a style
per region, several styles blended, a content mask, luminance-only transfer, a sweep over its
alpha, and an interrupted run resumed bit for bit. What it refuses is in
test_neural_neighbour.py."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import interrupted_and_resumed_equals_uninterrupted, smooth_image, write_image

from jaxstyle import StyleOptions, stylize
from jaxstyle import neighbours as nn
from jaxstyle.color import rgb_to_ycbcr
from jaxstyle.compiled import COMPILED
from jaxstyle.problem import neighbour_config
from jaxstyle.sweeps import parse_axis, sweep
from jaxstyle.vgg import vgg_features
from jaxstyle.weights import save_converted


def _options(**changes) -> StyleOptions:
    """The preset at 32 px for 12 iterations, without its last pass or colour step unless
    asked (several tests read the regions' colours)."""
    return StyleOptions(**{"preset": "neural-neighbour", "size": 32, "iterations": 12,
                           "stop_change": 0.0, "convolution": "direct", "final_pass": 0,
                           "original_colors": "none", **changes})


def _tinted(rgb, seed: int) -> np.ndarray:
    """A 32 x 32 style of one colour with a little texture."""
    image = np.zeros((32, 32, 3), np.float32) + rgb + 0.1 * smooth_image(32, 32, seed) - 0.05
    return np.clip(image, 0, 1).astype(np.float32)


RED, BLUE = _tinted([0.9, 0.1, 0.1], 1), _tinted([0.1, 0.1, 0.9], 2)
LEFT = np.zeros((32, 32), np.float32)
LEFT[:, :16] = 1.0
HALF = 1 - 0.5 * LEFT  # a content mask


def _unit(a: np.ndarray, centre: np.ndarray) -> np.ndarray:
    a = a - centre
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_each_region_is_matched_against_its_own_style_only(tiny16_weights):
    # At alpha 0 the style term is sum_k w_k sum_i m_k(i) min_j d_k(h_i, s_kj) / N: here
    # against all N x M_k distances by NumPy, each region with its own style's centre.
    params, pre = tiny16_weights.params, tiny16_weights.preprocessing
    options = _options()
    config = neighbour_config(options, tiny16_weights)
    image, content, a, b = (pre.to_model(jnp.asarray(smooth_image(32, 40, seed=s)))
                            for s in (3, 4, 5, 6))
    styles = [nn.style_hypercolumns(params, [s], config, jax.random.key(i))
              for i, s in enumerate((a, b[:24]))]
    left = np.zeros((32, 40), np.float32)
    left[:, :20] = 1.0
    targets = nn.neighbour_targets(params, content, styles, config, 0.0, options.loss_weights(),
                                   style_masks=[left, 1 - left], blend_weights=(2.0, 1.0))
    masks = np.asarray(targets.style_masks)
    assert masks.shape == (2, 8 * 10)
    np.testing.assert_allclose(masks.sum(0), 1.0, atol=1e-6)  # the two halves, on the grid
    grid = masks[0].reshape(8, 10)
    assert grid[:, 0].min() > 1 - 1e-6 and grid[:, -1].max() < 1e-6
    np.testing.assert_allclose(np.asarray(targets.style_weights), [4 / 3, 2 / 3], rtol=1e-6)
    _, parts = nn.objective(image, params, targets, config)
    feats = vgg_features(params, image, config.columns)
    h = np.asarray(nn.hypercolumns(feats, config.columns, nn.grid_shape(image.shape)), np.float64)
    expected = 0.0
    for k, style in enumerate(styles):
        s, c = np.asarray(style.columns, np.float64), np.asarray(style.centre, np.float64)
        nearest = np.min(1.0 - _unit(h, c) @ _unit(s, c).T, axis=1)
        expected += [4 / 3, 2 / 3][k] * np.sum(masks[k] * nearest) / len(h)
    np.testing.assert_allclose(float(parts["style"]), expected, rtol=1e-4)

    # One white region is no region at all.
    whole = nn.neighbour_targets(params, content, styles[:1], config, 0.5,
                                 options.loss_weights(), style_masks=[None])
    plain = nn.neighbour_targets(params, content, styles[:1], config, 0.5,
                                 options.loss_weights())
    np.testing.assert_allclose(nn.objective(image, params, whole, config)[0],
                               nn.objective(image, params, plain, config)[0], rtol=1e-6)
    with pytest.raises(ValueError, match="^styles: 1 pool for 2 regions"):
        nn.neighbour_targets(params, content, styles[:1], config, 0.5, options.loss_weights(),
                             style_masks=[left, None])
    with pytest.raises(ValueError, match="^style_masks: shape"):
        nn.neighbour_targets(params, content, styles[:1], config, 0.5, options.loss_weights(),
                             style_masks=[left[:8]])


@pytest.mark.slow
def test_two_styles_in_two_regions_follow_the_masks(tiny16_weights):
    # The same pair with the masks swapped: each half takes the colour of the style painted
    # there (a run that pooled the styles would give both the same picture).
    content = smooth_image(32, 32, 0)
    red_left, blue_left = (stylize(content, [RED, BLUE], tiny16_weights, _options(),
                                   style_masks=masks).image
                           for masks in ([LEFT, 1 - LEFT], [1 - LEFT, LEFT]))
    redness = lambda image: image[..., 0] - image[..., 2]
    assert redness(red_left)[:, :12].mean() > redness(blue_left)[:, :12].mean() + 0.2
    assert redness(blue_left)[:, 20:].mean() > redness(red_left)[:, 20:].mean() + 0.2


def test_sample_counts_make_a_mixture_that_fits_each_style():
    assert nn.sample_counts([100, 300], [0.5, 0.5], 4096) == [100, 100]
    assert nn.sample_counts([5000, 5000], [0.75, 0.25], 4096) == [3072, 1024]
    assert nn.sample_counts([100, 64], [1.0, 0.0], 40) == [40, 0]
    assert nn.sample_counts([100, 64], [0.999, 0.001], 4096) == [100, 1]  # a share gets one
    with pytest.raises(ValueError, match="shares"):
        nn.sample_counts([100], [0.5, 0.5], 10)


def test_blend_weights_set_each_styles_share_of_the_pool(tiny16_weights):
    params, pre = tiny16_weights.params, tiny16_weights.preprocessing
    config = neighbour_config(_options(style_rotations=False), tiny16_weights)
    a, b = (pre.to_model(jnp.asarray(smooth_image(h, h, seed=h))) for h in (40, 32))
    whole = [np.asarray(nn.style_hypercolumns(params, [s], config, jax.random.key(0)).columns)
             for s in (a, b)]
    assert [len(w) for w in whole] == [100, 64]
    pool = nn.style_hypercolumns(params, [a, b], config, jax.random.key(0), 40, (3.0, 1.0))
    columns = np.asarray(pool.columns)
    from_a = [(row == whole[0]).all(1).any() for row in columns]
    from_b = [(row == whole[1]).all(1).any() for row in columns]
    assert len(columns) == 40 and sum(from_a) == 30 and sum(from_b) == 10
    assert len({row.tobytes() for row in columns}) == 40  # without replacement
    np.testing.assert_allclose(pool.centre, 0.75 * whole[0].mean(0) + 0.25 * whole[1].mean(0),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_a_style_weighted_zero_leaves_the_run_of_the_others(tiny16_weights):
    content = smooth_image(32, 32, 0)
    for colors in ("none", "oklab"):  # nor the OkLab step's palette
        alone = stylize(content, [RED], tiny16_weights,
                        _options(iterations=4, original_colors=colors))
        weighted = stylize(content, [RED, BLUE], tiny16_weights,
                           _options(iterations=4, style_blend_weights=(1.0, 0.0),
                                    original_colors=colors))
        np.testing.assert_array_equal(alone.image, weighted.image)
    mixed = stylize(content, [RED, BLUE], tiny16_weights,
                    _options(iterations=4, style_blend_weights=(1.0, 1.0)))
    assert mixed.image[..., 2].mean() > alone.image[..., 2].mean() + 0.05


@pytest.mark.slow
def test_a_batch_with_regions_gives_each_image_its_own_run(tiny16_weights):
    from jaxstyle import stylize_batch

    options = _options(iterations=3)
    contents = [smooth_image(32, 32, 0), smooth_image(32, 32, 3)]
    masks = [[LEFT, 1 - LEFT], [1 - LEFT, LEFT]]
    halves = [HALF, 1 - 0.5 * (1 - LEFT)]
    batch = stylize_batch(contents, [RED, BLUE], tiny16_weights, options, style_masks=masks,
                          content_masks=halves)
    for content, mask, half, result in zip(contents, masks, halves, batch):
        alone = stylize(content, [RED, BLUE], tiny16_weights, options, style_masks=mask,
                        content_mask=half)
        np.testing.assert_allclose(result.image, alone.image, atol=1e-4)


def test_content_mask_limits_alpha_and_the_content_term(tiny16_weights):
    params, pre = tiny16_weights.params, tiny16_weights.preprocessing
    options = _options(content_weight=1.0)
    config = neighbour_config(options, tiny16_weights)
    image, content, a = (pre.to_model(jnp.asarray(smooth_image(32, 40, seed=s)))
                         for s in (3, 4, 5))
    style = [nn.style_hypercolumns(params, [a], config, jax.random.key(0))]
    weights = options.loss_weights()
    value = lambda targets: nn.objective(image, params, targets, config)[1]
    nowhere = value(nn.neighbour_targets(params, content, style, config, 1.0, weights,
                                         content_mask=jnp.zeros((32, 40))))
    searched_from_the_output = value(nn.neighbour_targets(params, content, style, config, 0.0,
                                                          weights))
    assert float(nowhere["style"]) == float(searched_from_the_output["style"])
    assert float(nowhere["content"]) == 0.0 < float(searched_from_the_output["content"])
    everywhere = value(nn.neighbour_targets(params, content, style, config, 0.7, weights,
                                            content_mask=jnp.ones((32, 40))))
    unmasked = value(nn.neighbour_targets(params, content, style, config, 0.7, weights))
    for name in ("style", "content"):
        np.testing.assert_allclose(everywhere[name], unmasked[name], rtol=1e-5)


@pytest.mark.slow
def test_luminance_only_keeps_the_photos_colours(tiny16_weights):
    content = smooth_image(32, 32, 0)
    result = stylize(content, [RED], tiny16_weights, _options(original_colors="luminance"))
    style = result.history["style"]
    assert style[-1] < 0.9 * style[0]
    # The photo's chroma, the picture's own luminance (clipping to [0, 1] aside).
    chroma = lambda image: np.asarray(rgb_to_ycbcr(jnp.asarray(image)))[..., 1:]
    inside = (result.image > 0.01).all(-1) & (result.image < 0.99).all(-1)
    np.testing.assert_allclose(chroma(result.image)[inside], chroma(content)[inside], atol=2e-3)
    plain = stylize(content, [RED], tiny16_weights, _options())
    assert np.abs(chroma(plain.image) - chroma(content)).mean() > 0.02


def test_a_sweep_over_alpha_compiles_once(tiny16_weights):
    assert parse_axis("content-alpha=0,0.5,1") == ("content_alpha", (0.0, 0.5, 1.0))
    first_done = []

    def after(index, count, cell):
        first_done.append(time.perf_counter())

    cells = sweep(smooth_image(32, 32, 0), [RED], tiny16_weights, _options(iterations=4),
                  [("content_alpha", (0.0, 1.0))], after)
    assert [c.settings for c in cells] == [{"content_alpha": 0.0}, {"content_alpha": 1.0}]
    assert np.abs(cells[0].image - cells[1].image).mean() > 1e-3
    assert [e for e in COMPILED.log if e[0] >= first_done[0]] == [], "alpha recompiled"


@pytest.fixture
def few_samples(monkeypatch):
    """Style pools of 20 hypercolumns, so that the tiny styles are subsampled at every scale."""
    monkeypatch.setattr(nn, "STYLE_SAMPLES", 20)


RESUMED = dict(size=48, scales=(24, 48), iterations=6, progress_every=2, content_alpha=0.5)
"""Two scales of 6 iterations; the command line's flags say the same."""


@pytest.mark.slow
def test_resumed_run_is_the_uninterrupted_one_in_process(tiny16_weights, few_samples):
    content, styles = smooth_image(40, 48, 0), [RED, BLUE]
    masks = dict(style_masks=[LEFT, 1 - LEFT], content_mask=HALF)
    options = _options(**RESUMED)
    saved = {}

    def keep(p):  # a callback changes no pixel
        saved.setdefault(p.iteration, p.run_state())

    full = stylize(content, styles, tiny16_weights, options, callback=keep, **masks)
    for iteration in (4, 8):  # inside the first scale, and inside the second
        resumed = stylize(content, styles, tiny16_weights, options, resume=saved[iteration],
                          **masks)
        np.testing.assert_array_equal(full.image, resumed.image)
        assert full.history == resumed.history


@pytest.mark.slow
def test_style_samples_come_from_the_runs_key(tiny16_weights, few_samples):
    # stylize's key, not only options.seed, decides the draws (the content start uses no key).
    content, run = smooth_image(40, 48, 0), lambda options, **key: stylize(
        content, [RED, BLUE], tiny16_weights, options, style_masks=[LEFT, 1 - LEFT], **key).image
    by_seed = run(_options(**RESUMED, seed=5))
    np.testing.assert_array_equal(by_seed, run(_options(**RESUMED), key=jax.random.key(5)))
    assert not np.array_equal(by_seed, run(_options(**RESUMED), key=jax.random.key(6)))


@pytest.mark.slow
def test_interrupted_and_resumed_command_makes_the_same_picture(tmp_path, tiny16_weights,
                                                                few_samples, monkeypatch):
    weights = save_converted(tiny16_weights, tmp_path / "tiny16.msgpack")
    files = [write_image(tmp_path / name, image) for name, image in (
        ("content.png", smooth_image(40, 48, 0)), ("red.png", RED), ("blue.png", BLUE),
        ("left.png", LEFT), ("right.png", 1 - LEFT), ("half.png", HALF))]
    content, red, blue, left, right, half = map(str, files)

    def command(out):
        return ["stylize", content, red, blue, "-o", str(tmp_path / out), "--weights",
                str(weights), "--preset", "neural-neighbour", "--size", "48", "--scales",
                "24,48", "--iterations", "6", "--progress-every", "2", "--checkpoint-every",
                "2", "--stop-change", "0", "--convolution", "direct", "--content-alpha", "0.5",
                "--style-masks", left, right, "--content-mask", half, "-q"]

    interrupted_and_resumed_equals_uninterrupted(command, tmp_path, monkeypatch, at=8)
