"""Artistic controls: colour, regions, scales, weight normalisation, iterate selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    TINY_LAYER_FLAGS,
    TINY_LAYERS,
    loss_config,
    loss_weights,
    optimizer_config,
    smooth_image,
    write_image,
)
from PIL import Image

from jaxstyle import JaxstyleError, StyleOptions, color, stylize
from jaxstyle.cli import main
from jaxstyle.losses import (
    GRAM,
    MEAN_COVARIANCE,
    StyleLoss,
    Targets,
    gram_statistics,
    mean_covariance_statistics,
    objective,
    wasserstein_distance,
)
from jaxstyle.optimize import minimize
from jaxstyle.steps import Loss
from jaxstyle.targets import region_targets
from jaxstyle.terms import tv_loss

SMALL = dict(size=32, iterations=6, progress_every=3, **TINY_LAYERS)


def _midtones(h, w, seed):
    return 0.3 + 0.4 * smooth_image(h, w, seed)


def test_luminance_only_keeps_content_chroma_and_changes_luminance(tiny_weights):
    content = _midtones(24, 32, 0)
    style = smooth_image(32, 32, 5)
    result = stylize(content, [style], tiny_weights,
                     StyleOptions(original_colors="luminance", style_weight=1e4, **SMALL))
    out, ref = color.rgb_to_ycbcr(result.image), color.rgb_to_ycbcr(content)
    assert np.abs(np.asarray(out[..., 1:] - ref[..., 1:])).max() < 1e-4
    assert np.abs(np.asarray(out[..., 0] - ref[..., 0])).max() > 1e-3


def test_swap_keeps_content_chroma_and_the_result_luminance(tiny_weights):
    content, style = _midtones(24, 32, 0), smooth_image(32, 32, 5)
    plain = stylize(content, [style], tiny_weights, StyleOptions(style_weight=1e4, **SMALL))
    swapped = stylize(content, [style], tiny_weights,
                      StyleOptions(original_colors="swap", style_weight=1e4, **SMALL))
    out = color.rgb_to_ycbcr(swapped.image)
    assert np.abs(np.asarray(out[..., 1:] - color.rgb_to_ycbcr(content)[..., 1:])).max() < 1e-4
    np.testing.assert_allclose(out[..., 0], color.luminance(plain.image)[..., 0], atol=1e-4)


def test_match_colors_gives_target_mean_and_covariance():
    source, target = 0.2 + 0.5 * smooth_image(40, 30, 1), 0.1 + 0.6 * smooth_image(20, 20, 2)
    matched = color.match_colors(jnp.asarray(source), jnp.asarray(target))
    flat, tflat = np.asarray(matched).reshape(-1, 3), target.reshape(-1, 3)
    np.testing.assert_allclose(flat.mean(0), tflat.mean(0), atol=1e-3)
    np.testing.assert_allclose(np.cov(flat.T), np.cov(tflat.T), atol=1e-3)


def test_match_luminance_matches_mean_and_std():
    s, c = smooth_image(20, 20, 3)[..., :1], 0.5 * smooth_image(20, 20, 4)[..., :1]
    m = np.asarray(color.match_luminance(jnp.asarray(s), jnp.asarray(c)))
    assert abs(m.mean() - c.mean()) < 1e-4 and abs(m.std() - c.std()) < 1e-4


def test_masked_gram_is_the_gram_of_the_region():
    f = jax.random.normal(jax.random.key(0), (6, 8, 4))
    left = jnp.zeros((6, 8)).at[:, :4].set(1.0)
    np.testing.assert_allclose(gram_statistics(f, left), gram_statistics(f[:, :4]), rtol=1e-5)
    stats = mean_covariance_statistics(f, left)
    region = np.asarray(f[:, :4]).reshape(-1, 4)
    np.testing.assert_allclose(stats["mean"], region.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["cov"], np.cov(region.T, bias=True), atol=1e-5)


def test_region_loss_is_the_sum_of_each_styles_masked_loss(tiny_weights):
    config = loss_config(**TINY_LAYERS)
    pre = tiny_weights.preprocessing
    content = pre.to_model(jnp.asarray(smooth_image(16, 16, 0)))
    a, b = (pre.to_model(jnp.asarray(smooth_image(16, 16, s))) for s in (1, 2))
    left = jnp.zeros((16, 16)).at[:, :8].set(1.0)
    weights = loss_weights(config)
    both = region_targets(tiny_weights.params, content, [a, b], config, [left, 1 - left],
                          weights=weights)
    only_a = region_targets(tiny_weights.params, content, [a], config, [left], weights=weights)
    only_b = region_targets(tiny_weights.params, content, [b], config, [1 - left],
                            weights=weights)
    x = content + 0.1
    total = objective(x, tiny_weights.params, both, config)[1]["style"]
    parts = (objective(x, tiny_weights.params, only_a, config)[1]["style"]
             + objective(x, tiny_weights.params, only_b, config)[1]["style"])
    np.testing.assert_allclose(total, parts, rtol=1e-5)
    whole = region_targets(tiny_weights.params, content, [a], config, [jnp.ones((16, 16))],
                           weights=weights)
    plain = region_targets(tiny_weights.params, content, [a], config, weights=weights)
    np.testing.assert_allclose(objective(x, tiny_weights.params, whole, config)[0],
                               objective(x, tiny_weights.params, plain, config)[0], rtol=1e-5)


def test_two_styles_in_two_regions(tiny_weights):
    red = np.zeros((32, 32, 3), np.float32) + [0.9, 0.1, 0.1]
    blue = np.zeros((32, 32, 3), np.float32) + [0.1, 0.1, 0.9]
    red += 0.1 * smooth_image(32, 32, 1) - 0.05
    blue += 0.1 * smooth_image(32, 32, 2) - 0.05
    left = np.zeros((32, 32), np.float32)
    left[:, :16] = 1.0
    options = StyleOptions(size=32, iterations=40, progress_every=20, content_weight=0.0,
                           init="noise", style_layers=("relu1_1",), content_layers=("relu1_1",),
                           style_weight=1e4)
    out = stylize(smooth_image(32, 32, 0), [np.clip(red, 0, 1), np.clip(blue, 0, 1)],
                  tiny_weights, options, style_masks=[left, 1 - left]).image
    assert out[:, :12, 0].mean() > out[:, 20:, 0].mean() + 0.1
    assert out[:, 20:, 2].mean() > out[:, :12, 2].mean() + 0.1


def test_mask_errors(tiny_weights):
    content, style = smooth_image(32, 32, 0), smooth_image(32, 32, 1)
    with pytest.raises(JaxstyleError, match="style mask 1 covers nothing"):
        stylize(content, [style], tiny_weights, StyleOptions(**SMALL),
                style_masks=[np.zeros((8, 8))])
    with pytest.raises(JaxstyleError, match="2 masks for 1 style image"):
        stylize(content, [style], tiny_weights, StyleOptions(**SMALL),
                style_masks=[np.ones((8, 8)), np.ones((8, 8))])
    with pytest.raises(JaxstyleError, match="content mask covers nothing"):
        stylize(content, [style], tiny_weights, StyleOptions(**SMALL),
                content_mask=np.zeros((8, 8, 3)))


@pytest.mark.slow
def test_multiscale_starts_each_scale_from_the_previous_result(tiny_weights):
    # 32x40: the coarse scale's 16x20 is in its shape bucket already (`fit_bucket`).
    content, style = smooth_image(32, 40, 0), smooth_image(32, 32, 1)
    layers = TINY_LAYERS
    coarse = stylize(content, [style], tiny_weights, StyleOptions(size=20, iterations=5, **layers))
    both = stylize(content, [style], tiny_weights,
                   StyleOptions(scales=(20, 40), scale_iterations=(5, 0), **layers))
    assert both.image.shape == (32, 40, 3) and len(both.history["total"]) == 5
    from jaxstyle.resampling import resize

    # The coarse result upsampled, with the photo's detail finer than 20 px added back.
    photo = resize(content, 32, 40)
    detail = photo - resize(resize(photo, 16, 20), 32, 40)
    expected = np.clip(resize(coarse.image, 32, 40) + detail, 0, 1)
    np.testing.assert_allclose(both.image, expected, atol=1e-5)
    assert np.abs(both.image - resize(coarse.image, 32, 40)).mean() > 1e-3
    three = stylize(content, [style], tiny_weights,
                    StyleOptions(scales=(16, 20, 40), scale_iterations=(2,), **layers))
    assert len(three.history["total"]) == 6 and three.image.shape == (32, 40, 3)


def test_resolution_normalisation_makes_tv_size_invariant():
    y, x = np.mgrid[0:1:64j, 0:1:64j]
    small = np.stack([np.sin(6 * x + 3 * y)] * 3, -1).astype(np.float32)
    y, x = np.mgrid[0:1:256j, 0:1:256j]
    large = np.stack([np.sin(6 * x + 3 * y)] * 3, -1).astype(np.float32)
    raw_ratio = float(tv_loss(jnp.asarray(large)) / tv_loss(jnp.asarray(small)))
    assert 3.5 < raw_ratio < 4.5  # neural-style's TV grows with the side
    config = loss_config(content_layers=("relu1_1",), style_layers=("relu1_1",),
                        weight_normalization="resolution")
    weights = loss_weights(config, content_weight=0.0, style_weight=0.0, tv_weight=1.0)
    def tv_only(img):
        return float(weights.tv * tv_loss(img) * 512 / max(img.shape[:2]))

    assert 0.85 < tv_only(jnp.asarray(large)) / tv_only(jnp.asarray(small)) < 1.15
    # ...and the objective applies exactly that factor:
    params = {"conv1_1": {"kernel": jnp.zeros((3, 3, 3, 2)), "bias": jnp.zeros(2)}}
    targets = Targets({"relu1_1": jnp.zeros((64, 64, 2))}, ({"relu1_1": jnp.zeros((2, 2))},),
                      weights=weights)
    parts = objective(jnp.asarray(small), params, targets, config)[1]
    np.testing.assert_allclose(parts["tv"], tv_only(jnp.asarray(small)), rtol=1e-6)


def test_wasserstein_distance_closed_form_and_custom_losses(tiny_weights):
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(0.0, 1.0, (40, 50, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, 2.0],
                    jnp.float32)
    target = MEAN_COVARIANCE.prepare(mean_covariance_statistics(a))
    assert float(wasserstein_distance(a, target)) < 1e-4
    b = a * 2.0 + 1.0
    sa, sb = mean_covariance_statistics(a), mean_covariance_statistics(b)
    # Gaussians related by x -> 2x + 1: W2^2 = |mu_a - mu_b|^2 + tr(S_a) (since S_b = 4 S_a)
    want = float(jnp.sum((sa["mean"] - sb["mean"]) ** 2) + jnp.trace(sa["cov"])) / 3
    np.testing.assert_allclose(float(wasserstein_distance(b, target)), want, rtol=1e-3)

    l1 = StyleLoss("l1-gram", GRAM.statistics,
                   lambda f, t, m=None: jnp.mean(jnp.abs(GRAM.statistics(f, m) - t)))
    config = loss_config(style_layers=("relu1_1",), content_layers=("relu1_1",), style_loss=l1)
    pre = tiny_weights.preprocessing
    x = pre.to_model(jnp.asarray(smooth_image(16, 16, 0)))
    targets = region_targets(tiny_weights.params, x, [x + 0.5], config,
                             weights=loss_weights(config))
    parts = objective(x, tiny_weights.params, targets, config)[1]
    assert float(parts["style/relu1_1"]) > 0
    result = stylize(smooth_image(16, 16, 0), [smooth_image(16, 16, 1)], tiny_weights,
                     StyleOptions(style_loss="mean_cov", **SMALL))
    assert np.isfinite(result.losses["total"])


def _quadratic(x, _static):
    value = jnp.sum((x - 3.0) ** 2)
    return value, {"v": value}


def test_ema_and_best_iterate_tracking():
    seen = []
    config = optimizer_config(name="adam", learning_rate=0.9, ema_decay=0.8)
    result = minimize(Loss(_quadratic, None, ()), jnp.zeros(2), config, 12, chunk=1,
                      callback=lambda p: seen.append(np.asarray(p.x)))
    ema = np.zeros(2)
    for x in seen:
        ema = 0.8 * ema + 0.2 * x
    np.testing.assert_allclose(result.state.ema, ema, rtol=1e-5)
    values = [float(_quadratic(jnp.asarray(x), None)[0]) for x in seen]
    assert float(result.state.best_value) == pytest.approx(min(values + [18.0]), rel=1e-6)
    assert values[-1] > min(values)  # lr 0.9 overshoots, so best is not last
    np.testing.assert_allclose(result.state.best_x, seen[int(np.argmin(values))])


def test_keep_best_and_ema_options(tiny_weights):
    content, style = smooth_image(24, 32, 0), smooth_image(32, 32, 1)
    base = StyleOptions(optimizer="adam", learning_rate=0.2, **SMALL)
    best = stylize(content, [style], tiny_weights, base.replace(keep_best=True))
    last = stylize(content, [style], tiny_weights, base)
    assert not np.array_equal(best.image, last.image) or min(last.history["total"]) == \
        last.history["total"][-1]
    averaged = stylize(content, [style], tiny_weights, base.replace(ema_decay=0.9))
    assert not np.array_equal(averaged.image, last.image)
    with pytest.raises(JaxstyleError, match="choose one"):
        base.replace(keep_best=True, ema_decay=0.5)


def test_per_style_scales(tiny_weights):
    from jaxstyle.checks import check_inputs, style_sizes

    options = StyleOptions(size=40, style_scales=(0.5, 2.0))
    stages = check_inputs((30, 40, 3), [(50, 50, 3), (20, 40, 3)], options)
    assert stages[0].size == (30, 40)
    assert style_sizes(stages[0].size, [(50, 50, 3), (20, 40, 3)], options) == [(20, 20), (40, 80)]
    with pytest.raises(JaxstyleError, match="style_scales: 1 scale for 2"):
        check_inputs((30, 40, 3), [(50, 50, 3)] * 2, StyleOptions(size=40, style_scales=(0.5,)))


@pytest.mark.slow
def test_every_control_from_the_command_line(tmp_path, tiny_weights_file, capsys):
    # Each flag must reach the run: the report's options are what the flags say, and the image
    # is the library's with those options and the same masks (a flag or mask dropped on the
    # way changes one or the other).
    import json

    from jaxstyle import load_weights
    from jaxstyle.images import to_uint8
    from jaxstyle.inputs import load_inputs

    paths = {}
    for name, image in [("content", _midtones(30, 40, 0)), ("a", smooth_image(32, 32, 1)),
                        ("b", smooth_image(32, 32, 2))]:
        paths[name] = write_image(tmp_path / f"{name}.png", image)
    left = np.zeros((30, 40), np.float32)
    left[:, :20] = 1.0
    write_image(tmp_path / "left.png", left)
    write_image(tmp_path / "right.png", 1.0 - left)
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    code = main([
        "stylize", str(paths["content"]), str(paths["a"]), str(paths["b"]), "-o", str(out),
        "--weights", str(tiny_weights_file), "--style-masks", str(tmp_path / "left.png"),
        str(tmp_path / "right.png"), "--content-mask", str(tmp_path / "left.png"),
        "--scales", "24,40", "--scale-iterations", "3,2", "--original-colors", "luminance",
        "--match-style-colors", "--style-loss", "mean_cov", "--weight-normalization",
        "resolution", "--style-scales", "0.5,1.5", "--ema-decay", "0.5",
        # Noise to start from and a heavy content term: the content mask changes pixels.
        "--init", "noise", "--content-weight", "1e4",
        *TINY_LAYER_FLAGS, "-q", "--report", str(report),
    ])
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (40, 30)
    options = StyleOptions(scales=(24, 40), scale_iterations=(3, 2), original_colors="luminance",
                           match_style_colors=True, style_loss="mean_cov",
                           weight_normalization="resolution", style_scales=(0.5, 1.5),
                           ema_decay=0.5, init="noise", content_weight=1e4, **TINY_LAYERS)
    assert json.loads(report.read_text())["options"] == json.loads(json.dumps(options.to_dict()))
    inputs = load_inputs([str(paths["a"]), str(paths["b"])], str(paths["content"]),
                         style_masks=[str(tmp_path / "left.png"), str(tmp_path / "right.png")],
                         content_mask=str(tmp_path / "left.png"))
    alone = stylize(inputs.content, inputs.styles, load_weights(tiny_weights_file), options,
                    style_masks=inputs.style_masks, content_mask=inputs.content_mask)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), to_uint8(alone.image))
    code = main(["stylize", str(paths["content"]), str(paths["a"]), "-o", str(out),
                 "--weights", str(tiny_weights_file), "--style-masks", str(tmp_path / "left.png"),
                 str(tmp_path / "right.png"), "-q"])
    assert code == 2 and "2 masks for 1 style image" in capsys.readouterr().err


@pytest.mark.slow
def test_bfloat16_network_keeps_losses_float32_and_close(tiny_weights):
    pre = tiny_weights.preprocessing
    content = pre.to_model(jnp.asarray(smooth_image(32, 32, 0)))
    style = pre.to_model(jnp.asarray(smooth_image(32, 32, 1)))
    results = {}
    for precision in ("float32", "bfloat16"):
        config = loss_config(precision=precision)
        targets = region_targets(tiny_weights.params, content, [style], config,
                                 weights=loss_weights(config, style_weight=1e6))
        (total, parts), grad = jax.value_and_grad(objective, has_aux=True)(
            content + 0.05, tiny_weights.params, targets, config)
        assert total.dtype == jnp.float32 and grad.dtype == jnp.float32
        assert all(v.dtype == jnp.float32 for v in parts.values())
        results[precision] = (float(total), np.asarray(grad).ravel())
    (f32, g32), (b16, g16) = results["float32"], results["bfloat16"]
    assert abs(b16 - f32) / f32 < 0.05
    assert g32 @ g16 / (np.linalg.norm(g32) * np.linalg.norm(g16)) > 0.98
    runs = [stylize(smooth_image(24, 32, 0), [smooth_image(32, 32, 1)], tiny_weights,
                    StyleOptions(precision=p, optimizer="adam", **SMALL)).history["total"]
            for p in ("float32", "bfloat16")]
    np.testing.assert_allclose(runs[1], runs[0], rtol=0.02)
    assert runs[1][-1] < runs[1][0]
