"""The neural-neighbour route's two optional parts of NNST (issue 38, item 2): the style's
rotated copies searched too (``style_rotations``), and the last pass at the output's size that
matches each layer on its own on random subsamples (``final_pass``,
`jaxstyle.neighbour_layers`), with its redraws resumed bit for bit."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import interrupted_and_resumed_equals_uninterrupted, smooth_image, write_image

from jaxstyle import StyleOptions, stylize, stylize_batch
from jaxstyle import neighbour_layers as nl
from jaxstyle import neighbours as nn
from jaxstyle.option_fields import OptionsError
from jaxstyle.problem import layered, neighbour_config
from jaxstyle.stages import continued, plan
from jaxstyle.vgg import vgg_features
from jaxstyle.weights import save_converted


def _options(**changes) -> StyleOptions:
    """The preset at 32 px for 4 iterations, without rotations or a last pass unless asked."""
    return StyleOptions(**{"preset": "neural-neighbour", "size": 32, "iterations": 4,
                           "stop_change": 0.0, "convolution": "direct", "final_pass": 0,
                           "style_rotations": False, **changes})


def _unit(a: np.ndarray, centre: np.ndarray) -> np.ndarray:
    a = a - centre
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_rotations_pool_the_rotated_styles_hypercolumns(tiny16_weights):
    params, pre = tiny16_weights.params, tiny16_weights.preprocessing
    config = neighbour_config(_options(style_rotations=True), tiny16_weights)
    assert config.rotations
    style = np.asarray(pre.to_model(jnp.asarray(smooth_image(24, 32, 3))))
    pool = nn.style_hypercolumns(params, [jnp.asarray(style)], config, jax.random.key(0),
                                 samples=10**6)
    expected = []
    for k in range(4):  # NumPy's rotations, in order: all of them, as there are no more
        turned = jnp.asarray(np.rot90(style, k).copy())
        feats = vgg_features(params, turned, config.columns)
        expected.append(nn.hypercolumns(feats, config.columns, nn.grid_shape(turned.shape)))
    expected = np.concatenate(expected)
    assert pool.columns.shape == expected.shape == (4 * 6 * 8, expected.shape[1])
    np.testing.assert_allclose(np.asarray(pool.columns), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pool.centre), expected.mean(0), rtol=1e-5,
                               atol=1e-6)

    # The cap holds with them: as many searched, drawn from four times as many.
    capped = nn.style_hypercolumns(params, [jnp.asarray(style)], config, jax.random.key(0),
                                   samples=48)
    assert capped.columns.shape[0] == 48


@pytest.mark.slow
def test_rotations_reach_the_run(tiny16_weights):
    content, style = smooth_image(32, 32, 0), smooth_image(24, 32, 1)
    plain, turned = (stylize(content, [style], tiny16_weights, _options(style_rotations=r)).image
                     for r in (False, True))
    assert np.abs(plain - turned).mean() > 1e-3


@pytest.mark.parametrize("name, value", [("style_rotations", True), ("final_pass", 5)])
def test_refused_with_other_presets(name, value):
    with pytest.raises(OptionsError, match=f"^{name}: only with preset neural-neighbour$"):
        StyleOptions(**{name: value})


def test_final_pass_is_one_more_stage_at_the_last_size():
    options = _options(size=48, scales=(24, 48), iterations=6, final_pass=5)
    *scales, final = plan((40, 48, 3), options)
    assert [s.final for s in scales] == [False, False] and final.final
    assert (final.index, final.scale, final.size, final.iterations, final.offset) == (
        2, 2, scales[-1].size, 5, 12)
    assert len(plan((40, 48, 3), options.replace(final_pass=0))) == 2
    # A run continued from inside the last pass lengthens the last pass only.
    more = continued(options, (40, 48, 3), 2, 15, 4)
    assert more.plan.final_pass == 7 and plan((40, 48, 3), more)[:2] == tuple(scales)


def _subsample_np(feature: np.ndarray, offset: np.ndarray, side: int) -> np.ndarray:
    """Every s-th row and column from floor(offset * s), s = max(1, longest side // side)."""
    s = max(1, max(feature.shape[:2]) // side)
    a, b = (int(np.floor(o * s)) for o in offset)
    h, w = max(1, feature.shape[0] // s), max(1, feature.shape[1] // s)
    return feature[a::s, b::s][:h, :w].reshape(-1, feature.shape[-1])


@pytest.mark.slow
def test_final_pass_term_is_the_mean_over_layers_of_the_nearest_distance(tiny16_weights):
    # A 96 x 128 picture: relu1 is read every 2nd row and column (128 // 64), deeper layers
    # whole; the style's drawn features are rows of its own (or its copies') features.
    params, pre = tiny16_weights.params, tiny16_weights.preprocessing
    options = _options(style_rotations=True)
    config = neighbour_config(options, tiny16_weights)
    image, content, style = (pre.to_model(jnp.asarray(smooth_image(96, 128, seed=s)))
                             for s in (3, 4, 5))
    layer_style = nl.final_style(params, style, config, jax.random.key(1))
    targets = nl.final_targets(params, content, layer_style, config, options.loss_weights())
    _, parts = nl.objective(image, params, targets, config)
    feats = vgg_features(params, image, config.columns)
    turned = [vgg_features(params, jnp.asarray(np.rot90(np.asarray(style), k).copy()),
                           config.columns) for k in range(4)]
    offsets, expected = np.asarray(targets.offsets), 0.0
    for i, name in enumerate(config.columns):
        out = _subsample_np(np.asarray(feats[name], np.float64), offsets[i], 64)
        if name == "relu1_1":
            assert out.shape[0] == 48 * 64
        pool = np.asarray(targets.layers[i].columns, np.float64)
        whole = np.concatenate([np.asarray(t[name]).reshape(-1, pool.shape[1]) for t in turned])
        np.testing.assert_allclose(np.asarray(targets.layers[i].centre), whole.mean(0),
                                   rtol=1e-4, atol=1e-6)
        gaps = np.sum(pool**2, 1)[:, None] + np.sum(whole**2, 1) - 2 * pool @ whole.T
        scale = np.sum(pool**2, 1).max()
        assert gaps.min(1).max() < 1e-6 * scale, f"{name}: a drawn feature is none of the style's"
        c = whole.mean(0)
        expected += np.mean(np.min(1.0 - _unit(out, c) @ _unit(pool, c).T, axis=1))
    np.testing.assert_allclose(float(parts["style"]), expected / len(config.columns), rtol=1e-4)
    # With the copies, each is read at twice the stride: as many features as the style alone.
    alone = nl.final_targets(params, content, nl.final_style(
        params, style, neighbour_config(_options(), tiny16_weights), jax.random.key(1)),
        neighbour_config(_options(), tiny16_weights), options.loss_weights())
    assert alone.layers[0].columns.shape == targets.layers[0].columns.shape == (48 * 64, 8)


def test_draws_follow_the_key(tiny16_weights):
    params, pre = tiny16_weights.params, tiny16_weights.preprocessing
    config = neighbour_config(_options(), tiny16_weights)
    content, style = (pre.to_model(jnp.asarray(smooth_image(96, 128, seed=s))) for s in (4, 5))
    targets = nl.final_targets(params, content, nl.final_style(params, style, config,
                                                               jax.random.key(1)),
                               config, _options().loss_weights())
    a, b = (nl.draw(params, targets, jax.random.key(7), config) for _ in range(2))
    for x, y in zip(jax.tree_util.tree_leaves((a.offsets, a.layers)),
                    jax.tree_util.tree_leaves((b.offsets, b.layers))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # relu1 at 128 px is read every 2nd row and column: one of 4 subsamples per draw.
    drawn = {np.asarray(nl.draw(params, targets, jax.random.key(k), config).layers[0].columns
                        ).tobytes() for k in range(8)}
    assert len(drawn) > 1


FINAL = dict(size=64, scales=(32, 64), iterations=6, progress_every=2, final_pass=6,
             redraw_every=2, style_rotations=True)
"""Two scales of 6 iterations and a last pass of 6 redrawn every 2 (at 64 px, the style's
rotated copies' relu1 is read every 2nd row and column); the flags say the same."""


@pytest.mark.slow
def test_final_pass_runs_redraws_and_resumes_in_process(tiny16_weights):
    content, style = smooth_image(52, 64, 0), smooth_image(48, 64, 1)
    saved = {}

    def keep(p):  # a callback changes no pixel
        saved.setdefault(p.iteration, p.run_state())

    full = stylize(content, [style], tiny16_weights, _options(**FINAL), callback=keep)
    assert len(full.history["total"]) == 18
    without = stylize(content, [style], tiny16_weights, _options(**{**FINAL, "final_pass": 0}))
    assert np.abs(full.image - without.image).mean() > 1e-4
    once = stylize(content, [style], tiny16_weights, _options(**{**FINAL, "redraw_every": 100}))
    assert np.abs(full.image - once.image).mean() > 1e-5, "the subsamples were not redrawn"
    for iteration in (8, 14):  # inside the last scale, and inside the last pass
        resumed = stylize(content, [style], tiny16_weights, _options(**FINAL),
                          resume=saved[iteration])
        np.testing.assert_array_equal(full.image, resumed.image)
        assert full.history == resumed.history


@pytest.mark.slow
def test_a_batch_runs_the_last_pass_as_each_image_alone(tiny16_weights):
    contents, style = [smooth_image(52, 64, s) for s in (0, 2)], smooth_image(48, 64, 1)
    options = _options(**FINAL, original_colors="none")  # the optimized pixels themselves
    batch = stylize_batch(contents, [style], tiny16_weights, options)
    for content, result in zip(contents, batch):
        alone = stylize(content, [style], tiny16_weights, options)
        # 18 iterations of vmapped and single arithmetic: a few matches flip, nothing more
        # (a mean gap of 1.9e-4 with the preset's history of 50, under 1e-4 with 100).
        gap = np.abs(result.image - alone.image)
        assert gap.mean() < 3e-4 and gap.max() < 0.01


@pytest.mark.slow
def test_interrupted_in_the_last_pass_and_resumed_command_makes_the_same_picture(
        tmp_path, tiny16_weights, monkeypatch):
    weights = save_converted(tiny16_weights, tmp_path / "tiny16.msgpack")
    files = [write_image(tmp_path / name, image) for name, image in (
        ("content.png", smooth_image(52, 64, 0)), ("style.png", smooth_image(48, 64, 1)))]
    content, style = map(str, files)

    def command(out):
        return ["stylize", content, style, "-o", str(tmp_path / out), "--weights", str(weights),
                "--preset", "neural-neighbour", "--size", "64", "--scales", "32,64",
                "--iterations", "6", "--progress-every", "2", "--checkpoint-every", "2",
                "--stop-change", "0", "--convolution", "direct", "--final-pass", "6",
                "--redraw-every", "2", "--style-rotations", "-q"]

    interrupted_and_resumed_equals_uninterrupted(command, tmp_path, monkeypatch, at=14)


def test_final_pass_matches_hypercolumns_with_several_styles_or_masks():
    """Its per-layer matching takes one style: with several, or with style masks, the last
    pass runs its iterations on the hypercolumn objective of the scales before it."""
    final = plan((32, 32, 3), _options(final_pass=2))[-1]
    assert final.final and layered(final, 1, False)
    assert not layered(final, 2, False) and not layered(final, 1, True)


@pytest.mark.slow
def test_final_pass_runs_with_several_styles_or_masks(tiny16_weights):
    content, style = smooth_image(32, 32, 0), smooth_image(24, 32, 1)
    options = _options(final_pass=2)
    for styles, masks in (([style, style[::-1]], None), ([style], [np.ones((32, 32), np.float32)])):
        result = stylize(content, styles, tiny16_weights, options, style_masks=masks)
        assert len(result.history["style"]) == 4 + 2
        assert np.isfinite(result.image).all()


def test_rotations_flag_has_three_values(tmp_path, capsys):
    """--style-rotations, --no-style-rotations, or neither (the preset's value); either on a
    preset without neighbours is refused by name when it turns them on."""
    from jaxstyle.cli import build_parser, main
    from jaxstyle.flags import from_flags
    from jaxstyle.options import parse_value

    assert parse_value("style_rotations", "false") is False  # the studio's and sweeps' reader

    base = ["stylize", "a.png", "b.png", "-o", "c.png", "--preset", "neural-neighbour"]
    parse = build_parser().parse_args
    for extra, expected in (([], True), (["--no-style-rotations"], False),
                            (["--style-rotations"], True)):
        assert from_flags(vars(parse(base + extra))).objective.style_rotations is expected
    assert from_flags(vars(parse(base[:5] + ["--no-style-rotations"]))).objective.style_rotations \
        is False
    content = write_image(tmp_path / "a.png", smooth_image(32, 32, 0))
    style = write_image(tmp_path / "b.png", smooth_image(32, 32, 1))
    code = main(["stylize", str(content), str(style), "-o", str(tmp_path / "c.png"),
                 "--style-rotations", "--weights", "random"])
    err = capsys.readouterr().err
    assert code != 0 and "--style-rotations: only with preset neural-neighbour" in err
    assert not (tmp_path / "c.png").exists()
