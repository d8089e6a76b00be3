"""The objective's terms other than style: content distances, total variation, temporal loss.

Each is a pure function of one image's features or pixels; batch with `jax.vmap`. The style
distances are `jaxstyle.style_losses`'; `jaxstyle.losses.objective` weighs and sums them all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxstyle import choices
from jaxstyle.style_losses import check_hwc, masked


def content_mse(
    features: jax.Array, target: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """neural-style's content loss: the mean squared difference of activations [H, W, C], over
    the region `mask` [H, W] if given."""
    check_hwc(features, "features")
    if features.shape != target.shape:
        raise ValueError(f"target: shape {target.shape} differs from features {features.shape}")
    diff, area = masked(features.astype(jnp.float32) - target.astype(jnp.float32), mask)
    return jnp.sum(jnp.square(diff)) / (area * features.shape[-1])


SELF_SIMILARITY_SAMPLES = 32
"""Positions per side of the grid on which `self_similarity_loss` compares features: STROTSS
(Kolkin et al. 2019) samples 1024 positions too, which keeps the N x N matrices small."""


def _self_similarity(flat: jax.Array) -> jax.Array:
    unit = flat / jnp.maximum(jnp.linalg.norm(flat, axis=-1, keepdims=True), 1e-8)
    distance = 1.0 - unit @ unit.T
    return distance / jnp.maximum(jnp.sum(distance, axis=0, keepdims=True), 1e-8)


def self_similarity_loss(
    features: jax.Array, target: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """STROTSS's content loss (Kolkin, Salavon & Shakhnarovich 2019): compare self-similarities.

    At up to `SELF_SIMILARITY_SAMPLES`^2 grid positions, the pairwise cosine distances of the
    feature vectors, each column normalised to sum 1, are compared with the content's by mean
    absolute difference. Layout is kept while colours and textures are free to change. Departure
    from STROTSS: a fixed grid instead of random positions (L-BFGS needs a fixed objective), and
    the mean is multiplied by the number of positions N so that it does not shrink as 1/N.

    Args:
      features: float [H, W, C], the image's activations.
      target: float [H, W, C], the content's activations.
      mask: float [H, W] or None (pairs weighted by both positions' mask values).

    Returns:
      float32 scalar.
    """
    check_hwc(features, "features")
    if features.shape != target.shape:
        raise ValueError(f"target: shape {target.shape} differs from features {features.shape}")
    h, w, c = features.shape
    sy, sx = max(1, -(-h // SELF_SIMILARITY_SAMPLES)), max(1, -(-w // SELF_SIMILARITY_SAMPLES))
    pick = lambda a: a[sy // 2::sy, sx // 2::sx]
    f = pick(features).reshape(-1, c).astype(jnp.float32)
    t = pick(target).reshape(-1, c).astype(jnp.float32)
    difference = jnp.abs(_self_similarity(f) - _self_similarity(t))
    n = f.shape[0]
    if mask is None:
        return jnp.mean(difference) * n
    m = pick(mask).reshape(-1)
    pairs = m[:, None] * m[None, :]
    return jnp.sum(difference * pairs) / jnp.maximum(jnp.sum(pairs), 1e-6) * n


CONTENT_LOSSES = dict(zip(choices.CONTENT_LOSSES, (content_mse, self_similarity_loss)))
"""Content losses by name: neural-style's mean squared error, or STROTSS's self-similarity."""


def temporal_loss(image: jax.Array, warped: jax.Array, weights: jax.Array) -> jax.Array:
    """Ruder et al.'s short-term temporal loss: ``sum(c * (x - w)^2) / D`` over the image
    float [H, W, C], the warped previous frame [H, W, C] and the consistency weights c [H, W],
    with D = H * W * C. The weights act per pixel (a mask applied to an already summed loss
    would not)."""
    check_hwc(image, "image")
    diff = image.astype(jnp.float32) - warped.astype(jnp.float32)
    return jnp.sum(weights[..., None] * jnp.square(diff)) / float(image.size)  # past int32


def tv_loss(image: jax.Array) -> jax.Array:
    """Anisotropic total variation: sum of absolute neighbour differences of float [H, W, C]."""
    check_hwc(image, "image")
    return jnp.sum(jnp.abs(image[1:] - image[:-1])) + jnp.sum(jnp.abs(image[:, 1:] - image[:, :-1]))
