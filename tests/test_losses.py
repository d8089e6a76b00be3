import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import loss_config, nhwc

from jaxstyle import (
    Targets,
    content_targets,
    gram_matrix,
    objective,
    style_loss,
    style_targets,
    tv_loss,
)


def _image(reference, key):
    return jnp.asarray(nhwc(reference[f"objective/{key}_nchw"])[0])


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def test_objective_matches_torch(tiny_weights, reference):
    w_c, w_s, w_tv = (float(v) for v in reference["objective/weights"])
    config = loss_config(content_weight=w_c, style_weight=w_s, tv_weight=w_tv)
    params = tiny_weights.params
    targets = Targets(content_targets(params, _image(reference, "content"), config),
                      (style_targets(params, [_image(reference, "style")], config),))
    (total, parts), grad = jax.value_and_grad(objective, has_aux=True)(
        _image(reference, "image"), params, targets, config
    )
    assert _rel(parts["content"], reference["objective/content_loss"]) < 1e-4
    assert _rel(parts["tv"], reference["objective/tv_loss"]) < 1e-4
    for layer, want in zip(config.style_layers, reference["objective/style_losses"]):
        assert _rel(parts[f"style/{layer}"], want) < 1e-4, layer
    assert _rel(total, reference["objective/total"]) < 1e-4
    assert _rel(grad, nhwc(reference["objective/grad_nchw"])[0]) < 1e-4


def test_gram_matrix_against_numpy():
    f = np.random.default_rng(0).normal(size=(5, 7, 4)).astype(np.float32)
    flat = f.reshape(-1, 4)
    np.testing.assert_allclose(gram_matrix(jnp.asarray(f)), flat.T @ flat / f.size, rtol=1e-5)


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
    base = loss_config(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))
    weighted = loss_config(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"),
                          style_layer_weights=(2.0, 0.0))
    targets = Targets(content_targets(tiny_weights.params, x, base),
                      (style_targets(tiny_weights.params, [s], base),))
    _, p1 = objective(x, tiny_weights.params, targets, base)
    _, p2 = objective(x, tiny_weights.params, targets, weighted)
    np.testing.assert_allclose(p2["style/relu1_1"], 2 * p1["style/relu1_1"], rtol=1e-6)
    assert float(p2["style/relu2_1"]) == 0.0


def test_validation():
    with pytest.raises(ValueError, match="style_weight"):
        loss_config(style_weight=-1.0)
    with pytest.raises(ValueError, match="unknown layer"):
        loss_config(content_layers=("relu4_9",))
    with pytest.raises(ValueError, match="style_layer_weights"):
        loss_config(style_layer_weights=(1.0,))
    with pytest.raises(ValueError, match="features"):
        gram_matrix(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="target_gram"):
        style_loss(jnp.zeros((4, 4, 3)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="blend_weights"):
        style_targets({}, [jnp.zeros((8, 8, 3))], loss_config(), [1.0, 2.0])
