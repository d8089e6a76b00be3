import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import nhwc

from jaxstyle import LAYERS, init_params, vgg19_features
from jaxstyle.vgg import min_image_side, validate_layers


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_every_activation_matches_torch(tiny_weights, reference, pooling):
    x = jnp.asarray(nhwc(reference["input_nchw"]))
    out = vgg19_features(tiny_weights.params, x, LAYERS, pooling)
    assert set(out) == set(LAYERS)
    for name in LAYERS:
        want = nhwc(reference[f"{pooling}/{name}"])
        got = np.asarray(out[name])
        assert got.shape == want.shape, name
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-4, (name, rel)


def test_computes_only_up_to_deepest_layer(tiny_weights, reference):
    shallow = {k: v for k, v in tiny_weights.params.items() if k < "conv3"}
    x = jnp.asarray(nhwc(reference["input_nchw"]))
    out = vgg19_features(shallow, x, ["relu1_1", "relu2_2"])
    assert set(out) == {"relu1_1", "relu2_2"}
    with pytest.raises(ValueError, match="no parameters for conv3_1"):
        vgg19_features(shallow, x, ["relu3_1"])


def test_widths_come_from_parameters():
    params = init_params(jax.random.key(0), widths=(4, 8, 8, 16, 16))
    out = vgg19_features(params, jnp.zeros((2, 32, 32, 3)), ["relu5_4", "pool5"])
    assert out["relu5_4"].shape == (2, 2, 2, 16)
    assert out["pool5"].shape == (2, 1, 1, 16)


def test_composes_with_jit_grad_vmap(tiny_weights, reference):
    x = jnp.asarray(nhwc(reference["input_nchw"]))[0]
    single = lambda img: vgg19_features(tiny_weights.params, img[None], ["relu3_1"])["relu3_1"].sum()
    batch = jnp.stack([x, 0.5 * x])
    per_image = jax.jit(jax.vmap(jax.grad(single)))(batch)
    assert per_image.shape == batch.shape
    np.testing.assert_allclose(per_image[1], jax.grad(single)(0.5 * x), rtol=1e-5, atol=1e-6)


def test_custom_conv_gradient_matches_autodiff(tiny_weights):
    from jaxstyle.vgg import _conv, conv3x3

    kernel = tiny_weights.params["conv2_1"]["kernel"]
    x = jax.random.normal(jax.random.key(1), (1, 9, 7, kernel.shape[2]))
    ours = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv3x3(x, k))), (0, 1))(x, kernel)
    ref = jax.grad(lambda x, k: jnp.sum(jnp.sin(_conv(x, k))), (0, 1))(x, kernel)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_validation(tiny_weights):
    with pytest.raises(ValueError, match="unknown layer 'relu6_1'"):
        validate_layers(["relu6_1"])
    with pytest.raises(ValueError, match="pooling"):
        vgg19_features(tiny_weights.params, jnp.zeros((1, 16, 16, 3)), ["relu1_1"], "median")
    with pytest.raises(ValueError, match=r"x: expected a batch \[N, H, W, 3\]"):
        vgg19_features(tiny_weights.params, jnp.zeros((16, 16, 3)), ["relu1_1"])


def test_min_image_side():
    assert min_image_side(["relu1_1"]) == 1
    assert min_image_side(["relu4_2", "relu5_1"]) == 16
    assert min_image_side(["pool5"]) == 32
