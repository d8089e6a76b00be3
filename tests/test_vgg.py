import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import he_params, nhwc

from jaxstyle import LAYERS, init_params, layer_names, vgg_features
from jaxstyle.vgg_layers import (
    ARCHITECTURES,
    depths_of,
    min_image_side,
    network_name,
    validate_layers,
)


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_every_activation_matches_torch(tiny_weights, reference, pooling):
    x = jnp.asarray(nhwc(reference["input_nchw"]))[0]
    out = vgg_features(tiny_weights.params, x, LAYERS, pooling)
    assert set(out) == set(LAYERS)
    for name in LAYERS:
        want = nhwc(reference[f"{pooling}/{name}"])[0]
        got = np.asarray(out[name])
        assert got.shape == want.shape, name
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-4, (name, rel)


def test_computes_only_up_to_deepest_layer(tiny_weights, reference):
    shallow = {k: v for k, v in tiny_weights.params.items() if k < "conv3"}
    x = jnp.asarray(nhwc(reference["input_nchw"]))[0]
    out = vgg_features(shallow, x, ["relu1_1", "relu2_2"])
    assert set(out) == {"relu1_1", "relu2_2"}
    with pytest.raises(ValueError, match="no parameters for conv3_1"):
        vgg_features(shallow, x, ["relu3_1"])


def test_widths_come_from_parameters():
    # Shapes alone: traced, never compiled (eagerly, every layer's ops compiled one by one).
    params = jax.eval_shape(lambda key: init_params(key, widths=(4, 8, 8, 16, 16)),
                            jax.random.key(0))
    out = jax.eval_shape(lambda p: vgg_features(p, jnp.zeros((32, 32, 3)), ["relu5_4", "pool5"]),
                         params)
    assert out["relu5_4"].shape == (2, 2, 16)
    assert out["pool5"].shape == (1, 1, 16)


def test_composes_with_jit_grad_vmap(tiny_weights, reference):
    x = jnp.asarray(nhwc(reference["input_nchw"]))[0]
    def single(img):
        return vgg_features(tiny_weights.params, img, ["relu3_1"])["relu3_1"].sum()

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


@pytest.mark.parametrize("shape", [(1, 4, 2, 256), (2, 8, 5, 256), (1, 1, 1, 256)])
def test_small_wide_maps_are_one_matrix_product_as_exact_as_the_convolution(shape):
    # On CPU a small map with 256+ channels is convolved as one product of its nine shifted
    # copies (XLA's direct convolution is slow there); value and input gradient against a
    # float64 convolution.
    from jaxstyle.vgg import _conv, conv3x3

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 256, 512)) / 48, jnp.float32)
    g = jnp.asarray(rng.normal(size=(*shape[:3], 512)), jnp.float32)
    hlo = jax.jit(conv3x3).lower(x, kernel).as_text()
    assert "convolution" not in hlo and "dot_general" in hlo
    y, vjp = jax.vjp(lambda x: conv3x3(x, kernel), x)
    with jax.enable_x64():
        y64, vjp64 = jax.vjp(lambda x: _conv(x, jnp.asarray(kernel, jnp.float64)),
                             jnp.asarray(x, jnp.float64))
        y64, dx64 = np.asarray(y64), np.asarray(vjp64(jnp.asarray(g, jnp.float64))[0])
    for got, want in ((y, y64), (vjp(g)[0], dx64)):
        assert np.abs(np.asarray(got) - want).max() / np.abs(want).max() < 1e-5


def test_large_or_narrow_maps_keep_xlas_convolution():
    from jaxstyle.vgg import conv3x3

    for x, kernel in ((jnp.zeros((1, 16, 16, 256)), jnp.zeros((3, 3, 256, 256))),
                      (jnp.zeros((1, 4, 2, 128)), jnp.zeros((3, 3, 128, 256)))):
        assert "convolution" in jax.jit(conv3x3).lower(x, kernel).as_text()


def test_validation(tiny_weights):
    with pytest.raises(ValueError, match="unknown layer 'relu6_1'"):
        validate_layers(["relu6_1"])
    with pytest.raises(ValueError, match="pooling"):
        vgg_features(tiny_weights.params, jnp.zeros((16, 16, 3)), ["relu1_1"], "median")
    with pytest.raises(ValueError, match=r"image: expected one image \[H, W, 3\].*jax.vmap"):
        vgg_features(tiny_weights.params, jnp.zeros((1, 16, 16, 3)), ["relu1_1"])


def test_min_image_side():
    assert min_image_side(["relu1_1"]) == 1
    assert min_image_side(["relu4_2", "relu5_1"]) == 16
    assert min_image_side(["pool5"]) == 32


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_vgg16_activations_match_torch(tiny16_weights, reference16, pooling):
    assert tiny16_weights.network == "VGG16"
    names = layer_names(ARCHITECTURES["vgg16"])
    assert "conv5_3" in names and "conv5_4" not in names and len(names) == 13 * 2 + 5
    x = jnp.asarray(nhwc(reference16["input_nchw"]))[0]
    out = vgg_features(tiny16_weights.params, x, names, pooling)
    for name in names:
        want = nhwc(reference16[f"{pooling}/{name}"])[0]
        rel = np.abs(np.asarray(out[name]) - want).max() / np.abs(want).max()
        assert rel < 1e-4, (name, rel)


def test_unknown_layer_lists_the_loaded_networks_names(tiny16_weights, tiny_weights):
    x = jnp.zeros((32, 32, 3))
    with pytest.raises(ValueError, match=r"unknown layer 'relu5_4' for VGG16; valid names are "
                                         r"conv1_1, conv1_2, conv2_1, .*conv5_3 \(and relu with "
                                         r"the same numbers\), pool1..pool5"):
        vgg_features(tiny16_weights.params, x, ["relu4_2", "relu5_4"])
    assert set(vgg_features(tiny_weights.params, x, ["relu5_4"])) == {"relu5_4"}
    # neural-style's default layers exist in every network of the family
    for depths in ARCHITECTURES.values():
        validate_layers(["relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
                        depths=depths)


@pytest.mark.parametrize("network", sorted(ARCHITECTURES))
def test_every_family_member_runs_from_its_parameters(network):
    # init_params' layout for each member (traced, not compiled: test_widths_come_from_parameters
    # runs init_params itself).
    params = he_params(widths=(4, 4, 8, 8, 8), depths=ARCHITECTURES[network])
    assert depths_of(params) == ARCHITECTURES[network]
    assert network_name(depths_of(params)) == network.upper()
    last = layer_names(ARCHITECTURES[network])[-2]  # the last ReLU: relu5_2 (VGG13) ...
    out = vgg_features(params, jnp.ones((32, 32, 3)), [last, "pool5"])
    assert out[last].shape == (2, 2, 8) and out["pool5"].shape == (1, 1, 8)
