"""Winograd convolutions against XLA's direct convolution, computed in float64 as the reference."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import he_params, loss_config

from jaxstyle import vgg, vgg_features, winograd
from jaxstyle.vgg import _conv, _winograd_tile, conv3x3


def _reference(x, kernel):
    with jax.enable_x64():
        return np.asarray(_conv(jnp.asarray(x, jnp.float64), jnp.asarray(kernel, jnp.float64)))


@pytest.mark.parametrize("tile, tolerance", [(2, 1e-5), (4, 1e-4)])
@pytest.mark.parametrize("shape", [(1, 9, 7), (2, 4, 4), (1, 1, 3), (1, 13, 5)])
def test_matches_direct_convolution(tile, tolerance, shape):
    n, h, w = shape
    x = np.random.default_rng(0).normal(size=(n, h, w, 6)).astype(np.float32)
    kernel = np.random.default_rng(1).normal(size=(3, 3, 6, 5)).astype(np.float32)
    got = np.asarray(jax.jit(winograd.conv3x3, static_argnums=2)(x, kernel, tile))
    want = _reference(x, kernel)
    assert got.shape == want.shape
    assert np.abs(got - want).max() / np.abs(want).max() < tolerance


def test_kernel_transform_is_g_g_gt():
    kernel = np.random.default_rng(2).normal(size=(3, 3, 2, 3)).astype(np.float32)
    _, g, _ = winograd._MATRICES[4]
    want = np.einsum("pi,ijco,qj->pqco", g, kernel, g).reshape(36, 2, 3)
    np.testing.assert_allclose(winograd.transform_kernel(kernel, 4), want, rtol=1e-6, atol=1e-6)


def test_bad_tile():
    with pytest.raises(ValueError, match="tile: expected one of"):
        winograd.conv3x3(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), 3)


def test_tile_choice():
    wide = jnp.zeros((3, 3, 256, 512))
    assert _winograd_tile(jnp.zeros((1, 40, 64, 256)), wide) == 4
    assert _winograd_tile(jnp.zeros((1, 21, 32, 256)), wide) == 2
    assert _winograd_tile(jnp.zeros((1, 40, 64, 128)), jnp.zeros((3, 3, 128, 256))) == 4
    assert _winograd_tile(jnp.zeros((1, 40, 64, 64)), jnp.zeros((3, 3, 64, 128))) is None
    assert _winograd_tile(jnp.zeros((1, 40, 64, 256), jnp.bfloat16), wide) == 2
    assert _winograd_tile(jnp.zeros((1, 40, 64, 128), jnp.bfloat16), wide[:, :, :128]) is None
    assert _winograd_tile(jnp.zeros((1, 40, 64, 256), jnp.float16), wide) is None


def _wide_layer(seed, height, width, dtype):
    """The seeded generator, an input [1, height, width, 256] and a 256 -> 256 kernel: wide
    enough for "winograd" to switch on."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(1, height, width, 256)), dtype)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 256, 256)) / 48, dtype)
    return rng, x, kernel


def _winograd_hlo(x, kernel):
    return jax.jit(lambda x, k: conv3x3(x, k, "winograd")).lower(x, kernel).as_text()


def test_bfloat16_products_are_bfloat16_and_as_accurate_as_bfloat16_itself():
    # F(2x2) with float32 transforms and bfloat16 products: within bfloat16's own error (its
    # 8-bit significand: 2^-8 = 4e-3 per operand), forward and input gradient alike.
    rng, x, kernel = _wide_layer(4, 12, 10, jnp.bfloat16)
    hlo = _winograd_hlo(x, kernel)
    if jax.default_backend() == "cpu":
        assert "convolution" not in hlo
        assert re.search(r"dot_general.*bf16.*bf16.*-> tensor<[0-9x]*xf32>", hlo)
    y = conv3x3(x, kernel, "winograd")
    assert y.dtype == jnp.bfloat16
    want = _reference(x.astype(np.float32), kernel.astype(np.float32))
    error = np.abs(np.asarray(y, np.float32) - want).max() / np.abs(want).max()
    assert 1e-4 < error < 1e-2  # bfloat16's rounding, but no more
    g = jnp.asarray(rng.normal(size=y.shape), jnp.bfloat16)
    dx = jax.vjp(lambda x: conv3x3(x, kernel, "winograd"), x)[1](g)[0]
    want_dx = jax.vjp(lambda x: _conv(x, kernel.astype(np.float32)),
                      x.astype(np.float32))[1](g.astype(np.float32))[0]
    error = float(jnp.abs(dx.astype(np.float32) - want_dx).max() / jnp.abs(want_dx).max())
    assert error < 1e-2


def test_wide_layers_run_winograd_on_cpu_and_match_direct():
    # 256 channels is where "winograd" switches on; value and both gradients must still agree.
    _, x, kernel = _wide_layer(3, 34, 36, jnp.float32)
    hlo = _winograd_hlo(x, kernel)
    if jax.default_backend() == "cpu":
        assert "convolution" not in hlo and "dot_general" in hlo
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv3x3(x, k, conv)))
    value, grads = jax.jit(jax.value_and_grad(loss("winograd"), (0, 1)))(x, kernel)
    want_value, want_grads = jax.jit(jax.value_and_grad(loss("direct"), (0, 1)))(x, kernel)
    np.testing.assert_allclose(value, want_value, rtol=1e-4)
    for got, want in zip(grads, want_grads):
        assert float(jnp.abs(got - want).max() / jnp.abs(want).max()) < 1e-4
    pair = jnp.concatenate([x, -x])
    batched = jax.jit(jax.vmap(lambda one: conv3x3(one[None], kernel, "winograd")[0]))(pair)
    together = conv3x3(pair, kernel, "winograd")
    assert float(jnp.abs(batched - together).max() / jnp.abs(together).max()) < 1e-5


def test_vmap_and_validation(tiny_weights):
    x = jnp.ones((2, 8, 8, 3))
    out = jax.vmap(lambda b: vgg_features(tiny_weights.params, b, ["relu2_1"],
                                          convolution="direct")["relu2_1"])(x)
    assert out.shape == (2, 4, 4, tiny_weights.params["conv2_1"]["kernel"].shape[-1])
    with pytest.raises(ValueError, match="convolution: expected one of"):
        vgg_features(tiny_weights.params, x[0], ["relu1_1"], convolution="fft")
    with pytest.raises(ValueError, match="convolution: expected one of"):
        loss_config(convolution="fft")


@pytest.mark.slow
def test_kernels_transformed_once_give_the_same_features_and_gradients():
    # What the optimizer's loop runs (`transform_kernels`, done once per stage) against the
    # kernels transformed inside every call: the same numbers, value and image gradient.
    params = he_params(widths=(8, 16, 128, 256, 256), depths=(2, 2, 3, 3, 3))
    image = jax.random.uniform(jax.random.key(1), (128, 160, 3))
    layers = ("relu1_1", "relu3_1", "relu4_2", "relu5_1")

    def loss(p, x, dtype):
        feats = vgg_features(p, x.astype(dtype), layers, convolution="winograd")
        return sum(jnp.sum(jnp.sin(f.astype(jnp.float32))) for f in feats.values())

    # Float32 from 128 channels (conv3_1 is 16 -> 128: XLA's), bfloat16 from 256; F(4x4) at
    # 32 px and more (conv3_x at 32x40), F(2x2) below.
    expected = {jnp.float32: {"conv3_2": 36, "conv3_3": 36, "conv4_1": 16, "conv4_2": 16,
                              "conv4_3": 16, "conv5_1": 16},
                jnp.bfloat16: {"conv4_2": 16, "conv4_3": 16, "conv5_1": 16}}
    # One compiled program per dtype and layout, for the image's gradient and the kernels'.
    value_and_grad = jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=2)
    for dtype, want in expected.items():
        transformed = vgg.transform_kernels(params, image.shape, layers, "winograd", dtype)
        if jax.default_backend() != "cpu":
            assert transformed == params
            continue
        assert {name: p["winograd_forward"].shape[0] for name, p in transformed.items()
                if "winograd_forward" in p} == want
        value, (wrt_params, grad) = value_and_grad(params, image, dtype)
        value_t, (wrt_transformed, grad_t) = value_and_grad(transformed, image, dtype)
        np.testing.assert_allclose(value_t, value, rtol=1e-6)
        np.testing.assert_allclose(grad_t, grad, rtol=1e-6, atol=1e-6 * float(
            jnp.abs(grad).max()))
        # They are what runs: the per-call transform is gone, and a wrong copy changes the
        # features.
        jaxpr = str(jax.make_jaxpr(jax.grad(loss, 1), static_argnums=2)(transformed, image,
                                                                         dtype))
        assert "_winograd_kernel" not in jaxpr
        broken = {**transformed, "conv4_2": {**transformed["conv4_2"], "winograd_forward":
                                             jnp.zeros_like(transformed["conv4_2"]["winograd_forward"])}}
        assert float(value_and_grad(broken, image, dtype)[0]) != float(value)
        # The kernels' own gradient is unchanged; none reaches the transformed copies.
        np.testing.assert_allclose(wrt_transformed["conv4_2"]["kernel"],
                                   wrt_params["conv4_2"]["kernel"], rtol=1e-5, atol=1e-6)
        assert not np.any(wrt_transformed["conv4_2"]["winograd_forward"])
    # Transformed for another size (other tiles): the inline transform takes over.
    elsewhere = vgg.transform_kernels(params, (40, 48, 3), layers)
    np.testing.assert_allclose(loss(elsewhere, image, jnp.float32),
                               loss(params, image, jnp.float32), rtol=1e-6)
    # For XLA's convolution, each input gradient's kernel flipped once: the same values,
    # exactly, and the flipped copy is what the gradient uses.
    flipped = vgg.transform_kernels(params, image.shape, layers, "direct")
    assert set(flipped["conv1_1"]) == {"kernel", "bias", "flipped"}

    def direct_loss(p, x):
        return jnp.sum(vgg.vgg_features(p, x, layers, convolution="direct")["relu4_2"] ** 2)

    direct_grad = jax.grad(direct_loss, 1)
    assert np.array_equal(direct_grad(flipped, image), direct_grad(params, image))
    assert "transpose" not in str(jax.make_jaxpr(direct_grad)(flipped, image))
    broken = {**flipped, "conv1_1": {**flipped["conv1_1"],
                                     "flipped": jnp.zeros_like(flipped["conv1_1"]["flipped"])}}
    assert not np.array_equal(direct_grad(broken, image), direct_grad(params, image))
