"""Images between sizes: the antialiased resize every scale of a run uses, and the longest-side
rule that gives each scale its size.

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
