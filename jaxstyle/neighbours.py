"""Neural neighbours: the objective of Neural Neighbor Style Transfer (Kolkin et al. 2022).

The output's hypercolumns (every ReLU of VGG's first four blocks, each divided by its width,
resized to a grid a quarter of the image's side and concatenated) are each replaced by the
nearest style hypercolumn under centred cosine distance (both centred by the style's mean), and
the image is pulled towards those matches. Where the matches are searched from is a blend of the
content's hypercolumns and the output's own, with one knob alpha (1: from the content only).

Departures from the paper and its code (nkolkin13/NeuralNeighborStyleTransfer):

- The matches are searched inside the objective, at every evaluation, under
  ``jax.lax.stop_gradient``: the objective is a fixed function of the image, as L-BFGS needs,
  and the matches follow the image at every step rather than once per scale (NNST-Opt matches
  once per scale, then runs 200 Adam steps towards fixed targets). A match is piecewise
  constant in the image, so dropping its derivative loses nothing where it is defined; with
  alpha 0 the style term is exactly ``mean_i min_j d(h_i, s_j)``.
- The blend is of hypercolumns, not of images (NNST extracts features from a blended image):
  the content's hypercolumns are computed once per stage, so a blend costs no second network
  pass per evaluation.
- The style term is the centred cosine distance, the one the matches are searched with (NNST's
  loss uses the uncentred one), so that the two agree.
- At most `STYLE_SAMPLES` style hypercolumns, drawn without replacement from a seeded key when
  the style has more (NNST searches them all), which bounds the search's cost.
- NNST takes one style and no masks. Several styles are blended as a mixture: style i gives
  its share of the hypercolumns searched (`style_hypercolumns`), the non-parametric analogue of
  the weighted sum of Gram matrices (the Gram matrix of such a mixture). With regions, each
  region's positions are matched against its own style only, each with its own centre, and the
  term is their mask-weighted sum (`objective`). A content mask limits the content's share of
  the search, and the optional content term, to where it is white.
- The style's rotated copies (90, 180, 270 degrees) are searched with ``style_rotations``
  (on in the preset, as in NNST), and with them the pool keeps its cap of
  `STYLE_SAMPLES`: the copies share it rather than quadrupling the search (`rotated`).
- NNST-Opt's closing pass at the output's size, each layer matched on its own on random
  subsamples, is ``final_pass`` (its iterations; the preset runs one): `jaxstyle.neighbour_layers`
  lists its own departures. NNST's closing colour step is not part of the objective: it is
  ``original_colors="oklab"`` (`jaxstyle.color.oklab_colors`), the preset's default.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstyle.errors import count
from jaxstyle.losses import PRECISIONS, LossConfig, LossWeights
from jaxstyle.style_losses import masked
from jaxstyle.targets import blend_shares, layer_masks
from jaxstyle.terms import CONTENT_LOSSES, tv_loss
from jaxstyle.vgg import vgg_features
from jaxstyle.vgg_layers import depths_of

STYLE_SAMPLES = 4096
"""The most style hypercolumns searched: a 256 x 256 style's whole grid (64 x 64); larger styles
are subsampled. At 512 px the search then costs about as much as the network's own pass."""
MATCH_CHUNK = 1024
"""Output hypercolumns matched at once: the search holds a [MATCH_CHUNK, STYLE_SAMPLES] block
of similarities (16 MB in float32), never the whole [N, M] matrix."""
GRID_STRIDE = 4
"""Image pixels per hypercolumn along each side (NNST's: relu3's own resolution)."""
BLOCKS = 4
"""Hypercolumns stack the ReLUs of VGG's first four blocks (relu1_1 to relu4_3 in VGG16): NNST
drops the fifth for speed without a loss of quality."""


def hypercolumn_layers(params: dict) -> tuple[str, ...]:
    """Every ReLU of the first `BLOCKS` blocks of the network whose parameters are `params`:
    relu1_1 .. relu4_3 for VGG16, relu1_1 .. relu4_4 for VGG19."""
    depths = depths_of(params)[:BLOCKS]
    return tuple(f"relu{b + 1}_{i + 1}" for b, depth in enumerate(depths) for i in range(depth))


def grid_shape(image_shape: Sequence[int]) -> tuple[int, int]:
    """(h, w) of the hypercolumn grid of an image [H, W, ...]: 1 / `GRID_STRIDE` of its sides."""
    return max(1, image_shape[0] // GRID_STRIDE), max(1, image_shape[1] // GRID_STRIDE)


def hypercolumns(features: dict, layers: Sequence[str], grid: tuple[int, int]) -> jax.Array:
    """Hypercolumns of one image: float32 [h * w, D] on the grid (h, w), D the layers' widths.

    Args:
      features: ``{layer: float [H_l, W_l, C_l]}``, one image's activations.
      layers: which of them, in order.
      grid: (h, w) every layer is resized to (bilinear, antialiased when shrinking).

    Returns:
      float32 [h * w, sum C_l]; each layer divided by its width C_l, as NNST does, so that the
      wide deep layers do not dominate the cosine distance.
    """
    if not layers:
        raise ValueError("layers: at least one layer is needed")
    parts = []
    for name in layers:
        f = features[name].astype(jnp.float32)
        c = f.shape[-1]
        f = jax.image.resize(f, (*grid, c), "linear", antialias=True)
        parts.append(f.reshape(-1, c) / c)
    return jnp.concatenate(parts, axis=-1)


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def centred_cosine_distance(a: jax.Array, b: jax.Array, centre: jax.Array) -> jax.Array:
    """``1 - cos(a_i - centre, b_i - centre)`` of rows a, b float [N, D], centre [D] -> [N]."""
    return 1.0 - jnp.sum(_unit(a - centre) * _unit(b - centre), axis=-1)


def nearest_neighbours(queries: jax.Array, keys: jax.Array, centre: jax.Array,
                       chunk: int = MATCH_CHUNK) -> jax.Array:
    """For each query, the index of its nearest key under centred cosine distance.

    Computed `chunk` queries at a time (`jax.lax.map`), so memory holds [chunk, M] similarities,
    never [N, M]; the queries are padded to a multiple of `chunk` and the padding dropped.

    Args:
      queries: float [N, D].
      keys: float [M, D].
      centre: float [D], subtracted from both (the style's mean hypercolumn).
      chunk: queries per block, >= 1.

    Returns:
      int32 [N], indices into `keys` (the first of equally near ones). No gradient.

    Raises:
      ValueError: shapes that do not match, or a chunk under 1; the message names the argument.
    """
    if queries.ndim != 2 or keys.ndim != 2 or keys.shape[1] != queries.shape[1]:
        raise ValueError(f"keys: expected [M, {queries.shape[-1]}] for queries of shape "
                         f"{tuple(queries.shape)}, got {tuple(keys.shape)}")
    if centre.shape != (queries.shape[1],):
        raise ValueError(f"centre: expected shape ({queries.shape[1]},), got {centre.shape}")
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")
    queries, keys, centre = (jax.lax.stop_gradient(jnp.asarray(a, jnp.float32))
                             for a in (queries, keys, centre))
    n, d = queries.shape
    chunk = min(chunk, n)
    padded = jnp.pad(queries, ((0, -n % chunk), (0, 0))).reshape(-1, chunk, d)
    unit_keys = _unit(keys - centre)

    def best(block: jax.Array) -> jax.Array:  # largest cosine = smallest cosine distance
        return jnp.argmax(_unit(block - centre) @ unit_keys.T, axis=-1).astype(jnp.int32)

    return jax.lax.map(best, padded).reshape(-1)[:n]


@dataclass(frozen=True)
class NeighbourConfig:
    """The static part of the neural-neighbour objective (hashable, jit-static).

    Attributes:
      loss: the content term's layers and loss, the network's pooling, precision and
        convolution, the normalisation and model range (`jaxstyle.losses.LossConfig`; its style
        layers and style loss are not used).
      columns: the layers stacked into hypercolumns (`hypercolumn_layers`).
      chunk: output hypercolumns matched at once (`MATCH_CHUNK`).
      rotations: whether the style images' copies rotated by 90, 180 and 270 degrees are
        searched too (`rotated`).
    """

    loss: LossConfig
    columns: tuple[str, ...]
    chunk: int = MATCH_CHUNK
    rotations: bool = False

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer the objective reads."""
        return tuple(dict.fromkeys(self.loss.content_layers + self.columns))


class NeighbourStyle(NamedTuple):
    """The style side of the search, shared by a scale's stages.

    Attributes:
      columns: float32 [M, D], M <= `STYLE_SAMPLES` style hypercolumns.
      centre: float32 [D], the mean of all the style's hypercolumns (before subsampling).
    """

    columns: jax.Array
    centre: jax.Array


class NeighbourTargets(NamedTuple):
    """What the neural-neighbour `objective` needs besides the image and the network.

    Attributes:
      style: the styles' hypercolumns (`NeighbourStyle`): one pool, or with regions one per
        region.
      content_columns: float32 [N, D], the content's hypercolumns on the output's grid.
      content: ``{layer: float32 [h, w, C]}``, the content's activations at the content layers
        (for the optional content term).
      alpha: float32 [], the content's share of what matches are searched from (traced: another
        value recompiles nothing).
      weights: the terms' weights (`jaxstyle.losses.LossWeights`): ``style`` multiplies the
        neighbour term, ``content`` the content term, ``tv`` total variation.
      style_masks: float32 [K, N], each region's mask on the grid, one per `style`; or None
        (no regions).
      style_weights: float32 [K], each region's term's multiplier; None without regions.
      content_mask: float32 [N], where the content's share alpha applies, on the grid; or None
        (everywhere).
      content_layer_masks: ``{layer: float32 [h, w]}``, where the content term counts at each
        content layer; or None (everywhere).
    """

    style: tuple[NeighbourStyle, ...]
    content_columns: jax.Array
    content: dict
    alpha: jax.Array
    weights: LossWeights
    style_masks: jax.Array | None = None
    style_weights: jax.Array | None = None
    content_mask: jax.Array | None = None
    content_layer_masks: dict | None = None


def rotated(image: jax.Array, rotations: bool) -> list[jax.Array]:
    """``[image]``, or with `rotations` the image [H, W, C] and its copies rotated by 90, 180
    and 270 degrees (NNST's rotations of the style: more hypercolumns to match, none of them
    new to the style)."""
    if not rotations:
        return [image]
    return [jnp.rot90(image, k, axes=(0, 1)) for k in range(4)]


def features(params: dict, image: jax.Array, layers: tuple[str, ...], loss: LossConfig) -> dict:
    """``{layer: activations}`` of a model-space image [H, W, 3] at `loss`'s precision,
    pooling and convolution."""
    return vgg_features(params, image.astype(PRECISIONS[loss.precision]), layers, loss.pooling,
                        loss.convolution)


def style_hypercolumns(params: dict, styles: Sequence[jax.Array], config: NeighbourConfig,
                       key: jax.Array, samples: int = STYLE_SAMPLES,
                       shares: Sequence[float] | None = None) -> NeighbourStyle:
    """The hypercolumns of model-space style images [H_i, W_i, 3] (and of their rotated copies
    with ``config.rotations``), pooled together, at most `samples` of them drawn without
    replacement (all of them, in order, where there are no more than are wanted).

    Args:
      params: VGG parameters.
      styles: the style images.
      config: static, from the run's options.
      key: where the draws come from (style i's, with `shares`, from ``fold_in(key, i)``).
      samples: the most hypercolumns kept, >= 1.
      shares: None pools every style's hypercolumns as they come (a larger style gives more);
        else one share per style, >= 0 and not all 0 (normalised to sum 1): style i gives that
        share of the pool, a mixture with those weights (`sample_counts`), and the centre is
        the mixture's mean, the shares' weighted sum of each style's mean.

    Returns:
      The pool (`NeighbourStyle`).

    Raises:
      ValueError: no styles, `samples` under 1, or shares that do not fit the styles.
    """
    if not styles:
        raise ValueError("styles: at least one style image is needed")
    if samples < 1:
        raise ValueError(f"samples: must be >= 1, got {samples}")
    each = [_style_columns(params, s, config) if not config.rotations else
            jnp.concatenate([_style_columns(params, r, config) for r in rotated(s, True)])
            for s in styles]
    if shares is None:
        columns = jnp.concatenate(each)
        centre = jnp.mean(columns, axis=0)
        if columns.shape[0] > samples:
            columns = columns[jax.random.choice(key, columns.shape[0], (samples,),
                                                replace=False)]
        return NeighbourStyle(columns, centre)
    shares = blend_shares(len(styles), shares)
    counts = sample_counts([c.shape[0] for c in each], shares, samples)
    centre = sum(float(share) * jnp.mean(c, axis=0) for share, c in zip(shares, each))
    drawn = [c if n == c.shape[0] else
             c[jax.random.choice(jax.random.fold_in(key, i), c.shape[0], (n,), replace=False)]
             for i, (c, n) in enumerate(zip(each, counts)) if n > 0]
    return NeighbourStyle(jnp.concatenate(drawn), centre)


def sample_counts(sizes: Sequence[int], shares: Sequence[float], samples: int) -> list[int]:
    """How many hypercolumns each style gives to a pool of at most `samples` in which style i
    has share ``shares[i]`` (summing to 1): the largest pool whose every part fits in its
    style's `sizes` [i], each part rounded (at least 1 for a share above 0).

    >>> sample_counts([100, 300], [0.5, 0.5], 4096)
    [100, 100]
    """
    if len(sizes) != len(shares):
        raise ValueError(f"shares: {count(len(shares), 'share')} for {count(len(sizes), 'style')}")
    pool = min([samples] + [size / share for size, share in zip(sizes, shares) if share > 0])
    return [0 if share <= 0 else min(size, max(1, round(pool * share)))
            for size, share in zip(sizes, shares)]


@functools.partial(jax.jit, static_argnums=2)
def _style_columns(params: dict, style: jax.Array, config: NeighbourConfig) -> jax.Array:
    feats = features(params, style, config.columns, config.loss)
    return hypercolumns(feats, config.columns, grid_shape(style.shape))


@functools.partial(jax.jit, static_argnums=2)
def _content_side(params: dict, content: jax.Array, config: NeighbourConfig):
    feats = features(params, content, config.layers, config.loss)
    return (hypercolumns(feats, config.columns, grid_shape(content.shape)),
            {name: feats[name] for name in config.loss.content_layers})


def neighbour_targets(params: dict, content: jax.Array, styles: Sequence[NeighbourStyle],
                      config: NeighbourConfig, alpha: float, weights: LossWeights, *,
                      style_masks: Sequence[jax.Array | None] | None = None,
                      content_mask: jax.Array | None = None,
                      blend_weights: Sequence[float] | None = None) -> NeighbourTargets:
    """The `objective`'s targets for a model-space content image [H, W, 3] (the output's size).

    Args:
      params: VGG parameters.
      content: float32 [H, W, 3], model space.
      styles: one pool (`style_hypercolumns`), or with `style_masks` one per region.
      config: static, from the run's options.
      alpha: the content's share of what matches are searched from, in [0, 1].
      weights: the terms' weights.
      style_masks: one float [H, W] in [0, 1] per style (None entries: everywhere), or None
        for no regions.
      content_mask: float [H, W] in [0, 1]: where the content counts (its share alpha of the
        search, and the content term); elsewhere matches are searched from the output alone.
      blend_weights: with `style_masks`, each region's term's multiplier (default 1 each).

    Raises:
      ValueError: alpha outside [0, 1], or masks that do not fit the styles or the content;
        the message names the argument.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
    regions = None if style_masks is None else len(style_masks)
    if len(styles) != (regions or 1):
        raise ValueError(f"styles: {count(len(styles), 'pool')} for "
                         f"{count(regions, 'region') if regions else 'no regions'}")
    hw = tuple(content.shape[:2])
    masks = [("content_mask", content_mask), *(("style_masks", m) for m in style_masks or ())]
    for name, mask in masks:
        if mask is not None and tuple(mask.shape) != hw:
            raise ValueError(f"{name}: shape {tuple(mask.shape)} differs from the content's {hw}")
    columns, content_feats = _content_side(params, content, config)
    targets = NeighbourTargets(tuple(styles), columns, content_feats, jnp.float32(alpha), weights)
    grid = grid_shape(content.shape)
    if style_masks is not None:
        ones = jnp.ones(hw, jnp.float32)
        shares = blend_shares(len(styles), blend_weights) * len(styles)
        on_grid = [_on_grid(ones if m is None else m, grid) for m in style_masks]
        targets = targets._replace(style_masks=jnp.stack(on_grid),
                                   style_weights=jnp.asarray(shares))
    if content_mask is not None:
        shapes = {name: content_feats[name].shape[:2] for name in config.loss.content_layers}
        targets = targets._replace(content_mask=_on_grid(content_mask, grid),
                                   content_layer_masks=layer_masks(content_mask, shapes))
    return targets


def _on_grid(mask: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """A mask float [H, W] in [0, 1] area-resized to the hypercolumn grid, flat: float32 [N]."""
    resized = jax.image.resize(jnp.asarray(mask, jnp.float32), grid, "linear", antialias=True)
    return jnp.clip(resized, 0.0, 1.0).reshape(-1)


def matched_distances(columns: jax.Array, query: jax.Array, style: NeighbourStyle,
                       chunk: int) -> jax.Array:
    """d(h_i, s_m(i)) [N]: each of the rows `columns` [N, D]'s distance to the row of
    ``style.columns`` [M, D] nearest (under d, centred by ``style.centre``) to its `query`
    [N, D], found `chunk` queries at a time without gradient."""
    index = nearest_neighbours(query, style.columns, style.centre, chunk)
    return centred_cosine_distance(columns, style.columns[index], style.centre)


def _neighbour_term(columns: jax.Array, query: jax.Array, targets: NeighbourTargets,
                    chunk: int) -> jax.Array:
    """The unweighted neighbour term: the mean matched distance, or with regions
    ``sum_k w_k sum_i m_k(i) d_k(i) / N``, region k matched against its own style only (a
    partition of the picture into regions pulls each position as hard as one style would)."""
    if targets.style_masks is None:
        return jnp.mean(matched_distances(columns, query, targets.style[0], chunk))
    term = 0.0
    for k, style in enumerate(targets.style):
        distances = matched_distances(columns, query, style, chunk)
        term = term + targets.style_weights[k] * jnp.sum(targets.style_masks[k] * distances)
    return term / columns.shape[0]


def objective(image: jax.Array, params: dict, targets: NeighbourTargets,
              config: NeighbourConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The neural-neighbour loss of one model-space image and its components.

    ``total = w_s mean_i d(h_i, s_m(i)) + w_c C + w_tv TV`` with h_i the image's hypercolumns,
    d the centred cosine distance, m(i) the style hypercolumn nearest (under d) to
    ``alpha c_i + (1 - alpha) h_i`` (c_i the content's; alpha times the content mask there,
    with one), searched without gradient, C the content term of `jaxstyle.losses.objective`
    and TV its total variation, normalised as ``config.loss.weight_normalization`` says. With
    regions, the style term is ``sum_k w_k mean_i m_k(i) d_k(i)``, m_k region k's mask and d_k
    the distance to its own style's match.

    Args:
      image: float32 [H, W, 3] in the network's input space.
      params: VGG parameters.
      targets: from `neighbour_targets`.
      config: static, from the run's options.

    Returns:
      ``(total, components)`` with components ``content``, ``style`` and ``tv``, float32
      scalars.
    """
    w, loss = targets.weights, config.loss
    feats = features(params, image, config.layers, loss)
    columns = hypercolumns(feats, config.columns, grid_shape(image.shape))
    alpha = targets.alpha
    if targets.content_mask is not None:
        alpha = alpha * targets.content_mask[:, None]
    query = alpha * targets.content_columns + (1.0 - alpha) * columns
    neighbour = w.style * _neighbour_term(columns, query, targets, config.chunk)
    content, tv = content_and_tv(image, feats, targets, loss)
    return neighbour + content + tv, {"content": content, "style": neighbour, "tv": tv}


def content_and_tv(image: jax.Array, feats: dict, targets, loss: LossConfig
                   ) -> tuple[jax.Array, jax.Array]:
    """The weighted content and total-variation terms of a model-space image [H, W, 3] whose
    activations are `feats`, as `jaxstyle.losses.objective` has them (normalised as
    ``loss.weight_normalization`` says); `targets` has the fields ``weights``, ``content``
    and ``content_layer_masks`` of `NeighbourTargets`."""
    w = targets.weights
    relative = loss.weight_normalization == "relative"
    content = 0.0
    for name in loss.content_layers:
        mask = targets.content_layer_masks and targets.content_layer_masks[name]
        term = CONTENT_LOSSES[loss.content_loss](feats[name], targets.content[name], mask)
        if relative and loss.content_loss == "mse":
            squared, area = masked(jnp.square(targets.content[name]), mask)
            term = term / jnp.maximum(jnp.sum(squared) / (area * squared.shape[-1]), 1e-30)
        content = content + w.content * term / (len(loss.content_layers) if relative else 1)
    tv = w.tv * tv_loss(image)
    if relative:  # the mean absolute neighbour difference, in pixel units
        tv = tv / (float(image.size) * loss.model_range)
    return content, tv
