"""Colour control (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer").

Pure functions on float RGB images [H, W, 3] in [0, 1]: YCbCr conversion (full-range BT.601, as
JPEG and neural-style's ``-original_colors`` use), luminance matching, mean/covariance colour
matching, and OkLab (Ottosson 2020) with Neural Neighbor Style Transfer's closing colour step.
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
# OkLab's two matrices (Björn Ottosson, "A perceptual color space for image processing", 2020):
# linear sRGB -> cone responses (LMS), and cube-rooted LMS -> (L, a, b).
_LINEAR_TO_LMS = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                           [0.2119034982, 0.6806995451, 0.1073969566],
                           [0.0883024619, 0.2817188376, 0.6299787005]], np.float64)
_LMS_TO_OKLAB = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                          [1.9779984951, -2.4285922050, 0.4505937099],
                          [0.0259040371, 0.7827717662, -0.8086757660]], np.float64)
_OKLAB_TO_LMS = np.linalg.inv(_LMS_TO_OKLAB).astype(np.float32)
_LMS_TO_LINEAR = np.linalg.inv(_LINEAR_TO_LMS).astype(np.float32)
_LINEAR_TO_LMS = _LINEAR_TO_LMS.astype(np.float32)
_LMS_TO_OKLAB = _LMS_TO_OKLAB.astype(np.float32)
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


def _match_moments(source: jax.Array, target: jax.Array) -> jax.Array:
    """Pixels [N, K] moved to the mean and covariance of pixels target [M, K] (not clipped)."""
    k = source.shape[-1]
    mu_s, mu_t = source.mean(0), target.mean(0)
    cov_s = jnp.cov(source, rowvar=False).reshape(k, k) + _EPS * jnp.eye(k)
    cov_t = jnp.cov(target, rowvar=False).reshape(k, k) + _EPS * jnp.eye(k)
    transform = _sqrtm(cov_t) @ _sqrtm(cov_s, inverse=True)
    return (source - mu_s) @ transform.T + mu_t


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
    matched = _match_moments(source.reshape(-1, 3), target.reshape(-1, 3))
    return jnp.clip(matched, 0.0, 1.0).reshape(source.shape)


def srgb_to_oklab(rgb: jax.Array) -> jax.Array:
    """float [..., 3] sRGB in [0, 1] -> [..., 3] OkLab (L in [0, 1], a and b about +-0.4).

    The sRGB transfer curve is undone first, as OkLab is defined on linear sRGB (NNST's code
    applies OkLab's matrices to the encoded values).
    """
    rgb = jnp.clip(rgb, 0.0, 1.0)
    linear = jnp.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return jnp.cbrt(linear @ _LINEAR_TO_LMS.T) @ _LMS_TO_OKLAB.T


def oklab_to_srgb(lab: jax.Array) -> jax.Array:
    """Inverse of `srgb_to_oklab`, clipped to [0, 1] (colours outside sRGB's gamut)."""
    linear = jnp.clip(((lab @ _OKLAB_TO_LMS.T) ** 3) @ _LMS_TO_LINEAR.T, 0.0, 1.0)
    return jnp.where(linear <= 0.0031308, 12.92 * linear,
                     1.055 * linear ** (1 / 2.4) - 0.055).clip(0.0, 1.0)


def oklab_colors(output: jax.Array, content: jax.Array, styles: list[jax.Array]) -> jax.Array:
    """Neural Neighbor Style Transfer's closing colour step (Kolkin et al. 2022), in OkLab.

    The output's lightness, and the content's chroma (a, b) moved to the mean and covariance of
    the styles' chroma; each channel then clipped to the range the styles' pixels span. The
    colours follow the photo's layout in the style's palette, while lightness keeps the strokes.
    Departure from NNST: no edge-aware (bilateral) smoothing of the chroma afterwards.

    Args:
      output: float [H, W, 3] RGB in [0, 1], the stylized image.
      content: float [H, W, 3] RGB of the same size.
      styles: one or more float [H_i, W_i, 3] RGB images; their pixels are pooled.

    Returns:
      float [H, W, 3] RGB in [0, 1].
    """
    _check_rgb(output, "output")
    if output.shape != content.shape:
        raise ValueError(f"content: shape {content.shape} differs from output {output.shape}")
    if not styles:
        raise ValueError("styles: at least one style image is needed")
    for i, style in enumerate(styles):
        _check_rgb(style, f"styles[{i}]")
    palette = jnp.concatenate([srgb_to_oklab(s).reshape(-1, 3) for s in styles])
    chroma = _match_moments(srgb_to_oklab(content).reshape(-1, 3)[:, 1:], palette[:, 1:])
    lab = jnp.concatenate([srgb_to_oklab(output)[..., :1],
                           chroma.reshape(*output.shape[:2], 2)], axis=-1)
    return oklab_to_srgb(jnp.clip(lab, palette.min(0), palette.max(0)))
