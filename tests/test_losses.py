import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import loss_config, loss_weights, nhwc

from jaxstyle import (
    Targets,
    content_targets,
    gram_distance,
    gram_statistics,
    objective,
    style_targets,
    tv_loss,
    vgg_features,
)


def _image(reference, key):
    return jnp.asarray(nhwc(reference[f"objective/{key}_nchw"])[0])


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def test_objective_matches_torch(tiny_weights, reference):
    w_c, w_s, w_tv = (float(v) for v in reference["objective/weights"])
    config = loss_config()
    params = tiny_weights.params
    targets = Targets(content_targets(params, _image(reference, "content"), config),
                      (style_targets(params, [_image(reference, "style")], config),),
                      weights=loss_weights(config, content_weight=w_c, style_weight=w_s,
                                           tv_weight=w_tv))
    (total, parts), grad = jax.value_and_grad(objective, has_aux=True)(
        _image(reference, "image"), params, targets, config
    )
    assert _rel(parts["content"], reference["objective/content_loss"]) < 1e-4
    assert _rel(parts["tv"], reference["objective/tv_loss"]) < 1e-4
    for layer, want in zip(config.style_layers, reference["objective/style_losses"]):
        assert _rel(parts[f"style/{layer}"], want) < 1e-4, layer
    assert _rel(total, reference["objective/total"]) < 1e-4
    assert _rel(grad, nhwc(reference["objective/grad_nchw"])[0]) < 1e-4


def test_gram_statistics_and_distance_against_numpy():
    f = np.random.default_rng(0).normal(size=(5, 7, 4)).astype(np.float32)
    flat = f.reshape(-1, 4)
    gram = flat.T @ flat / f.size
    np.testing.assert_allclose(gram_statistics(jnp.asarray(f)), gram, rtol=1e-5)
    np.testing.assert_allclose(gram_distance(jnp.asarray(f), jnp.eye(4)),
                               np.mean((gram - np.eye(4)) ** 2), rtol=1e-5)


def test_tv_loss_against_numpy():
    x = np.random.default_rng(1).normal(size=(6, 5, 3)).astype(np.float32)
    want = np.abs(np.diff(x, axis=0)).sum() + np.abs(np.diff(x, axis=1)).sum()
    np.testing.assert_allclose(tv_loss(jnp.asarray(x)), want, rtol=1e-5)


def test_blend_weights_give_weighted_gram(tiny_weights):
    config = loss_config(style_layers=("relu1_1", "relu2_1"))
    a = jax.random.uniform(jax.random.key(0), (24, 24, 3))
    b = jax.random.uniform(jax.random.key(1), (32, 16, 3))
    blended = style_targets(tiny_weights.params, [a, b], config, [3.0, 1.0])
    only_a = style_targets(tiny_weights.params, [a], config)
    only_b = style_targets(tiny_weights.params, [b], config)
    for layer in config.style_layers:
        np.testing.assert_allclose(
            blended[layer], 0.75 * only_a[layer] + 0.25 * only_b[layer], rtol=1e-5, atol=1e-7
        )


def test_per_layer_style_weights_scale_each_layer(tiny_weights):
    x = jax.random.uniform(jax.random.key(2), (20, 20, 3))
    s = jax.random.uniform(jax.random.key(3), (20, 20, 3))
    config = loss_config(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))
    targets = Targets(content_targets(tiny_weights.params, x, config),
                      (style_targets(tiny_weights.params, [s], config),),
                      weights=loss_weights(config))
    weighted = targets._replace(weights=loss_weights(config, style_layer_weights=(2.0, 0.0)))
    _, p1 = objective(x, tiny_weights.params, targets, config)
    _, p2 = objective(x, tiny_weights.params, weighted, config)
    np.testing.assert_allclose(p2["style/relu1_1"], 2 * p1["style/relu1_1"], rtol=1e-6)
    assert float(p2["style/relu2_1"]) == 0.0


def test_validation():
    with pytest.raises(ValueError, match="style_weight"):
        loss_weights(loss_config(), style_weight=-1.0)
    with pytest.raises(ValueError, match="unknown layer"):
        loss_config(content_layers=("relu4_9",))
    with pytest.raises(ValueError, match="style_layer_weights"):
        loss_weights(loss_config(), style_layer_weights=(1.0,))
    config = loss_config(style_layers=("relu1_1",))
    targets = Targets({}, ({"relu1_1": jnp.zeros((3, 3))},))
    with pytest.raises(ValueError, match="targets: no weights"):
        objective(jnp.zeros((8, 8, 3)), {}, targets, config)
    with pytest.raises(ValueError, match="weights.style_layers"):
        objective(jnp.zeros((8, 8, 3)), {}, targets._replace(weights=loss_weights(loss_config())),
                  config)
    with pytest.raises(ValueError, match="features"):
        gram_statistics(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="features"):
        gram_distance(jnp.zeros((2, 3)), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"target: shape \(2, 2\), expected \(3, 3\)"):
        gram_distance(jnp.zeros((4, 4, 3)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="blend_weights"):
        style_targets({}, [jnp.zeros((8, 8, 3))], loss_config(), [1.0, 2.0])


def test_loss_config_and_weights_default_to_the_balanced_preset():
    """``LossConfig()`` and ``LossWeights.create(LossConfig())`` need no options: they are the
    balanced preset's (the direct convolution standing for its 'auto', a model range of 1),
    field by field, and the two stay equal when either changes."""
    from jaxstyle import LossConfig, LossWeights, StyleOptions
    from jaxstyle.style_losses import GRAM

    options = StyleOptions()
    assert options.preset == "balanced"
    config = LossConfig()
    assert config == options.loss_config(convolution="direct")
    assert (config.style_loss, config.weight_normalization, config.model_range) == (
        GRAM, "relative", 1.0)
    for made, preset in zip(LossWeights.create(config), options.loss_weights()):
        np.testing.assert_array_equal(made, preset)
    assert float(LossWeights.create(config).style) == 20.0  # weight 1 x strength 20


def _scaled_network(params: dict, k: float) -> dict:
    """The same network with every activation multiplied by k: the first convolution's kernel
    and every bias times k (ReLU and pooling commute with a positive factor)."""
    first = min(params, key=lambda name: (int(name.split("_")[0][4:]), int(name.split("_")[1])))
    return {name: {"kernel": layer["kernel"] * (k if name == first else 1.0),
                   "bias": layer["bias"] * k} for name, layer in params.items()}


def test_relative_objective_ignores_the_networks_activation_scale(tiny_weights):
    content = jax.random.uniform(jax.random.key(0), (24, 24, 3))
    style = jax.random.uniform(jax.random.key(1), (24, 24, 3))
    image = jax.random.uniform(jax.random.key(2), (24, 24, 3))
    relative = loss_config("balanced", content_layers=("relu2_1",),
                           style_layers=("relu1_1", "relu2_1"))
    neural = loss_config(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))
    weights = {"relative": loss_weights(relative, "balanced", tv_weight=0.0),
               "neural": loss_weights(neural)}
    values = {}
    for k in (1.0, 40.0):
        params = _scaled_network(tiny_weights.params, k)
        for name, config in (("relative", relative), ("neural", neural)):
            targets = Targets(content_targets(params, content, config),
                              (style_targets(params, [style], config),), weights=weights[name])
            values[name, k] = objective(image, params, targets, config)[1]
    for part in ("content", "style"):
        np.testing.assert_allclose(values["relative", 40.0][part], values["relative", 1.0][part],
                                   rtol=1e-4)
    # neural-style's terms grow as k^2 (content) and k^4 (Gram): its weights depend on it.
    np.testing.assert_allclose(values["neural", 40.0]["content"],
                               1600 * values["neural", 1.0]["content"], rtol=1e-3)


def test_relative_objective_against_numpy(tiny_weights):
    params = tiny_weights.params
    content, style, image = (np.asarray(jax.random.uniform(jax.random.key(i), (20, 28, 3)))
                             for i in range(3))
    config = loss_config("balanced", content_layers=("relu2_1", "relu3_1"),
                         style_layers=("relu1_1", "relu2_1"), model_range=4.0)
    weights = loss_weights(config, style_layer_weights=(1.0, 3.0), content_weight=2.0,
                           style_weight=7.0, tv_weight=0.5)
    targets = Targets(content_targets(params, jnp.asarray(content), config),
                      (style_targets(params, [jnp.asarray(style)], config),), weights=weights)
    total, parts = objective(jnp.asarray(image), params, targets, config)
    batch = {name: np.asarray(f, np.float64) for name, f in jax.vmap(
        lambda one: vgg_features(params, one, ("relu1_1", "relu2_1", "relu3_1"), "max"))(
        jnp.asarray(np.stack([image, content, style]))).items()}

    def gram(f):
        flat = f.reshape(-1, f.shape[-1])
        return flat.T @ flat / f.size

    want_content = 2.0 * np.mean([np.mean((batch[n][0] - batch[n][1]) ** 2)
                                  / np.mean(batch[n][1] ** 2) for n in ("relu2_1", "relu3_1")])
    distance = [np.mean((gram(batch[n][0]) - gram(batch[n][2])) ** 2)
                for n in ("relu1_1", "relu2_1")]
    energy = [np.mean(gram(batch[n][2]) ** 2) for n in ("relu1_1", "relu2_1")]
    # Without the photo's own distance in the targets, the divisor is the targets' energy.
    want_style = 7.0 * (distance[0] + 3.0 * distance[1]) / (energy[0] + 3.0 * energy[1])
    x = image.astype(np.float64)
    want_tv = 0.5 * (np.abs(np.diff(x, axis=0)).sum() + np.abs(np.diff(x, axis=1)).sum()) / (
        x.size * 4.0)
    np.testing.assert_allclose(parts["content"], want_content, rtol=1e-4)
    np.testing.assert_allclose(parts["style"], want_style, rtol=1e-4)
    np.testing.assert_allclose(parts["tv"], want_tv, rtol=1e-4)
    np.testing.assert_allclose(total, want_content + want_style + want_tv, rtol=1e-4)


@pytest.mark.parametrize("name", ["gram", "mean_cov", "sliced_wasserstein", "gram_histogram"])
def test_each_style_loss_energy_is_its_distance_from_a_blank_map(name):
    from jaxstyle.style_losses import style_loss_named

    loss = style_loss_named(name, seed=0)
    features = jax.random.uniform(jax.random.key(4), (12, 10, 6))
    target = loss.prepare(loss.statistics(features, None))
    blank = loss.distance(jnp.zeros((64, 64, 6)), target, None)
    if name == "sliced_wasserstein":  # the energy spans the whole bank, the distance one draw
        blank = jnp.mean(jnp.square(target["quantiles"]))
    np.testing.assert_allclose(loss.target_energy(target, 6), blank, rtol=2e-3)


def test_relative_style_term_is_the_fraction_of_the_photos_distance_left(tiny_weights):
    from jaxstyle import region_targets

    params = tiny_weights.params
    content, style = (jax.random.uniform(jax.random.key(i), (24, 24, 3)) for i in (5, 6))
    config = loss_config("balanced", content_layers=("relu2_1",),
                         style_layers=("relu1_1", "relu2_1"))
    targets = region_targets(params, content, [style], config,
                             weights=loss_weights(config, "balanced", style_weight=4.0))
    _, at_photo = objective(content, params, targets, config)
    np.testing.assert_allclose(at_photo["style"], 4.0, rtol=1e-5)  # the photo: all of it left
    _, at_style = objective(style, params, targets, config)
    assert float(at_style["style"]) < 1e-4  # the style image itself: none left
    assert float(at_photo["content"]) == 0.0
    # The photo's distance is weighted by the layers' weights as the output's is.
    layered = targets._replace(weights=loss_weights(config, "balanced", style_weight=4.0,
                                                    style_layer_weights=(1.0, 3.0)))
    np.testing.assert_allclose(objective(content, params, layered, config)[1]["style"], 4.0,
                               rtol=1e-5)
