"""An image as a Laplacian pyramid: the variable some optimizations change instead of pixels.

STROTSS and Neural Neighbor Style Transfer (Kolkin et al. 2019, 2022) optimize the bands of a
Laplacian pyramid rather than the pixels: a step on a coarse band moves a whole region at once,
so coarse structure settles in few iterations while fine bands add detail. Here the bands are
one flat vector (what the optimizers take), and `objective` wraps any objective of an image.

    shapes = pyramid.band_shapes((170, 256, 3))
    z = pyramid.decompose(image, shapes)        # image == pyramid.synthesize(z, shapes)
    value, aux = pyramid.objective(z, params, targets,
                                   pyramid.Banded(losses.objective, config, shapes))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

SMALLEST_SIDE = 16
"""Bands are halved while their short side stays at least this many pixels."""

MAX_BANDS = 5
"""At most this many bands (the finest, at the image's size, counts)."""


def band_shapes(shape: Sequence[int], smallest: int = SMALLEST_SIDE,
                bands: int = MAX_BANDS) -> tuple[tuple[int, ...], ...]:
    """The shapes of an image's bands, finest (the image's own shape [H, W, C]) first, each next
    one half the previous (rounded up), while its short side is at least `smallest`."""
    h, w, *rest = shape
    shapes = [(h, w, *rest)]
    while len(shapes) < bands and min(-(-h // 2), -(-w // 2)) >= smallest:
        h, w = -(-h // 2), -(-w // 2)
        shapes.append((h, w, *rest))
    return tuple(shapes)


def _resize(image: jax.Array, shape: Sequence[int]) -> jax.Array:
    # Linear, not clipped: the bands hold signed detail and need not stay in any range.
    return jax.image.resize(image, tuple(shape), "linear")


def decompose(image: jax.Array, shapes: Sequence[Sequence[int]]) -> jax.Array:
    """The bands of `image` (shape ``shapes[0]``) as one flat vector: each band is its level of
    the Gaussian pyramid minus the next coarser level enlarged; the coarsest is its level."""
    levels = [jnp.asarray(image, jnp.float32)]
    for shape in shapes[1:]:
        levels.append(_resize(levels[-1], shape))
    bands = [fine - _resize(coarse, fine.shape) for fine, coarse in zip(levels, levels[1:])]
    return jnp.concatenate([b.ravel() for b in (*bands, levels[-1])])


def synthesize(z: jax.Array, shapes: Sequence[Sequence[int]]) -> jax.Array:
    """The image whose bands are `z` (`decompose`'s inverse, exact to float32 rounding)."""
    sizes = [math.prod(s) for s in shapes]
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    bands = [z[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
    image = bands[-1]
    for band in reversed(bands[:-1]):
        image = band + _resize(image, band.shape)
    return image


class Banded(NamedTuple):
    """`objective`'s static argument: the objective of an image it wraps, and the bands'
    shapes.

    Attributes:
      loss_fn: ``(image, params, targets, loss_static) -> (total, components)``.
      loss_static: its static last argument.
      shapes: the bands' shapes (`band_shapes`).
    """

    loss_fn: Callable
    loss_static: object
    shapes: tuple[tuple[int, ...], ...]


def objective(z: jax.Array, params, targets, static: Banded) -> tuple:
    """``static.loss_fn(synthesize(z, static.shapes), params, targets, static.loss_static)``:
    any objective of an image, of its bands."""
    return static.loss_fn(synthesize(z, static.shapes), params, targets, static.loss_static)
