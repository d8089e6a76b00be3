"""Tiled rendering: outputs larger than memory allows, one overlapping tile at a time.

The style targets come from the whole style image at the output's scale, accumulated tile by
tile so that no full-size activation is ever held. Tiles are optimized in raster order; each one
starts from the current canvas, so it sees its finished neighbours in the overlap, and is
feathered in with linear ramps over the overlap towards those neighbours, which hides the seams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import losses
from jaxstyle.errors import JaxstyleError
from jaxstyle.images import fit_longest_side, resize
from jaxstyle.options import StyleOptions
from jaxstyle.stylize import output_shape
from jaxstyle.weights import VGGWeights


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `length` with at least `overlap`."""
    if length <= tile:
        return [0]
    step = tile - overlap
    count = -(-(length - overlap) // step)  # ceil
    last = length - tile
    return [round(i * last / (count - 1)) for i in range(count)]


def _ramp(n: int, overlap: int, rising: bool) -> np.ndarray:
    """Blend weights along one side of a tile: a linear ramp over the first `overlap` pixels
    when a finished neighbour lies before it, else all ones."""
    w = np.ones(n, np.float32)
    if rising:
        w[:overlap] = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    return w


def tiled_style_targets(
    weights: VGGWeights,
    styles: Sequence[jax.Array],
    options: StyleOptions,
    output_side: int,
) -> list[dict]:
    """Style targets of whole style images at the output's scale, computed tile by tile.

    Each style is resized to ``style_scale * output_side`` (its own scale from
    ``style_scales`` if given) and cut into tiles whose interiors partition it; each tile is run
    with a margin of context and its statistics are taken over its interior only, then averaged
    weighted by area: exact for Gram matrices and means (averages over pixels) up to context
    beyond the margin, an approximation for covariances.
    """
    config = options.loss_config()
    pre = weights.preprocessing
    scales = options.style_scales or (options.style_scale,) * len(styles)
    blend = losses._check_blend(len(styles), options.style_blend_weights)
    tile = options.tile_size
    margin = min(options.tile_overlap, tile // 4)
    inner = tile - 2 * margin
    total = None
    for style, scale, share in zip(styles, scales, blend):
        hw = fit_longest_side(jnp.shape(style), max(1, round(scale * output_side)))
        image = pre.to_model(resize(jnp.asarray(style, jnp.float32), *hw))
        step_y = hw[0] if hw[0] <= tile else inner  # a side that fits is not cut at all
        step_x = hw[1] if hw[1] <= tile else inner
        for top in range(0, hw[0], step_y):
            for left in range(0, hw[1], step_x):
                # The interior [top, top+step_y) x [left, left+step_x) is what counts; up to
                # `margin` pixels around it give the convolutions real context instead of
                # zero padding, and are masked out of the statistics.
                y0, x0 = max(0, top - margin), max(0, left - margin)
                y1, x1 = min(hw[0], top + step_y + margin), min(hw[1], left + step_x + margin)
                mask = np.zeros((y1 - y0, x1 - x0), np.float32)
                mask[top - y0 : min(hw[0], top + step_y) - y0,
                     left - x0 : min(hw[1], left + step_x) - x0] = 1.0
                fraction = mask.sum() / (hw[0] * hw[1])
                part = losses.weighted_statistics(weights.params, image[y0:y1, x0:x1],
                                                  share * fraction, config, jnp.asarray(mask))
                total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
    return [{name: config.style_loss.prepare(t) for name, t in total.items()}]


def stylize_tiled(
    content: jax.Array,
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions,
    run_tile: Callable,
    init_image: jax.Array | None = None,
) -> tuple[np.ndarray, list]:
    """Renders the output tile by tile.

    Args:
      content: float [H, W, 3] RGB in [0, 1].
      styles: style images.
      weights: the network.
      options: with ``tile_size`` and ``tile_overlap`` set.
      run_tile: ``(content_tile, init_tile, style_targets, index, count) -> StylizeResult``,
        a single-tile run (supplied by `jaxstyle.stylize`).
      init_image: start from this image (resized to the output) instead of ``options.init``.

    Returns:
      ``(image, results)``: float32 [H', W', 3] RGB and each tile's result in raster order.
    """
    if options.original_colors == "luminance" or options.match_style_colors:
        raise JaxstyleError("tiles: --original-colors luminance and --match-style-colors are not "
                            "supported with tiling yet")
    shape = output_shape(jnp.shape(content), options)
    tile, overlap = options.tile_size, options.tile_overlap
    content_rgb = np.asarray(resize(jnp.asarray(content, jnp.float32), *shape))
    if init_image is not None:
        canvas = np.asarray(resize(jnp.asarray(init_image, jnp.float32), *shape))
    elif options.init == "noise":
        canvas = np.asarray(jax.random.uniform(jax.random.key(options.seed), (*shape, 3)))
    else:
        canvas = content_rgb.copy()
    targets = tiled_style_targets(weights, styles, options, max(shape))
    rows, cols = tile_starts(shape[0], tile, overlap), tile_starts(shape[1], tile, overlap)
    results, count = [], len(rows) * len(cols)
    for r, top in enumerate(rows):
        for c, left in enumerate(cols):
            window = (slice(top, top + tile), slice(left, left + tile))
            result = run_tile(content_rgb[window], canvas[window], targets, len(results), count)
            h, w = result.image.shape[:2]
            alpha = np.outer(_ramp(h, overlap, r > 0), _ramp(w, overlap, c > 0))
            canvas[window] = alpha[..., None] * result.image + (1 - alpha[..., None]) * canvas[window]
            results.append(result)
    return canvas, results
