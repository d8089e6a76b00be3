"""Images between sizes: the antialiased resize every scale of a run uses, the longest-side
rule that gives each scale its size, and the shape buckets of the coarser scales.

Pure functions of arrays and shapes; reading and writing image files is `jaxstyle.images`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def resize(image: jax.Array, height: int, width: int) -> jax.Array:
    """Antialiased bicubic resize of float [H, W, C] to [height, width, C], clipped to [0, 1]."""
    if image.shape[:2] == (height, width):
        return jnp.asarray(image)
    return _resize(jnp.asarray(image), height, width)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _resize(image: jax.Array, height: int, width: int) -> jax.Array:
    resized = jax.image.resize(image, (height, width, image.shape[2]), "cubic")
    return jnp.clip(resized, 0.0, 1.0)


def fit_longest_side(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """(H, W) scaled so that the longest side is `size`, keeping the aspect ratio."""
    h, w = shape[:2]
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def bucket_step(size: int) -> int:
    """The step, in pixels, to which `fit_bucket` rounds the shorter side at a longest side of
    `size`: 8 px at 128, 16 at 256, 32 at 512 (about 1/16 of the side, a multiple of 8)."""
    return 8 * max(1, round(size / 128))


def fit_bucket(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """(H, W) with longest side `size` and the shorter side `fit_longest_side`'s rounded to a
    multiple of `bucket_step` (one step at least, `size` at most).

    A coarse scale's picture is only a start for the next scale, resized to it, so its aspect
    ratio may be a few per cent off: pictures of nearby shapes then share a coarse scale's
    shape, and what is compiled for one serves the next (a 3:2 photo and one cropped a few
    pixels differently both run at 128x88 px; the stretch is at most half a step, under 5 %
    of the shorter side of a 3:2 picture, and undone by the resize to the next scale).
    """
    h, w = fit_longest_side(shape, size)
    if h == w:
        return h, w
    step = bucket_step(size)
    short = min(size, max(step, step * round(min(h, w) / step)))
    return (short, w) if h <= w else (h, short)
