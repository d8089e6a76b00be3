"""Tiles: outputs larger than memory allows, one overlapping tile at a time.

The style targets come from the whole style image at the output's scale, accumulated tile by
tile so that no full-size activation is ever held (`tiled_style_target_list`). The driver
(`jaxstyle.stylize`) optimizes the tiles of `jaxstyle.stages` in raster order; each one starts from
the current canvas, so it sees its finished neighbours in the overlap, and is feathered in with
linear ramps over the overlap towards those neighbours (`paste`), which hides the seams.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.losses import LossConfig
from jaxstyle.targets import blend_shares, weighted_statistics


def _ramp(n: int, overlap: int, rising: bool) -> np.ndarray:
    """Blend weights along one side of a tile: a linear ramp over the first `overlap` pixels
    when a finished neighbour lies before it, else all ones."""
    w = np.ones(n, np.float32)
    if rising:
        w[:overlap] = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    return w


def paste(canvas: np.ndarray, tile: np.ndarray, window: tuple[int, int, int, int],
          overlap: int) -> np.ndarray:
    """`canvas` float32 [H, W, 3] with `tile` [h, w, 3] feathered in at `window` (top, left, h,
    w): linear ramps over `overlap` pixels on the sides that have a tile before them (above, to
    the left), a plain copy elsewhere. Returns a new array."""
    top, left, h, w = window
    alpha = np.outer(_ramp(h, overlap, top > 0), _ramp(w, overlap, left > 0))[..., None]
    out = np.array(canvas, np.float32, copy=True)
    out[top:top + h, left:left + w] = alpha * tile + (1 - alpha) * out[top:top + h, left:left + w]
    return out


def tiled_statistics(params: dict, image: jax.Array, weight: float, config: LossConfig,
                     tile: int, margin: int) -> dict:
    """`weight` times the style statistics of a model-space image [H, W, 3], computed tile by tile.

    The image is cut into tiles whose interiors partition it; each tile runs with up to `margin`
    pixels of context around its interior, its statistics are taken over the interior only and
    averaged weighted by area: exact for Gram matrices and means (averages over pixels) up to
    context beyond the margin, an approximation for covariances.
    """
    height, width = jnp.shape(image)[:2]
    inner = tile - 2 * margin
    step_y = height if height <= tile else inner  # a side that fits is not cut at all
    step_x = width if width <= tile else inner
    total = None
    for top in range(0, height, step_y):
        for left in range(0, width, step_x):
            y0, x0 = max(0, top - margin), max(0, left - margin)
            y1, x1 = min(height, top + step_y + margin), min(width, left + step_x + margin)
            mask = np.zeros((y1 - y0, x1 - x0), np.float32)
            mask[top - y0:min(height, top + step_y) - y0,
                 left - x0:min(width, left + step_x) - x0] = 1.0
            fraction = mask.sum() / (height * width)
            part = weighted_statistics(params, image[y0:y1, x0:x1], weight * fraction,
                                              config, jnp.asarray(mask))
            total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
    return total


def tiled_style_target_list(
    params: dict,
    styles: Sequence[jax.Array],
    config: LossConfig,
    blend_weights: Sequence[float] | None,
    regions: bool,
    tile: int,
    overlap: int,
) -> tuple[dict, ...]:
    """`jaxstyle.targets.style_target_list` computed tile by tile (`tiled_statistics`), for
    style images too large to run whole; tiles of `tile` px with ``min(overlap, tile // 4)``
    pixels of context."""
    margin = min(overlap, tile // 4)
    shares = blend_shares(len(styles), blend_weights)
    if regions:
        parts = [tiled_statistics(params, s, 1.0, config, tile, margin) for s in styles]
    else:
        parts = [jax.tree_util.tree_map(
            lambda *t: sum(t),
            *[tiled_statistics(params, s, share, config, tile, margin)
              for s, share in zip(styles, shares)])]
    return tuple({name: config.style_loss.prepare(t) for name, t in part.items()} for part in parts)
