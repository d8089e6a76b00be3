"""Colour control (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer").

Pure functions on float RGB images [H, W, 3] in [0, 1]: YCbCr conversion (full-range BT.601, as
JPEG and neural-style's ``-original_colors`` use), luminance matching, and mean/covariance colour
matching.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# NumPy constants: a module-level jnp array would start JAX's backend on import.
_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR).astype(np.float32)
_CHROMA_OFFSET = np.array([0.0, 0.5, 0.5], np.float32)
_EPS = 1e-5


def _check_rgb(image: jax.Array, argument: str) -> None:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{argument}: expected an RGB image [H, W, 3], got {tuple(image.shape)}")


def rgb_to_ycbcr(rgb: jax.Array) -> jax.Array:
    """float [..., 3] RGB in [0, 1] -> [..., 3] (Y, Cb, Cr), each in [0, 1]."""
    return rgb @ _RGB_TO_YCBCR.T + _CHROMA_OFFSET


def ycbcr_to_rgb(ycbcr: jax.Array) -> jax.Array:
    """Inverse of `rgb_to_ycbcr` (not clipped)."""
    return (ycbcr - _CHROMA_OFFSET) @ _YCBCR_TO_RGB.T


def luminance(rgb: jax.Array) -> jax.Array:
    """float [H, W, 3] RGB -> [H, W, 1] luminance Y."""
    return rgb_to_ycbcr(rgb)[..., :1]


def gray_rgb(y: jax.Array) -> jax.Array:
    """[H, W, 1] luminance -> [H, W, 3] grey RGB with that luminance."""
    return jnp.repeat(y, 3, axis=-1)


def match_luminance(style_y: jax.Array, content_y: jax.Array) -> jax.Array:
    """Shifts and scales the style's luminance to the content's mean and standard deviation.

    Gatys et al. 2017, section 5.1: ``L_s' = sigma_c / sigma_s * (L_s - mu_s) + mu_c``.
    """
    scale = jnp.std(content_y) / (jnp.std(style_y) + _EPS)
    return jnp.clip((style_y - jnp.mean(style_y)) * scale + jnp.mean(content_y), 0.0, 1.0)


def swap_chroma(output: jax.Array, content: jax.Array) -> jax.Array:
    """neural-style's ``-original_colors 1``: the output's luminance with the content's Cb, Cr.

    Args:
      output: float [H, W, 3] RGB, the stylized image.
      content: float [H, W, 3] RGB of the same size.

    Returns:
      float [H, W, 3] RGB in [0, 1].
    """
    _check_rgb(output, "output")
    if output.shape != content.shape:
        raise ValueError(f"content: shape {content.shape} differs from output {output.shape}")
    ycbcr = jnp.concatenate([luminance(output), rgb_to_ycbcr(content)[..., 1:]], axis=-1)
    return jnp.clip(ycbcr_to_rgb(ycbcr), 0.0, 1.0)


def _sqrtm(a: jax.Array, inverse: bool = False) -> jax.Array:
    values, vectors = jnp.linalg.eigh(a)
    values = jnp.maximum(values, _EPS)
    return (vectors * (values ** (-0.5 if inverse else 0.5))) @ vectors.T


def match_colors(source: jax.Array, target: jax.Array) -> jax.Array:
    """Recolours `source` so its pixels' mean and covariance equal `target`'s.

    The linear map ``x -> C_t^(1/2) C_s^(-1/2) (x - mu_s) + mu_t`` (Gatys et al. 2017's
    colour-histogram matching in its mean/covariance form).

    Args:
      source: float [H, W, 3] RGB, e.g. the style image.
      target: float [H', W', 3] RGB whose colour statistics to take, e.g. the content image.

    Returns:
      float [H, W, 3] RGB, clipped to [0, 1].
    """
    _check_rgb(source, "source")
    _check_rgb(target, "target")
    s, t = source.reshape(-1, 3), target.reshape(-1, 3)
    mu_s, mu_t = s.mean(0), t.mean(0)
    cov_s = jnp.cov(s, rowvar=False) + _EPS * jnp.eye(3)
    cov_t = jnp.cov(t, rowvar=False) + _EPS * jnp.eye(3)
    transform = _sqrtm(cov_t) @ _sqrtm(cov_s, inverse=True)
    return jnp.clip((s - mu_s) @ transform.T + mu_t, 0.0, 1.0).reshape(source.shape)
