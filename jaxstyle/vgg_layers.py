"""The VGG family's layers by name: the networks' depths and widths, every tap's neural-style
name in network order, and the checks and arithmetic on those names (no JAX).

A network has five blocks of 3x3 convolutions, each followed by a ReLU, and a 2x2 stride-2
pooling after each block; its taps are named conv{block}_{i}, relu{block}_{i} and pool{block}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

ARCHITECTURES: dict[str, tuple[int, ...]] = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
"""Convolutions per block of each network (Simonyan & Zisserman 2015, configurations A, B, D, E)."""

BLOCK_DEPTHS = ARCHITECTURES["vgg19"]
VGG19_WIDTHS = (64, 128, 256, 512, 512)
"""VGG19's (and VGG16's) channel widths per block."""

def conv_layer_names(depths: Sequence[int] = BLOCK_DEPTHS) -> tuple[str, ...]:
    """The convolutions of a network with `depths` convolutions per block, in order."""
    return tuple(
        f"conv{block}_{i}" for block, depth in enumerate(depths, 1) for i in range(1, depth + 1)
    )


def layer_names(depths: Sequence[int] = BLOCK_DEPTHS) -> tuple[str, ...]:
    """Every tap of a network with `depths` convolutions per block, in network order.

    Blocks of depth 0 (parameters that stop early) and the blocks after them have no taps.
    """
    names = []
    for block, depth in enumerate(depths, 1):
        if depth == 0:
            break
        for i in range(1, depth + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


CONV_LAYERS: tuple[str, ...] = conv_layer_names()
"""VGG19's sixteen convolutions: conv1_1, conv1_2, conv2_1, ..., conv5_4."""

LAYERS: tuple[str, ...] = layer_names()
"""Every tap of VGG19 in network order: conv1_1, relu1_1, ..., relu5_4, pool5. The taps of the
smaller networks are a subset of these."""

_NAME = re.compile(r"^(?:(conv|relu)([1-5])_([1-9])|pool([1-5]))$")


def layer_position(name: str) -> tuple[int, int, int]:
    """(block, index in block, conv 0 / relu 1) of a well-formed name; pools sort last."""
    kind, block, i, pool_block = _NAME.match(name).groups()
    if pool_block:
        return int(pool_block), 99, 0
    return int(block), int(i), int(kind == "relu")


def depths_of(params: Mapping) -> tuple[int, ...]:
    """Convolutions per block of the network whose parameters are `params` (0 where absent)."""
    depths = []
    for block in range(1, 6):
        depth = 0
        while f"conv{block}_{depth + 1}" in params:
            depth += 1
        depths.append(depth)
    return tuple(depths)


def network_name(depths: Sequence[int]) -> str:
    """"VGG16" for VGG16's depths; "VGG with blocks of (2, 2, 0, 0, 0)" for anything else."""
    for name, known in ARCHITECTURES.items():
        if tuple(depths) == known:
            return name.upper()
    return f"VGG with blocks of {tuple(depths)}"


def _describe(depths: Sequence[int]) -> str:
    names = layer_names(depths)
    if not names:
        return "none (there are no parameters for conv1_1)"
    convs = ", ".join(n for n in names if n.startswith("conv"))
    pools = [n for n in names if n.startswith("pool")]
    return f"{convs} (and relu with the same numbers), {pools[0]}..{pools[-1]}"


def validate_layers(
    layers: Sequence[str], argument: str = "layers", depths: Sequence[int] | None = None
) -> tuple[str, ...]:
    """Checks layer names against a network and returns them as a tuple.

    Args:
      layers: tap names such as ``("relu4_2",)``.
      argument: the option the names came from, for the error message.
      depths: the network's convolutions per block, or None for "some network of the family"
        (VGG19's names, which include every name the smaller networks have).

    Raises:
      ValueError: the list is empty, or a name is not a tap of the network; the message lists
        the network's valid names.
    """
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"{argument}: at least one layer is needed")
    valid = set(layer_names(depths or BLOCK_DEPTHS))
    unknown = [name for name in layers if name not in valid]
    if unknown and depths is None:
        raise ValueError(
            f"{argument}: unknown layer {unknown[0]!r}; no VGG has it (VGG19 has "
            f"{_describe(BLOCK_DEPTHS)}; VGG16 stops at conv5_3)"
        )
    if unknown:
        raise ValueError(
            f"{argument}: unknown layer {unknown[0]!r} for {network_name(depths)}; valid names "
            f"are {_describe(depths)}"
        )
    return layers


def deepest(layers: Sequence[str]) -> str:
    """The layer of `layers` that comes last in the network."""
    return max(layers, key=layer_position)


def pools_before(layer: str) -> int:
    """Number of 2x2 poolings applied before (and including) `layer`."""
    block, i, _ = layer_position(layer)
    return block if i == 99 else block - 1


def min_image_side(layers: Sequence[str]) -> int:
    """Smallest image side for which every layer in `layers` has at least one pixel."""
    return 2 ** max(pools_before(name) for name in layers)
