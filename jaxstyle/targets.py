"""The objective's targets: what `jaxstyle.losses.objective` matches an image's features to.

The content photo's activations (`content_targets`), the style images' blended statistics
(`style_targets`, `style_target_list`), and all of them with optional regions and the relative
objective's style reference (`region_targets`); `redraw_targets` redraws a random style loss's
part. Every function here is pure and works on one image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.errors import count
from jaxstyle.losses import (
    LossConfig,
    LossWeights,
    Targets,
    features,
    network_features,
    style_distance,
)


def content_targets(params: dict, content: jax.Array, config: LossConfig) -> dict[str, jax.Array]:
    """Activations of the model-space content image [H, W, 3] at each content layer."""
    return features(params, content, config.content_layers, config)


def blend_shares(n: int, blend_weights: Sequence[float] | None) -> np.ndarray:
    """Each of `n` style images' share, float32 [n] summing to 1 (equal when `blend_weights` is
    None)."""
    if n == 0:
        raise ValueError("styles: at least one style image is needed")
    weights = np.ones(n) if blend_weights is None else np.asarray(blend_weights, np.float32)
    if weights.shape != (n,):
        raise ValueError(f"blend_weights: {count(weights.shape[0], 'weight')} for "
                         f"{count(n, 'style image')}")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("blend_weights: weights must be >= 0 and not all zero")
    return (weights / weights.sum()).astype(np.float32)


def style_targets(
    params: dict,
    styles: Sequence[jax.Array],
    config: LossConfig,
    blend_weights: Sequence[float] | None = None,
) -> dict:
    """Blended style statistics (Gram matrices by default) of one or more model-space images.

    Args:
      params: VGG parameters (`jaxstyle.vgg_features`).
      styles: model-space style images, each float32 [H_i, W_i, 3] (sizes may differ).
      config: the objective's layers, pooling and style loss.
      blend_weights: one non-negative weight per style image, normalised to sum 1 (default: equal).

    Returns:
      ``{layer: target}``, the weighted sum of the styles' statistics (``float32 [C, C]`` for
      Gram matrices), prepared for ``config.style_loss.distance``.

    Raises:
      ValueError: no styles, or blend weights that do not match or sum to zero.
    """
    weights = blend_shares(len(styles), blend_weights)
    targets = None
    for weight, style in zip(weights, styles):
        one = weighted_statistics(params, style, weight, config)
        targets = one if targets is None else jax.tree_util.tree_map(jnp.add, targets, one)
    return {name: config.style_loss.prepare(t) for name, t in targets.items()}


def weighted_statistics(params: dict, image: jax.Array, weight: float, config: LossConfig,
                        mask: jax.Array | None = None) -> dict:
    """``weight`` times the style statistics of a model-space image [H, W, 3] at each style layer,
    over the region `mask` [H, W] (downsampled to each layer) or all of it."""
    return _weighted_statistics(params, image, jnp.float32(weight), mask, config.style_layers,
                                config.pooling, config.precision, config.convolution,
                                config.style_loss.statistics)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8))
def _weighted_statistics(params: dict, image: jax.Array, weight: jax.Array,
                         mask: jax.Array | None, layers: tuple[str, ...], pooling: str,
                         precision: str, convolution: str, statistics: Callable) -> dict:
    # Features and statistics in one compiled call: run op by op, the statistics' small
    # operations were each compiled separately, seconds of a run's start.
    feats = network_features(params, image, layers, pooling, precision, convolution)
    masks = (dict.fromkeys(layers) if mask is None
             else layer_masks(mask, {name: feats[name].shape[:2] for name in layers}))
    return {name: jax.tree_util.tree_map(lambda t: weight * t, statistics(feats[name], masks[name]))
            for name in layers}


def layer_masks(mask: jax.Array, shapes: dict[str, tuple[int, int]]) -> dict[str, jax.Array]:
    """Area-downsamples a mask float [H, W] in [0, 1] to each layer's (h, w)."""
    return {
        name: jnp.clip(jax.image.resize(mask, hw, "linear", antialias=True), 0.0, 1.0)
        for name, hw in shapes.items()
    }


def style_target_list(
    params: dict,
    styles: Sequence[jax.Array],
    config: LossConfig,
    blend_weights: Sequence[float] | None = None,
    regions: bool = False,
) -> tuple[dict, ...]:
    """`Targets.style` for model-space style images: one blended target, or with `regions` one
    unblended target per style image (each style then paints its own masked region)."""
    if regions:
        blend_shares(len(styles), blend_weights)
        return tuple(style_targets(params, [style], config) for style in styles)
    return (style_targets(params, styles, config, blend_weights),)


def region_targets(
    params: dict,
    content: jax.Array,
    styles: Sequence[jax.Array],
    config: LossConfig,
    style_masks: Sequence[jax.Array | None] | None = None,
    content_mask: jax.Array | None = None,
    blend_weights: Sequence[float] | None = None,
    style: tuple[dict, ...] | None = None,
    *,
    weights: LossWeights,
) -> Targets:
    """All targets of `jaxstyle.losses.objective`, with optional regions.

    Without masks the styles are blended into one target (neural-style's behaviour). With
    `style_masks`, style i is matched only where its mask is white: each style keeps its own
    target and its loss is computed on the output's features inside the mask, downsampled to every
    layer's resolution; `blend_weights` then scale each region's loss (default 1 each).

    Args:
      params: VGG parameters (`jaxstyle.vgg_features`).
      content: model-space content image float32 [H, W, 3] (the output's size).
      styles: model-space style images.
      config: the objective's configuration.
      style_masks: one float [H, W] mask in [0, 1] per style image, or None for no regions; a
        None entry means "everywhere".
      content_mask: float [H, W] in [0, 1]: the content loss counts only where it is white.
      blend_weights: per-style weights.
      style: `Targets.style` computed before (`style_target_list` with ``regions`` set as
        `style_masks` is): a batch of content images or the tiles of an output compute them once.
      weights: the terms' weights (`LossWeights`), carried as `Targets.weights`.

    Returns:
      The `Targets` for `objective`.
    """
    layers = config.layers
    feats = features(params, content, layers, config)
    shapes = {name: feats[name].shape[:2] for name in layers}
    regions = style_masks is not None
    if regions and len(style_masks) != len(styles):
        raise ValueError(f"style_masks: {count(len(style_masks), 'mask')} for "
                         f"{count(len(styles), 'style image')}")
    shares = blend_shares(len(styles), blend_weights)
    targets = Targets(
        content={n: feats[n] for n in config.content_layers},
        style=tuple(style or style_target_list(params, styles, config, blend_weights, regions)),
        style_masks=None if not regions else tuple(
            None if m is None else layer_masks(m, {n: shapes[n] for n in config.style_layers})
            for m in style_masks),
        style_weights=jnp.asarray(shares * len(styles)) if regions else None,
        content_mask=None if content_mask is None else layer_masks(
            content_mask, {n: shapes[n] for n in config.content_layers}),
        weights=weights,
    )
    if config.weight_normalization != "relative":
        return targets
    return _with_style_reference(targets, feats, config)


def _with_style_reference(targets: Targets, feats: dict, config: LossConfig) -> Targets:
    """`targets` with `Targets.style_reference`: the photo's own distance to each style region
    at each layer, the content features `feats` being the photo's. The relative objective's
    style term is the output's distance as a fraction of its layer-weighted sum (the quality
    figures' style ratio)."""
    masks = targets.style_masks or (None,) * len(targets.style)
    return targets._replace(style_reference=_style_reference(
        config, {n: feats[n] for n in config.style_layers}, targets.style, tuple(masks)))


@functools.partial(jax.jit, static_argnums=0)
def _style_reference(config: LossConfig, feats: dict, style: tuple, masks: tuple) -> jax.Array:
    # One compiled call: op by op, each layer's few small operations were compiled and
    # dispatched on their own, about a second of a run's start (the studio's first picture).
    return jnp.stack([style_distance(config, feats, target, mask)
                      for target, mask in zip(style, masks)])


def redraw_targets(targets: Targets, config: LossConfig, key: jax.Array) -> Targets:
    """`targets` with the style loss's random part redrawn (`StyleLoss.redraw`), each style
    region's and each layer's from its own key folded from `key`."""
    redraw = config.style_loss.redraw
    return targets._replace(style=tuple(
        {name: redraw(target[name], jax.random.fold_in(jax.random.fold_in(key, i), j))
         for j, name in enumerate(config.style_layers)}
        for i, target in enumerate(targets.style)))
