"""Winograd's minimal filtering for 3x3 convolutions (Lavin and Gray, 2016).

A 3x3 convolution producing an m x m output tile from an (m+2) x (m+2) input tile needs 9 m^2
multiplications per channel pair done directly, and (m+2)^2 with Winograd's F(m x m, 3 x 3):
2.25x fewer for m = 2, 4x fewer for m = 4. The input and output tiles go through fixed linear
transforms (additions and small constant multiples), and the multiplications become (m+2)^2
matrix products over channels, which is where a CPU spends its time on VGG19's wide layers.

F(4x4) is accurate to about 2e-5 of the output's scale in float32, F(2x2) to about 2e-6. The
transforms' constants would lose too much in bfloat16, so they always run in float32; only the
products may run in bfloat16 (``products``), with float32 sums: F(2x2) is then accurate to about
3e-3, F(4x4) to about 2e-2 (too coarse).
"""

from __future__ import annotations

import jax
import numpy as np
from jax import lax

TILES = (2, 4)

# B^T (input transform), G (kernel transform) and A^T (output transform) for F(m x m, 3 x 3),
# with interpolation points 0, 1, -1 (m = 2) and 0, 1, -1, 2, -2 (m = 4), both plus infinity.
_MATRICES = {
    2: (
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]]),
    ),
    4: (
        np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]]),
    ),
}


def _combine(coefficients: np.ndarray, parts: list[jax.Array]) -> jax.Array:
    # A linear combination with constant coefficients, skipping zeros and unit multiplications:
    # written out like this, XLA fuses each transform into one elementwise loop. lax, not
    # jax.numpy, because a network traces a few thousand of these: jnp's operators cost ~10x
    # more to trace.
    total = None
    for c, part in zip(coefficients.tolist(), parts):
        if c == 0:
            continue
        term = (part if c == 1 else lax.neg(part) if c == -1
                else lax.mul(part, np.asarray(c, part.dtype)))
        total = term if total is None else lax.add(total, term)
    return total


def _split(x: jax.Array, axis: int = 0) -> list[jax.Array]:
    return [lax.index_in_dim(x, i, axis, keepdims=False) for i in range(x.shape[axis])]


def _stack(parts: list[jax.Array]) -> jax.Array:
    return lax.concatenate([lax.expand_dims(p, (0,)) for p in parts], 0)


def transform_kernel(kernel: jax.Array, tile: int) -> jax.Array:
    """G g G^T for each channel pair.

    Args:
      kernel: float [3, 3, I, O].
      tile: output tile side m, one of `TILES`.

    Returns:
      float [(m+2)^2, I, O], the kernel in the Winograd domain.
    """
    _, g, _ = _MATRICES[tile]
    out = []
    for row in g:
        rows = _combine(row, _split(kernel))
        out += [_combine(col, _split(rows)) for col in g]
    return _stack(out)


def conv3x3(x: jax.Array, kernel: jax.Array, tile: int, products=None) -> jax.Array:
    """3x3 stride-1 convolution with zero padding 1, by Winograd's F(tile x tile, 3 x 3).

    Computes what ``lax.conv_general_dilated(x, kernel, (1, 1), "SAME")`` does in NHWC/HWIO, to
    float32 rounding amplified by the transforms (see the module's docstring).

    Args:
      x: float [N, H, W, I].
      kernel: float [3, 3, I, O].
      tile: output tile side m, one of `TILES`.
      products: the dtype the Winograd-domain products take their operands in (summed in
        x's dtype), e.g. ``jnp.bfloat16``; None: x's dtype.

    Returns:
      float [N, H, W, O].
    """
    if tile not in _MATRICES:
        raise ValueError(f"tile: expected one of {TILES}, got {tile!r}")
    return conv3x3_transformed(x, transform_kernel(kernel, tile), products)


def conv3x3_transformed(x: jax.Array, u: jax.Array, products=None) -> jax.Array:
    """`conv3x3` with the kernel already in the Winograd domain: for a kernel that stays the same
    over many convolutions (a network's weights), transform it once with `transform_kernel`.

    Args:
      x: float [N, H, W, I].
      u: ``transform_kernel(kernel, tile)``, float [(tile+2)^2, I, O]; its first axis gives the
        tile.
      products: as for `conv3x3`.

    Returns:
      float [N, H, W, O].
    """
    alpha = {(m + 2) ** 2: m + 2 for m in TILES}.get(u.shape[0])
    if alpha is None:
        raise ValueError(f"u: expected a first axis of {[(m + 2) ** 2 for m in TILES]}, got "
                         f"shape {tuple(u.shape)}")
    tile = alpha - 2
    bt, _, at = _MATRICES[tile]
    n, h, w, c = x.shape
    th, tw = -(-h // tile), -(-w // tile)
    pads = ((0, 0, 0), (1, th * tile + 1 - h, 0), (1, tw * tile + 1 - w, 0), (0, 0, 0))
    xp = lax.pad(x, np.zeros((), x.dtype), pads)

    # Input tiles overlap by 2: row i of every tile is the strided slice starting at row i.
    rows = [lax.slice_in_dim(xp, i, i + (th - 1) * tile + 1, tile, axis=1) for i in range(alpha)]
    v = []
    for coefficients in bt:
        mixed = _combine(coefficients, rows)
        cols = [lax.slice_in_dim(mixed, j, j + (tw - 1) * tile + 1, tile, axis=2)
                for j in range(alpha)]
        v += [_combine(col, cols) for col in bt]
    v = lax.reshape(_stack(v), (alpha * alpha, n * th * tw, c))

    if products is not None:
        v, u = v.astype(products), u.astype(products)
    m = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))),  # [alpha^2, tiles, O]
                        preferred_element_type=x.dtype)
    o = u.shape[-1]
    m = lax.reshape(m, (alpha, alpha, n, th, tw, o))

    y = []
    for coefficients in at:
        mixed = _combine(coefficients, _split(m))
        y += [_combine(col, _split(mixed)) for col in at]
    y = lax.transpose(lax.reshape(_stack(y), (tile, tile, n, th, tw, o)), (2, 3, 0, 4, 1, 5))
    y = lax.reshape(y, (n, th * tile, tw * tile, o))
    return lax.slice(y, (0, 0, 0, 0), (n, h, w, o))
