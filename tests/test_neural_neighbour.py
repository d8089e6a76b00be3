"""The neural-neighbour route (`jaxstyle.neighbours`): its search against a NumPy brute force, a
tiny run with the preset, its seeding, and what it refuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import smooth_image

from jaxstyle import StyleOptions, stylize
from jaxstyle.color import oklab_colors, oklab_to_srgb, srgb_to_oklab
from jaxstyle.errors import JaxstyleError
from jaxstyle.neighbours import (
    grid_shape,
    hypercolumn_layers,
    hypercolumns,
    nearest_neighbours,
    neighbour_targets,
    objective,
    style_hypercolumns,
)
from jaxstyle.option_fields import OptionsError
from jaxstyle.presets import NEIGHBOUR_FINAL_PASS, NEIGHBOUR_HISTORY
from jaxstyle.problem import neighbour_config
from jaxstyle.vgg import vgg_features


def _brute_force(queries: np.ndarray, keys: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The nearest key of each query under centred cosine distance, all N x M pairs at once."""
    q = (queries - centre).astype(np.float64)
    k = (keys - centre).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    return np.argmin(1.0 - q @ k.T, axis=1)


@pytest.mark.parametrize("n, m, chunk", [(37, 23, 8), (64, 50, 64), (5, 40, 1000), (50, 7, 7)])
def test_chunked_search_equals_brute_force(n, m, chunk):
    rng = np.random.default_rng(n + m)
    queries = rng.normal(size=(n, 12)).astype(np.float32)
    keys = rng.normal(0.5, 1.0, size=(m, 12)).astype(np.float32)
    centre = keys.mean(axis=0)
    found = nearest_neighbours(jnp.asarray(queries), jnp.asarray(keys), jnp.asarray(centre),
                               chunk)
    assert found.shape == (n,) and found.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(found), _brute_force(queries, keys, centre))


def test_search_centres_by_the_given_centre():
    # Features far from the origin (ReLU activations are): uncentred, every pair looks alike
    # and the matches differ from the centred ones, which the search must return.
    rng = np.random.default_rng(1)
    queries = rng.normal(5.0, 1.0, size=(40, 6)).astype(np.float32)
    keys = rng.normal(5.0, 1.0, size=(30, 6)).astype(np.float32)
    centre = keys.mean(axis=0)
    centred = _brute_force(queries, keys, centre)
    assert (centred != _brute_force(queries, keys, np.zeros(6, np.float32))).any()
    found = nearest_neighbours(jnp.asarray(queries), jnp.asarray(keys), jnp.asarray(centre), 16)
    np.testing.assert_array_equal(np.asarray(found), centred)


def test_search_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="keys"):
        nearest_neighbours(jnp.zeros((3, 4)), jnp.zeros((5, 3)), jnp.zeros(4))
    with pytest.raises(ValueError, match="chunk"):
        nearest_neighbours(jnp.zeros((3, 4)), jnp.zeros((5, 4)), jnp.zeros(4), chunk=0)


def test_hypercolumn_layers_follow_the_network(tiny_weights, tiny16_weights):
    assert hypercolumn_layers(tiny16_weights.params) == (
        "relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3",
        "relu4_1", "relu4_2", "relu4_3")
    assert hypercolumn_layers(tiny_weights.params)[-1] == "relu4_4"


def test_hypercolumns_stack_layers_divided_by_width():
    feats = {"a": jnp.ones((8, 8, 2)) * 4.0, "b": jnp.ones((2, 2, 4)) * 8.0}
    columns = hypercolumns(feats, ("a", "b"), (4, 4))
    assert columns.shape == (16, 6)
    np.testing.assert_allclose(np.asarray(columns[0]), [2, 2, 2, 2, 2, 2], rtol=1e-6)


def test_style_samples_are_capped_and_seeded(tiny16_weights):
    options = StyleOptions(preset="neural-neighbour", convolution="direct", style_rotations=False)
    config = neighbour_config(options, tiny16_weights)
    style = jnp.asarray(tiny16_weights.preprocessing.to_model(jnp.asarray(smooth_image(40, 40))))
    whole = style_hypercolumns(tiny16_weights.params, [style], config, jax.random.key(0))
    assert whole.columns.shape[0] == 100  # a 10 x 10 grid, under the cap: all of it
    drawn = [style_hypercolumns(tiny16_weights.params, [style], config, jax.random.key(s), 30)
             for s in (0, 0, 1)]
    assert drawn[0].columns.shape == (30, whole.columns.shape[1])
    np.testing.assert_array_equal(drawn[0].columns, drawn[1].columns)
    assert not np.array_equal(drawn[0].columns, drawn[2].columns)
    np.testing.assert_array_equal(drawn[0].centre, whole.centre)


def _run(weights, **changes):
    """The preset at 48 px (one scale) for 12 iterations, without its rotations or last pass
    unless asked (four times the style's features to compute, in every test)."""
    options = StyleOptions(**{"preset": "neural-neighbour", "size": 48, "iterations": 12,
                              "stop_change": 0.0, "convolution": "direct", "final_pass": 0,
                              "style_rotations": False, **changes})
    content, style = smooth_image(48, 48, seed=1), smooth_image(40, 40, seed=2)
    return stylize(content, [style], weights, options)


def test_preset_runs_and_lowers_its_loss(tiny16_weights):
    result = _run(tiny16_weights)
    style = result.history["style"]
    assert len(style) == 12
    assert style[-1] < 0.9 * style[0]
    assert np.isfinite(result.image).all()


def test_preset_is_nnst_opt_by_default():
    """NNST-Opt's own defaults: rotations, a last pass of `NEIGHBOUR_FINAL_PASS` iterations
    and the OkLab colour step; each one a flag turns off, and no other preset has them."""
    options = StyleOptions(preset="neural-neighbour")
    assert options.objective.style_rotations is True
    assert options.objective.original_colors == "oklab"
    assert options.plan.final_pass == NEIGHBOUR_FINAL_PASS
    assert options.optimization.lbfgs_history == NEIGHBOUR_HISTORY
    assert options.performance.convolution == "direct"
    off = StyleOptions(preset="neural-neighbour", style_rotations=False, final_pass=0,
                       original_colors="none")
    assert (off.objective.style_rotations, off.plan.final_pass,
            off.objective.original_colors) == (False, 0, "none")
    for preset in ("balanced", "neural-style", "fast"):
        other = StyleOptions(preset=preset)
        assert (other.objective.style_rotations, other.plan.final_pass,
                other.objective.original_colors, other.optimization.lbfgs_history) == (
                    False, 0, "none", 100)


@pytest.mark.slow
def test_preset_runs_with_its_rotations_colours_and_last_pass(tiny16_weights):
    # A short last pass (50 cost 30 s here). Slow: compiling its stages from an empty cache
    # took 29 s of a fresh clone's quick suite (308 s on two cores).
    result = _run(tiny16_weights, final_pass=3, style_rotations=None, size=32, iterations=4)
    assert len(result.history["style"]) == 4 + 3
    assert np.isfinite(result.image).all()


def test_same_seed_same_image(tiny16_weights):
    first, second = (_run(tiny16_weights, content_alpha=0.5) for _ in range(2))
    np.testing.assert_array_equal(first.image, second.image)


def test_alpha_changes_the_result(tiny16_weights):
    # Guards that the knob reaches the objective (a traced value: the same compiled code).
    a, b = (_run(tiny16_weights, content_alpha=alpha) for alpha in (0.0, 1.0))
    assert np.abs(a.image - b.image).mean() > 1e-3


@pytest.mark.parametrize("changes, name", [
    ({"temporal_weight": 30.0}, "temporal_weight"),
    ({"tile_size": 256}, "tile_size"),
    ({"style_loss": "mean_cov"}, "style_loss"),
    ({"style_layers": ("relu1_1",)}, "style_layers"),
    ({"style_layer_weights": (1.0,) * 5}, "style_layer_weights"),
])
def test_refuses_what_does_not_compose(changes, name):
    with pytest.raises(OptionsError, match=f"^{name}: not with preset neural-neighbour: "):
        StyleOptions(preset="neural-neighbour", **changes)


def test_refuses_previous_frames(tiny16_weights):
    # The temporal video term, given as stylize's previous frames rather than by its weight.
    options = StyleOptions(preset="neural-neighbour", size=48, iterations=1,
                           convolution="direct")
    frame = (smooth_image(48, 48, 3), np.ones((48, 48), np.float32))
    with pytest.raises(JaxstyleError, match="^previous: not with preset neural-neighbour: "):
        stylize(smooth_image(48, 48), [smooth_image(40, 40)], tiny16_weights, options,
                previous=[frame])


@pytest.mark.slow
def test_a_batch_gives_each_image_its_own_run(tiny16_weights):
    from jaxstyle import stylize_batch

    options = StyleOptions(preset="neural-neighbour", size=48, iterations=3,
                           convolution="direct", final_pass=0)  # its batch: test_neighbour_passes
    contents, styles = [smooth_image(48, 48, 0), smooth_image(48, 48, 3)], [smooth_image(40, 40)]
    for content, result in zip(contents, stylize_batch(contents, styles, tiny16_weights, options)):
        alone = stylize(content, styles, tiny16_weights, options)
        np.testing.assert_allclose(result.image, alone.image, atol=1e-4)
        assert result.evaluations == alone.evaluations


@pytest.mark.slow
def test_preset_composes_with_the_pyramid_variable(tiny16_weights):
    result = _run(tiny16_weights, parametrization="pyramid")
    style = result.history["style"]
    assert style[-1] < 0.9 * style[0]


def test_style_term_at_alpha_0_is_the_mean_distance_to_the_nearest(tiny16_weights):
    # With alpha 0 the matches are searched from the picture's own hypercolumns: the style term
    # is mean_i min_j d(h_i, s_j), here against all N x M distances computed by NumPy.
    params, pre = tiny16_weights.params, tiny16_weights.preprocessing
    options = StyleOptions(preset="neural-neighbour", convolution="direct")
    config = neighbour_config(options, tiny16_weights)
    image, content, style_image = (pre.to_model(jnp.asarray(smooth_image(32, 40, seed=s)))
                                   for s in (3, 4, 5))
    style = style_hypercolumns(params, [style_image], config, jax.random.key(0))
    targets = neighbour_targets(params, content, [style], config, 0.0, options.loss_weights())
    _, parts = objective(image, params, targets, config)
    feats = vgg_features(params, image, config.columns)
    h = np.asarray(hypercolumns(feats, config.columns, grid_shape(image.shape)), np.float64)
    s, c = np.asarray(style.columns, np.float64), np.asarray(style.centre, np.float64)
    unit = lambda a: (a - c) / np.linalg.norm(a - c, axis=1, keepdims=True)
    expected = np.mean(np.min(1.0 - unit(h) @ unit(s).T, axis=1))
    np.testing.assert_allclose(float(parts["style"]), expected, rtol=1e-4)


def test_oklab_of_srgb_red_white_and_black():
    # Ottosson's published OkLab coordinates of sRGB red; white is L 1, black 0, both grey.
    lab = np.asarray(srgb_to_oklab(jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0, 0, 0]])))
    np.testing.assert_allclose(lab[0], [0.627955, 0.224863, 0.125846], atol=2e-5)
    np.testing.assert_allclose(lab[1:], [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], atol=2e-5)
    rgb = np.random.default_rng(0).uniform(size=(64, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(oklab_to_srgb(srgb_to_oklab(jnp.asarray(rgb)))), rgb,
                               atol=1e-4)


def test_oklab_colors_keep_lightness_and_take_the_style_palette():
    rng = np.random.default_rng(1)
    output = jnp.asarray(rng.uniform(0.3, 0.7, (16, 16, 3)).astype(np.float32))
    content = jnp.asarray(smooth_image(16, 16, seed=2))
    # Greys from dark to light (a lightness range wider than the output's, which clipping to
    # the palette's range would otherwise change), tinted a little yellow (b above 0) and muted
    # so that no colour leaves sRGB's gamut, whose clipping would change lightness too.
    grey = rng.uniform(0.1, 0.95, (20, 20, 1))
    tint = grey * np.array([1.0, 0.97, 0.85]) + rng.normal(0, 0.02, (20, 20, 3))
    style = jnp.asarray(np.clip(tint, 0, 1).astype(np.float32))
    recoloured = srgb_to_oklab(oklab_colors(output, content, [style]))
    np.testing.assert_allclose(np.asarray(recoloured[..., 0]),
                               np.asarray(srgb_to_oklab(output)[..., 0]), atol=2e-3)
    palette = np.asarray(srgb_to_oklab(style)).reshape(-1, 3)
    chroma = np.asarray(recoloured).reshape(-1, 3)[:, 1:]
    np.testing.assert_allclose(chroma.mean(0), palette[:, 1:].mean(0), atol=1e-3)
    np.testing.assert_allclose(chroma.std(0), palette[:, 1:].std(0), rtol=0.1)
    with pytest.raises(ValueError, match="content"):
        oklab_colors(output, content[:8], [style])


def test_preset_with_oklab_colors(tiny16_weights):
    result = _run(tiny16_weights, iterations=2)  # the preset's default
    plain = _run(tiny16_weights, original_colors="none", iterations=2)
    assert np.abs(result.image - plain.image).mean() > 1e-3  # the step ran (finish)
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0


@pytest.mark.slow
def test_optional_self_similarity_content_term(tiny16_weights):
    result = _run(tiny16_weights, content_weight=1.0, content_loss="self_similarity",
                  iterations=3)
    assert result.history["content"][0] > 0
    assert result.losses["total"] == pytest.approx(
        result.losses["style"] + result.losses["content"] + result.losses["tv"], rel=1e-5)
