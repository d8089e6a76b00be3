"""VGG19's convolutional part in Flax Linen, with every layer tapped by its neural-style name.

The network is ``features`` of torchvision's VGG19: sixteen 3x3 convolutions (zero padding 1),
each followed by a ReLU, and a 2x2 stride-2 pooling after each of the five blocks. Channel widths
are read from the parameters, so the real network and narrower test fixtures run the same code.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxstyle import winograd

BLOCK_DEPTHS = (2, 2, 4, 4, 4)
VGG19_WIDTHS = (64, 128, 256, 512, 512)
POOLINGS = ("max", "avg")
CONVOLUTIONS = ("direct", "winograd")
"""How 3x3 convolutions run: "direct" is XLA's convolution everywhere; "winograd" uses Winograd's
F(4x4, 3x3) or F(2x2, 3x3) (`jaxstyle.winograd`) for float32 layers with 256 or more channels on
CPUs, where it needs 4x (2.25x) fewer multiplications, and XLA's convolution elsewhere (narrow
layers, bfloat16, GPUs and TPUs). On a 2-core CPU at 512 px it takes a quarter off each
evaluation, but a first run at a new size took ~50 s longer to start (XLA compiles each Winograd
layer in ~2 s), so it pays off on long runs (and on repeated ones, with the persistent
compilation cache)."""

CONV_LAYERS: tuple[str, ...] = tuple(
    f"conv{block}_{i}" for block, depth in enumerate(BLOCK_DEPTHS, 1) for i in range(1, depth + 1)
)


def _layer_names() -> tuple[str, ...]:
    names = []
    for block, depth in enumerate(BLOCK_DEPTHS, 1):
        for i in range(1, depth + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


LAYERS: tuple[str, ...] = _layer_names()
"""Every tap in network order: conv1_1, relu1_1, ..., relu5_4, pool5."""

_LAYER_INDEX = {name: i for i, name in enumerate(LAYERS)}


def validate_layers(layers: Sequence[str], argument: str = "layers") -> tuple[str, ...]:
    """Checks layer names and returns them as a tuple.

    Raises:
      ValueError: a name is not one of `LAYERS`, or the list is empty.
    """
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"{argument}: at least one layer is needed")
    unknown = [name for name in layers if name not in _LAYER_INDEX]
    if unknown:
        raise ValueError(
            f"{argument}: unknown layer {unknown[0]!r}; valid names are conv1_1..conv5_4, "
            "relu1_1..relu5_4, pool1..pool5"
        )
    return layers


def pools_before(layer: str) -> int:
    """Number of 2x2 poolings applied before (and including) `layer`."""
    return sum(name.startswith("pool") for name in LAYERS[: _LAYER_INDEX[layer] + 1])


def min_image_side(layers: Sequence[str]) -> int:
    """Smallest image side for which every layer in `layers` has at least one pixel."""
    return 2 ** max(pools_before(name) for name in layers)


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
_SAME = ((1, 1), (1, 1))


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), _SAME, dimension_numbers=_DIMENSIONS)


def _winograd_tile(x: jax.Array, kernel: jax.Array) -> int | None:
    # Measured on a 2-core AVX2 CPU at 512 px: Winograd wins from 256 channels on (conv3_x:
    # 0.11 -> 0.09 s, conv4_x: 0.105 -> 0.055 s) and loses below, where its transforms, which
    # cost per pixel and channel, outweigh the multiplications saved. F(4x4) pads small maps.
    _, h, w, c = x.shape
    if x.dtype != jnp.float32 or min(c, kernel.shape[-1]) < 256:
        return None
    return 4 if min(h, w) >= 32 else 2


def _conv_any(x: jax.Array, kernel: jax.Array, convolution: str) -> jax.Array:
    tile = _winograd_tile(x, kernel) if convolution == "winograd" else None
    if tile is None:
        return _conv(x, kernel)
    winograd_conv = functools.partial(_jitted_winograd, tile=tile)
    return jax.lax.platform_dependent(x, kernel, cpu=winograd_conv, default=_conv)


# jit, inside a trace, makes each shape's few hundred transform operations one call that is
# traced and lowered once per shape rather than at each of the 18 wide convolutions of an
# evaluation (start-up time); XLA inlines it, so the compiled code is the same.
_jitted_winograd = jax.jit(winograd.conv3x3, static_argnames="tile")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, kernel: jax.Array, convolution: str = "direct") -> jax.Array:
    """3x3 stride-1 convolution with zero padding 1: x [N, H, W, I], kernel [3, 3, I, O].

    `convolution` is one of `CONVOLUTIONS`; "winograd" is exact to float32 rounding amplified by
    Winograd's transforms (about 2e-5 of the output's scale).
    """
    return _conv_any(x, kernel, convolution)


def _conv3x3_fwd(x, kernel, convolution):
    return _conv_any(x, kernel, convolution), (x, kernel)


def _conv3x3_bwd(convolution, residuals, g):
    # The input gradient written as a plain convolution with the flipped, transposed kernel.
    # Mathematically what JAX derives itself, but XLA:CPU runs JAX's form ~3x slower inside
    # while-loops (where the optimizer's chunks run); this form is fast everywhere, and lets the
    # gradient use Winograd too.
    x, kernel = residuals
    dx = _conv_any(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2), convolution)
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)  # dead code unless asked for
    return dx, kernel_vjp(g)[0]


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


class Conv3x3(nn.Module):
    """`conv3x3` plus bias, with parameters named like `flax.linen.Conv`'s (kernel, bias)."""

    features: int
    convolution: str = "direct"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.he_normal(), (3, 3, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return conv3x3(x, kernel.astype(x.dtype), self.convolution) + bias.astype(x.dtype)


def _pool(x: jax.Array, pooling: str) -> jax.Array:
    # 2x2 stride-2 pooling, floor mode like torch's default, written as a reshape and a reduction:
    # XLA's CPU backend differentiates this much faster than reduce_window's select-and-scatter.
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
    if pooling == "max":
        return x.max(axis=(2, 4))
    return x.mean(axis=(2, 4))


class VGG19(nn.Module):
    """VGG19's ``features``, computed up to the deepest requested tap.

    Attributes:
      widths: output channels of each block's convolutions (VGG19: 64, 128, 256, 512, 512).
      layers: the taps to return, names from `LAYERS`.
      pooling: "max" (VGG19 as trained) or "avg" (Gatys et al.'s choice for smoother results).
      convolution: one of `CONVOLUTIONS`.
    """

    widths: tuple[int, ...]
    layers: tuple[str, ...]
    pooling: str = "max"
    convolution: str = "direct"

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        wanted = set(self.layers)
        last = max(_LAYER_INDEX[name] for name in self.layers)
        out = {}
        for name in LAYERS[: last + 1]:
            if name.startswith("conv"):
                block = int(name[4])
                x = Conv3x3(self.widths[block - 1], self.convolution, name=name)(x)
            elif name.startswith("relu"):
                x = nn.relu(x)
            else:
                x = _pool(x, self.pooling)
            if name in wanted:
                out[name] = x
        return out


def widths_of(params: dict) -> tuple[int, ...]:
    """Channel widths of the five blocks, read from the conv kernels' shapes (0 where absent)."""
    return tuple(
        params[f"conv{b}_1"]["kernel"].shape[-1] if f"conv{b}_1" in params else 0
        for b in range(1, 6)
    )


def vgg19_features(
    params: dict, x: jax.Array, layers: Sequence[str], pooling: str = "max",
    convolution: str = "direct",
) -> dict[str, jax.Array]:
    """Computes VGG19 activations.

    Pure and differentiable; compose it with `jax.jit`, `jax.grad` and `jax.vmap` freely.

    Args:
      params: conv parameters ``{"conv1_1": {"kernel": [3, 3, in, out], "bias": [out]}, ...}``
        as returned by `jaxstyle.load_weights` or `init_params`.
      x: float32 [N, H, W, 3], a batch already preprocessed into the network's input space.
      layers: names of the taps to return, e.g. ``("relu1_1", "relu4_2")``.
      pooling: "max" or "avg".
      convolution: "direct" (XLA's convolution everywhere) or "winograd" (Winograd's algorithm
        for the wide float32 layers on CPUs: about 2e-5 relative error per layer, a quarter
        less time per evaluation at 512 px, slower to compile); see `CONVOLUTIONS`.

    Returns:
      Each requested layer's activation, float [N, h, w, c]. Only the layers up to the deepest
      requested one are computed.

    Raises:
      ValueError: unknown layer, pooling or convolution, missing parameters, or `x` is not
        [N, H, W, 3].
    """
    layers = validate_layers(layers)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
    if convolution not in CONVOLUTIONS:
        raise ValueError(f"convolution: expected one of {CONVOLUTIONS}, got {convolution!r}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x: expected a batch [N, H, W, 3], got shape {tuple(x.shape)}")
    deepest = max(_LAYER_INDEX[name] for name in layers)
    missing = [n for n in LAYERS[: deepest + 1] if n.startswith("conv") and n not in params]
    if missing:
        raise ValueError(f"params: no parameters for {missing[0]}, needed for the layers asked")
    model = VGG19(widths=widths_of(params), layers=layers, pooling=pooling,
                  convolution=convolution)
    return model.apply({"params": params}, x)


def init_params(key: jax.Array, widths: Sequence[int] = VGG19_WIDTHS) -> dict:
    """He-initialised (fan-in, as for ReLU networks) VGG19 conv parameters with zero biases.

    Random features are far weaker than pretrained ones, but they make the whole pipeline runnable
    and testable without any download.

    Args:
      key: a `jax.random.key`.
      widths: channel widths of the five blocks.

    Returns:
      Parameters in the layout `vgg19_features` takes.
    """
    model = VGG19(widths=tuple(widths), layers=("pool5",))
    return jax.jit(model.init)(key, jnp.zeros((1, 32, 32, 3)))["params"]
