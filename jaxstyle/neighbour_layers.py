"""The neural-neighbour route's last pass: each layer's features matched on their own.

NNST-Opt (Kolkin et al. 2022) ends, after its coarse-to-fine passes over hypercolumns, with one
more pass at the output's size in which each hypercolumn layer (relu1_1 .. relu4_3 in VGG16)
is matched at its own resolution, on its own, rather than stacked into hypercolumns resized to
a quarter of the image's side. To bound the search each layer is read on a subsample of its
positions: every s-th row and column from a random offset, s such that about `SIDE` x `SIDE`
positions are left. The objective (`objective`) is the mean over layers of each layer's mean
distance to its nearest style feature (centred cosine, `jaxstyle.neighbours`), plus the
content and TV terms of `jaxstyle.neighbours.objective`.

Departures from NNST's code (nkolkin13/NeuralNeighborStyleTransfer, ``optimize_output_im``):

- The subsamples are redrawn every ``redraw_every`` iterations (NNST: at every Adam step) from
  a key folded with the iteration (`draw`), so L-BFGS sees a fixed objective between redraws
  and a resumed run draws what the uninterrupted run drew.
- The mean over layers (NNST: the sum), so that the term has the hypercolumn term's scale and
  the preset's TV weight means the same in both passes.
- Both sides are centred by the style's mean at that layer (NNST: each by its own), as the
  hypercolumn passes do.
- The style's positions get their own random offsets (NNST: the output's), and with rotations
  each rotated copy is read at twice the stride, so the pool searched keeps its size (NNST:
  four times as many).
- At layers of `SIDE` positions a side or fewer (relu4 at 512 px), NNST compares the style's
  features with a variable left over from the previous layer; here each layer is compared
  with its own.
- One style and no regions: with several styles or style masks the last pass matches
  hypercolumns, as the scales before it (`jaxstyle.problem.layered`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstyle.losses import LossWeights
from jaxstyle.neighbours import (
    NeighbourConfig,
    NeighbourStyle,
    content_and_tv,
    features,
    matched_distances,
    rotated,
)
from jaxstyle.targets import layer_masks

SIDE = 64
"""Positions a side each layer is read on (NNST's): every s-th row and column with
s = max(1, longest side // SIDE), from a random offset."""


class LayerStyle(NamedTuple):
    """The style side of the last pass, fixed for the pass.

    Attributes:
      images: the model-space style image [H, W, 3] and, with rotations, its three rotated
        copies: what each draw reads the style's features from.
      centres: float32 [C_l] per hypercolumn layer, the mean of the style's features there
        (over every position of every copy).
      key: where the first draw (`final_targets`) comes from.
    """

    images: tuple[jax.Array, ...]
    centres: tuple[jax.Array, ...]
    key: jax.Array


class LayerTargets(NamedTuple):
    """What the last pass's `objective` needs besides the image and the network.

    Attributes:
      style: the style side (`LayerStyle`).
      layers: per hypercolumn layer, the style features drawn and their centre
        (`jaxstyle.neighbours.NeighbourStyle`, columns float32 [M_l, C_l]).
      offsets: float32 [L, 2] in [0, 1): where, as a fraction of the stride, each layer's
        output subsample starts (rows, columns).
      content: ``{layer: float32 [h, w, C]}``, the content's activations at the content layers.
      weights: the terms' weights (``style`` multiplies the matched term).
      content_layer_masks: ``{layer: float32 [h, w]}``, where the content term counts; or None.
    """

    style: LayerStyle
    layers: tuple[NeighbourStyle, ...]
    offsets: jax.Array
    content: dict
    weights: LossWeights
    content_layer_masks: dict | None = None


def stride(shape: tuple[int, ...], side: int = SIDE) -> int:
    """The subsample's stride for a feature map [H, W, ...]: about `side` positions a side."""
    return max(1, max(shape[:2]) // side)


def subsample(feature: jax.Array, offset: jax.Array, step: int) -> jax.Array:
    """Every `step`-th row and column of `feature` float [H, W, C] from ``offset * step``
    (offset float [2] in [0, 1)), as rows float32 [max(1, H // step) * max(1, W // step), C]."""
    h, w, c = feature.shape
    start = jnp.floor(offset * step).astype(jnp.int32)
    rows = jnp.minimum(start[0] + step * jnp.arange(max(1, h // step)), h - 1)
    cols = jnp.minimum(start[1] + step * jnp.arange(max(1, w // step)), w - 1)
    return feature[rows][:, cols].astype(jnp.float32).reshape(-1, c)


def final_style(params: dict, style: jax.Array, config: NeighbourConfig,
                key: jax.Array) -> LayerStyle:
    """The last pass's style side of one model-space style image [H, W, 3] at the output's
    scale (its rotated copies too with ``config.rotations``), drawing from `key`."""
    images = tuple(rotated(style, config.rotations))
    sums = [_layer_sums(params, image, config) for image in images]
    centres = tuple(sum(s[i][0] for s in sums) / sum(s[i][1] for s in sums)
                    for i in range(len(config.columns)))
    return LayerStyle(images, centres, key)


@functools.partial(jax.jit, static_argnums=2)
def _layer_sums(params: dict, image: jax.Array, config: NeighbourConfig) -> list[tuple]:
    """``(sum over positions float32 [C_l], positions)`` of the image's features at each
    hypercolumn layer."""
    feats = features(params, image, config.columns, config.loss)
    return [(jnp.sum(feats[name].astype(jnp.float32), axis=(0, 1)),
             jnp.float32(feats[name].shape[0] * feats[name].shape[1])) for name in config.columns]


def final_targets(params: dict, content: jax.Array, style: LayerStyle, config: NeighbourConfig,
                  weights: LossWeights, content_mask: jax.Array | None = None) -> LayerTargets:
    """The last pass's targets for a model-space content image [H, W, 3] (the output's size),
    with the first draw from ``style.key``; `content_mask` float [H, W] in [0, 1] limits the
    content term to where it is white."""
    feats = _content_features(params, content, config)
    targets = LayerTargets(style, (), jnp.zeros((len(config.columns), 2), jnp.float32), feats,
                           weights)
    if content_mask is not None:
        shapes = {name: feats[name].shape[:2] for name in config.loss.content_layers}
        targets = targets._replace(content_layer_masks=layer_masks(content_mask, shapes))
    return draw(params, targets, style.key, config)


@functools.partial(jax.jit, static_argnums=2)
def _content_features(params: dict, content: jax.Array, config: NeighbourConfig) -> dict:
    feats = features(params, content, config.loss.content_layers, config.loss)
    return {name: feats[name] for name in config.loss.content_layers}


@functools.partial(jax.jit, static_argnames="config")
def draw(params: dict, targets: LayerTargets, key: jax.Array,
         config: NeighbourConfig) -> LayerTargets:
    """`targets` with new subsamples drawn from `key`: the output's offsets, and each layer's
    style features read afresh from ``targets.style.images`` at offsets of their own (each
    rotated copy at twice the output's stride: as many features in all as one copy)."""
    out_key, style_key = jax.random.split(key)
    side = SIDE // 2 if len(targets.style.images) > 1 else SIDE
    drawn = [[] for _ in config.columns]
    for r, image in enumerate(targets.style.images):
        feats = features(params, image, config.columns, config.loss)
        offsets = jax.random.uniform(jax.random.fold_in(style_key, r), (len(config.columns), 2))
        for i, name in enumerate(config.columns):
            drawn[i].append(subsample(feats[name], offsets[i], stride(feats[name].shape, side)))
    layers = tuple(NeighbourStyle(jnp.concatenate(parts), centre)
                   for parts, centre in zip(drawn, targets.style.centres))
    return targets._replace(layers=layers,
                            offsets=jax.random.uniform(out_key, (len(config.columns), 2)))


def objective(image: jax.Array, params: dict, targets: LayerTargets,
              config: NeighbourConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The last pass's loss of one model-space image [H, W, 3] and its components.

    ``total = w_s mean_l mean_i d(f_li, s_l m(i)) + w_c C + w_tv TV``, f_l the image's
    features at hypercolumn layer l on ``targets.offsets``' subsample, s_l the style's drawn
    there, m(i) the nearest under d, the centred cosine distance (no gradient through the
    choice); C and TV as in `jaxstyle.neighbours.objective`.

    Returns:
      ``(total, components)`` with components ``content``, ``style`` and ``tv``, float32
      scalars.
    """
    feats = features(params, image, config.layers, config.loss)
    term = 0.0
    for i, name in enumerate(config.columns):
        rows = subsample(feats[name], targets.offsets[i], stride(feats[name].shape))
        term = term + jnp.mean(matched_distances(rows, rows, targets.layers[i], config.chunk))
    matched = targets.weights.style * term / len(config.columns)
    content, tv = content_and_tv(image, feats, targets, config.loss)
    return matched + content + tv, {"content": content, "style": matched, "tv": tv}
