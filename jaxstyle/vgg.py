"""The VGG family's convolutional part in Flax Linen, every layer tapped by its neural-style name.

A network is ``features`` of torchvision's VGG11/13/16/19: five blocks of 3x3 convolutions (zero
padding 1), each followed by a ReLU, and a 2x2 stride-2 pooling after each block. Which network
runs, and its channel widths, are read from the parameters: the real VGG19 or VGG16 and narrower
test fixtures run the same code. `VGGWeights` holds a network's parameters with the
preprocessing they were trained with and where they came from; reading and converting weight
files is `jaxstyle.weights`' work, and the layers' names are `jaxstyle.vgg_layers`'.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import winograd
from jaxstyle.choices import CONVOLUTIONS, POOLINGS
from jaxstyle.preprocessing import Preprocessing
from jaxstyle.vgg_layers import (
    BLOCK_DEPTHS,
    VGG19_WIDTHS,
    deepest,
    depths_of,
    layer_names,
    layer_position,
    network_name,
    pools_before,
    validate_layers,
)

# How 3x3 convolutions run: "direct" is XLA's convolution (on CPUs, float32 maps of at most 64
# pixels with 256+ channels as one matrix product instead: `_uses_im2col`); "winograd" uses
# Winograd's F(4x4, 3x3) or F(2x2, 3x3) (`jaxstyle.winograd`) for layers with 128 or more
# channels (256 in bfloat16) on CPUs, where it needs 4x (2.25x) fewer multiplications, and XLA's
# convolution elsewhere (narrow layers, GPUs and TPUs). In bfloat16 it is F(2x2) with float32
# transforms and bfloat16 products: XLA:CPU runs a bfloat16 convolution in float32, so this is
# the only way its products can use a CPU's bfloat16 instructions (`benchmarks/bfloat16.py`
# measures whether they pay).
# On a 2-core CPU at 512 px float32 Winograd takes a quarter off each evaluation, but a first run
# at a new size took ~50 s longer to start (XLA compiles each Winograd layer in ~2 s), so it pays
# off on long runs (and on repeated ones, with the persistent compilation cache).


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
_SAME = ((1, 1), (1, 1))


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), _SAME, dimension_numbers=_DIMENSIONS)


def _im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    # The same convolution as one matrix product: the nine shifted copies of the padded map side
    # by side [N, H, W, 9I] times the kernel flattened in HWI order [9I, O].
    _, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifted = [padded[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(shifted, axis=-1) @ kernel.reshape(9 * c, kernel.shape[-1])


_IM2COL_PIXELS = 64


def _uses_im2col(x: jax.Array, kernel: jax.Array) -> bool:
    # XLA:CPU's direct convolution is pathologically slow on tiny maps with many channels
    # (conv4_x and conv5_x of images up to ~100 px): one 3x3 convolution and its input
    # gradient on a 2-core AVX2 CPU, 4x2x512 76-81 ms direct against 5-6 ms as one product,
    # 4x2x256 7.5-9.7 against 1.6, 2x1x512 6 against 2-3, 8x5x512 14 against 8-9. On larger
    # maps the gain is small (16x11x512 22-26 against 16-20) or a loss (36x24x512 76 against 92)
    # and does not pay for compiling the nine copies (~0.3 s per layer and direction). In the
    # optimizer's loop at 64 px (balanced, 40 iterations, every wide layer on the product) 0.51x
    # per iteration, for 2-5 s more compiling (once with the compilation cache). Float32 only.
    _, h, w, c = x.shape
    return (x.dtype == jnp.float32 and min(c, kernel.shape[-1]) >= 256
            and h * w <= _IM2COL_PIXELS)


def _winograd_tile(x: jax.Array, kernel: jax.Array) -> int | None:
    # Measured on a 2-core AVX2 CPU at 512 px: Winograd wins from 256 channels on (conv3_x:
    # 0.11 -> 0.09 s, conv4_x: 0.105 -> 0.055 s). In float32 it wins from 128 channels too
    # since the kernels are transformed once per run (`transform_kernels`): 0.93x per
    # evaluation at 384 px in the optimizer's loop; from 64 channels it loses (1.07x), as the
    # input and output transforms, which cost per pixel and channel, outweigh the products
    # saved. F(4x4) pads small maps. In bfloat16 only F(2x2) (F(4x4)'s transforms amplify the
    # products' rounding to ~2e-2), from 256 channels as measured.
    _, h, w, c = x.shape
    if x.dtype not in (jnp.float32, jnp.bfloat16):
        return None
    if min(c, kernel.shape[-1]) < (128 if x.dtype == jnp.float32 else 256):
        return None
    return 4 if min(h, w) >= 32 and x.dtype == jnp.float32 else 2


def _winograd_kernel(kernel: jax.Array, tile: int) -> jax.Array:
    # In float32 whatever the kernel's dtype: a bfloat16 kernel's transform is rounded only
    # when its products are.
    return winograd.transform_kernel(kernel.astype(jnp.float32), tile)


def _winograd(x: jax.Array, u: jax.Array) -> jax.Array:
    if x.dtype != jnp.bfloat16:
        return _jitted_winograd(x, u)
    return _jitted_winograd(x.astype(jnp.float32), u, products=jnp.bfloat16).astype(x.dtype)


def _conv_any(x: jax.Array, kernel: jax.Array, convolution: str,
              u: jax.Array | None = None) -> jax.Array:
    """The convolution `convolution` asks for; `u`, when given, is the kernel already in the
    Winograd domain (`transform_kernels`), used when its tile is the one x's size calls for."""
    tile = _winograd_tile(x, kernel) if convolution == "winograd" else None
    if tile is None and _uses_im2col(x, kernel):
        return jax.lax.platform_dependent(x, kernel, cpu=_im2col, default=_conv)
    if tile is None:
        return _conv(x, kernel)
    if u is None or u.shape[0] != (tile + 2) ** 2:
        u = _jitted_kernel(kernel, tile=tile)
    return jax.lax.platform_dependent(x, kernel, u, cpu=lambda x, _, u: _winograd(x, u),
                                      default=lambda x, kernel, _: _conv(x, kernel))


# jit, inside a trace, makes each shape's few hundred transform operations one call that is
# traced and lowered once per shape rather than at each of the 18 wide convolutions of an
# evaluation (start-up time); XLA inlines it, so the compiled code is the same.
_jitted_winograd = jax.jit(winograd.conv3x3_transformed, static_argnames=("products",))
_jitted_kernel = jax.jit(_winograd_kernel, static_argnames=("tile",))


def _flipped(kernel: jax.Array) -> jax.Array:
    # The kernel whose convolution is the input gradient of kernel's (HWIO -> flipped HWOI).
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


_jitted_flip = jax.jit(_flipped)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, kernel: jax.Array, convolution: str = "direct",
            transformed: tuple[jax.Array, jax.Array] | None = None,
            flipped: jax.Array | None = None) -> jax.Array:
    """3x3 stride-1 convolution with zero padding 1: x [N, H, W, I], kernel [3, 3, I, O].

    `convolution` is one of `CONVOLUTIONS`; "winograd" is exact to float32 rounding amplified by
    Winograd's transforms (about 2e-5 of the output's scale), and in bfloat16 to its products'
    rounding (about 3e-3, as bfloat16's own convolution). `transformed`: the kernel and its
    gradient's kernel already in the Winograd domain (`transform_kernels`); `flipped`: the
    gradient's kernel as a plain kernel (`_flipped`); both treated as constants (no gradient
    flows to them) and both give exactly the values computed without them.
    """
    return _conv_any(x, kernel, convolution, transformed and transformed[0])


def _conv3x3_fwd(x, kernel, convolution, transformed, flipped):
    return (_conv_any(x, kernel, convolution, transformed and transformed[0]),
            (x, kernel, transformed, flipped))


def _conv3x3_bwd(convolution, residuals, g):
    # The input gradient written as a plain convolution with the flipped, transposed kernel.
    # Mathematically what JAX derives itself, but XLA:CPU runs JAX's form ~3x slower inside
    # while-loops (where the optimizer's chunks run); this form is fast everywhere, and lets the
    # gradient use Winograd too.
    x, kernel, transformed, flipped = residuals
    back = _flipped(kernel) if flipped is None else flipped
    dx = _conv_any(g, back, convolution, transformed and transformed[1])
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)  # dead code unless asked for
    constants = jax.tree_util.tree_map(jnp.zeros_like, (transformed, flipped))
    return dx, kernel_vjp(g)[0], *constants


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
        transformed = flipped = None
        if self.has_variable("params", "winograd_backward"):
            transformed = tuple(self.get_variable("params", f"winograd_{way}")
                                for way in ("forward", "backward"))
        if self.has_variable("params", "flipped"):
            flipped = self.get_variable("params", "flipped").astype(x.dtype)
        return conv3x3(x, kernel.astype(x.dtype), self.convolution,
                       transformed, flipped) + bias.astype(x.dtype)


def _pool(x: jax.Array, pooling: str) -> jax.Array:
    # 2x2 stride-2 pooling, floor mode like torch's default, written as a reshape and a reduction:
    # XLA's CPU backend differentiates this much faster than reduce_window's select-and-scatter.
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
    if pooling == "max":
        return x.max(axis=(2, 4))
    return x.mean(axis=(2, 4))


class VGG(nn.Module):
    """A VGG network's ``features``, computed up to the deepest requested tap.

    Attributes:
      depths: convolutions per block (`ARCHITECTURES`; VGG19: 2, 2, 4, 4, 4).
      widths: output channels of each block's convolutions (VGG16/19: 64, 128, 256, 512, 512).
      layers: the taps to return, names from `layer_names(depths)`.
      pooling: "max" (as trained) or "avg" (Gatys et al.'s choice for smoother results).
      convolution: one of `CONVOLUTIONS`.
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    layers: tuple[str, ...]
    pooling: str = "max"
    convolution: str = "direct"

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        wanted = set(self.layers)
        names = layer_names(self.depths)
        out = {}
        for name in names[: names.index(deepest(self.layers)) + 1]:
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


def widths_of(params: Mapping) -> tuple[int, ...]:
    """Channel widths of the five blocks, read from the conv kernels' shapes (0 where absent)."""
    return tuple(
        params[f"conv{b}_1"]["kernel"].shape[-1] if f"conv{b}_1" in params else 0
        for b in range(1, 6)
    )


def vgg_features(
    params: Mapping, image: jax.Array, layers: Sequence[str], pooling: str = "max",
    convolution: str = "direct",
) -> dict[str, jax.Array]:
    """Computes the activations of the VGG network whose parameters are `params` for one image.

    The network (VGG11, 13, 16 or 19) and its widths are read from the parameters. Pure and
    differentiable; compose it with `jax.jit` and `jax.grad`, and batch it with `jax.vmap` (every
    public function of jaxstyle takes one image).

    Args:
      params: conv parameters ``{"conv1_1": {"kernel": [3, 3, in, out], "bias": [out]}, ...}``
        as returned by `jaxstyle.load_weights` or `init_params`.
      image: float32 [H, W, 3], already preprocessed into the network's input space
        (`jaxstyle.Preprocessing.to_model`).
      layers: names of the taps to return, e.g. ``("relu1_1", "relu4_2")``; VGG16 has conv5_3
        but no conv5_4 (`layer_names`).
      pooling: "max" or "avg".
      convolution: "direct" (XLA's convolution; on CPUs tiny wide maps as one matrix product)
        or "winograd" (Winograd's algorithm for the wide float32 layers on CPUs: about 2e-5
        relative error per layer, a quarter less time per evaluation at 512 px, slower to
        compile); see `CONVOLUTIONS`.

    Returns:
      Each requested layer's activation, float [h, w, c]. Only the layers up to the deepest
      requested one are computed.

    Raises:
      ValueError: a layer the network does not have (the message lists those it has), unknown
        pooling or convolution, missing parameters, or `image` is not [H, W, 3].
    """
    if jnp.ndim(image) != 3 or jnp.shape(image)[-1] != 3:
        raise ValueError(f"image: expected one image [H, W, 3], got shape "
                         f"{tuple(jnp.shape(image))}; for a batch use jax.vmap")
    return {k: v[0] for k, v in _features_batch(params, image[None], layers, pooling,
                                                  convolution).items()}


def _features_batch(params: Mapping, x: jax.Array, layers: Sequence[str], pooling: str,
                    convolution: str) -> dict[str, jax.Array]:
    """`vgg_features` of a batch x [N, H, W, 3] (Flax's convolutions take a batch axis)."""
    layers = validate_layers(layers)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
    if convolution not in CONVOLUTIONS:
        raise ValueError(f"convolution: expected one of {CONVOLUTIONS}, got {convolution!r}")
    depths = depths_of(params)
    for block in range(1, layer_position(deepest(layers))[0] + 1):
        if depths[block - 1] == 0:
            raise ValueError(f"params: no parameters for conv{block}_1, needed for the layers "
                             "asked")
    validate_layers(layers, "layers", depths)
    model = VGG(depths=depths, widths=widths_of(params), layers=layers, pooling=pooling,
                convolution=convolution)
    return model.apply({"params": params}, x)


def transform_kernels(params: Mapping, image_shape: Sequence[int], layers: Sequence[str],
                      convolution: str = "winograd", dtype=jnp.float32) -> dict:
    """`params` plus, for each convolution, its input gradient's kernel made once here rather
    than at every evaluation: for one that runs Winograd's algorithm on an image of
    `image_shape`, its kernel and its input gradient's kernel in the Winograd domain; for any
    other, the flipped, transposed kernel its input gradient convolves with.

    `vgg_features` on these parameters computes the same features (Winograd's to float32
    rounding, the flipped kernels exactly) without transforming the fixed kernels at every call:
    inside the optimizer's loop XLA does not hoist the transforms out (they sit in the line
    search's conditional). At 384 px Winograd's transforms cost about a fifth of an evaluation's
    thread time; at 64 px, on direct convolutions, the flips (a transpose of each kernel) cost
    about a quarter. Nothing is added off CPUs. The added entries are constants (no gradient
    reaches them) and cost memory: 4x a kernel's size for F(4x4) (1.8x for F(2x2)), twice,
    about 275 MB for VGG16 up to relu5_1 at 384 px; one kernel's size for a flipped one (59 MB
    for all of VGG16's).

    Args:
      params: as for `vgg_features`.
      image_shape: [H, W, ...] of the images the features will be computed on.
      layers: the taps that will be asked for (only convolutions up to the deepest count).
      convolution: as for `vgg_features`.
      dtype: the dtype the network will run in (``jnp.bfloat16`` for bfloat16 products).

    Returns:
      A new mapping; each changed layer has ``winograd_forward`` and ``winograd_backward``, or
      ``flipped``, besides ``kernel`` and ``bias``.
    """
    if jax.default_backend() != "cpu":
        return dict(params)
    depths = depths_of(params)
    names = layer_names(depths)
    layers = validate_layers(layers, "layers", depths)
    out = dict(params)
    for name in names[: names.index(deepest(layers)) + 1]:
        if not name.startswith("conv"):
            continue
        # Floor-mode 2x2 pooling k times floors the side divided by 2^k.
        h, w = (side >> pools_before(name) for side in image_shape[:2])
        kernel = jnp.asarray(params[name]["kernel"])
        tile = None
        if convolution == "winograd":
            tile = _winograd_tile(jax.ShapeDtypeStruct((1, h, w, kernel.shape[2]), dtype),
                                  kernel.astype(dtype))
        if tile is not None:
            kernel = kernel.astype(dtype)
            out[name] = {**params[name],
                         "winograd_forward": _jitted_kernel(kernel, tile=tile),
                         "winograd_backward": _jitted_kernel(_flipped(kernel), tile=tile)}
        else:
            out[name] = {**params[name], "flipped": _jitted_flip(kernel)}
    return out


def init_params(
    key: jax.Array, widths: Sequence[int] = VGG19_WIDTHS, depths: Sequence[int] = BLOCK_DEPTHS
) -> dict:
    """He-initialised (fan-in, as for ReLU networks) VGG conv parameters with zero biases.

    Random features are far weaker than pretrained ones, but they make the whole pipeline runnable
    and testable without any download.

    Args:
      key: a `jax.random.key`.
      widths: channel widths of the five blocks.
      depths: convolutions per block (default VGG19's; `ARCHITECTURES` has the others).

    Returns:
      Parameters in the layout `vgg_features` takes.
    """
    model = VGG(depths=tuple(depths), widths=tuple(widths), layers=("pool5",))
    return jax.jit(model.init)(key, jnp.zeros((1, 32, 32, 3)))["params"]


@dataclass(frozen=True)
class VGGWeights:
    """Converted VGG conv parameters together with where they came from.

    Attributes:
      params: ``{"conv1_1": {"kernel": float32 [3, 3, in, out], "bias": float32 [out]}, ...}``;
        which VGG it is follows from the layers present (`network`).
      preprocessing: how images are mapped into the network's input space.
      source: a human-readable name of the source ("caffe", "vgg16-keras", "random (seed 0)", ...).
      source_sha256: SHA-256 of the source file, "" for random weights.
      licence: the licence of the weights, "" where unknown.
      origin: where the source file came from (an address, a package), "" where unknown.
    """

    params: dict
    preprocessing: Preprocessing
    source: str
    source_sha256: str = ""
    licence: str = ""
    origin: str = ""

    @property
    def is_random(self) -> bool:
        return self.source.startswith("random")

    @property
    def network(self) -> str:
        """"VGG19", "VGG16", ... as read from the parameters."""
        return network_name(depths_of(self.params))

    def num_parameters(self) -> int:
        return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(self.params))

    def label(self) -> str:
        """One line naming the network and its source, for logs and output metadata."""
        if self.is_random:
            return f"{self.network}, {self.source}, NOT pretrained"
        text = f"{self.network} from {self.source}, sha256 {self.source_sha256}"
        return f"{text}; {self.licence}" if self.licence else text
