"""Temporal consistency for video (Ruder, Dosovitskiy & Brox 2016): optical flow, the
consistency weights that mask disocclusions and motion boundaries, and warping.

Flows are float32 [H, W, 2] of (dx, dy) in pixels. ``backward`` flow maps frame i to frame i-1:
the pixel (x, y) of frame i came from (x + dx, y + dy) of frame i-1, so warping the stylized
frame i-1 with it gives its prediction of frame i. ``forward`` flow maps frame i-1 to frame i.
OpenCV computes the flow (DIS by default); warping runs in JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.choices import FLOWS


def optical_flow(first: np.ndarray, second: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow from `first` to `second` (RGB float [H, W, 3] in [0, 1] or uint8): float32
    [H, W, 2] with ``second(x + flow) ~ first(x)``.

    Raises:
      ValueError: an unknown method, or DeepFlow without opencv-contrib-python.
    """
    import cv2

    def grey(image):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)

    a, b = grey(first), grey(second)
    if method == "dis":
        flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 5, 5, 1.2, 0)
    elif method == "deepflow":
        if not hasattr(cv2, "optflow"):
            raise ValueError("flow: 'deepflow' needs OpenCV's contrib modules: "
                             "pip install opencv-contrib-python-headless")
        flow = cv2.optflow.createOptFlow_DeepFlow().calc(a, b, None)
    else:
        raise ValueError(f"flow: expected one of {FLOWS}, got {method!r}")
    return np.asarray(flow, np.float32)


@jax.jit
def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
    """``image`` float [H, W, C] sampled at (x + dx, y + dy) for every pixel, bilinearly, with
    the border repeated outside: the frame the flow float [H, W, 2] predicts."""
    h, w = image.shape[:2]
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                          indexing="ij")
    coords = [ys + flow[..., 1], xs + flow[..., 0]]
    return jnp.stack([jax.scipy.ndimage.map_coordinates(image[..., c], coords, order=1,
                                                        mode="nearest")
                      for c in range(image.shape[-1])], axis=-1)


@jax.jit
def consistency_weights(forward: jax.Array, backward: jax.Array) -> jax.Array:
    """Ruder et al.'s weights c float32 [H, W] in {0, 1} for frame i, from the forward flow
    (frame i-1 to i) and the backward flow (i to i-1), both [H, W, 2].

    c is 0 where the flows disagree (disocclusions: ``|w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) +
    0.5`` with w^ the backward flow and w~ the forward flow warped to frame i along it) and on
    motion boundaries (``|grad u^|^2 + |grad v^|^2 > 0.01 |w^|^2 + 0.002``), and where the
    backward flow leaves the frame (content entering at a border); 1 elsewhere.
    """
    forward_here = warp(forward, backward)
    sum_sq = jnp.sum(jnp.square(forward_here + backward), -1)
    occluded = sum_sq > 0.01 * (jnp.sum(jnp.square(forward_here), -1)
                                + jnp.sum(jnp.square(backward), -1)) + 0.5
    dy = jnp.gradient(backward, axis=0)
    dx = jnp.gradient(backward, axis=1)
    gradient_sq = jnp.sum(jnp.square(dx), -1) + jnp.sum(jnp.square(dy), -1)
    boundary = gradient_sq > 0.01 * jnp.sum(jnp.square(backward), -1) + 0.002
    # Departure from the paper: pixels whose backward flow leaves the frame (content entering at
    # the border) have no previous pixel either; the paper's check passes them where the flow
    # is smooth, and the warp would hold them to a smear of the border.
    h, w = backward.shape[:2]
    ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    x, y = xs + backward[..., 0], ys + backward[..., 1]
    outside = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
    return jnp.where(occluded | boundary | outside, 0.0, 1.0).astype(jnp.float32)


def warp_to(content: np.ndarray, other_content: np.ndarray, other_stylized: jax.Array,
            method: str = "dis") -> tuple[jax.Array, jax.Array]:
    """Another frame's stylized version float [H, W, 3] warped to this one, and the
    consistency weights [H, W] of that warp: flows both ways between the content frames
    (`optical_flow`), `consistency_weights`, `warp` along the backward flow."""
    backward = jnp.asarray(optical_flow(content, other_content, method))
    forward = jnp.asarray(optical_flow(other_content, content, method))
    return warp(jnp.asarray(other_stylized), backward), consistency_weights(forward, backward)


NEIGHBOURHOOD = 0.04
"""Gaussian radius (sigma), as a fraction of the frame's longest side, over which `start_image`
carries the stylization's colour shift into pixels the flow cannot vouch for."""


def start_image(content: np.ndarray, warped: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Where a frame's optimization starts: the previous stylized frame warped to it where the
    flow is trusted (`weights` float [H, W] in [0, 1]), and elsewhere (content entering at a
    border, disocclusions) the content frame shifted by its stylized neighbourhood's local
    colour change, so that new content starts in its neighbours' palette instead of as the pale
    photo (departure from Ruder et al., who start such pixels from the warp's smear).

    Args:
      content: the content frame float [H, W, 3] in [0, 1]; warped: the previous stylized
        frame warped to it, float [H, W, 3].

    Returns:
      float32 [H, W, 3] in [0, 1].
    """
    import cv2

    content, warped = np.asarray(content, np.float32), np.asarray(warped, np.float32)
    c = np.asarray(weights, np.float32)[..., None]
    sigma = max(2.0, NEIGHBOURHOOD * max(content.shape[:2]))

    def blur(a):
        return cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)

    # Normalised convolution: the trusted pixels' mean change (stylized - photo) nearby.
    covered = blur(c[..., 0])[..., None]
    shift = blur(np.ascontiguousarray((warped - content) * c)) / np.maximum(covered, 1e-6)
    shift = np.where(covered > 1e-3, shift, 0.0)
    filled = np.clip(content + shift, 0.0, 1.0)
    return (c * warped + (1 - c) * filled).astype(np.float32)


def long_term_weights(weights: list[jax.Array]) -> list[jax.Array]:
    """Long-term consistency (Ruder et al., section 3.3): the weights of frames i-j, nearest
    first, each keeping only the pixels no nearer frame already covers:
    ``c_j = max(c_j - sum_{k<j} c_k, 0)``."""
    kept, covered = [], jnp.zeros_like(weights[0])
    for c in weights:
        kept.append(jnp.maximum(c - covered, 0.0))
        covered = covered + c
    return kept


def flicker(frames: list[np.ndarray], shift: tuple[int, int]) -> float:
    """Mean absolute change between consecutive frames float [H, W, 3] along a known motion of
    `shift` (dy, dx) pixels a frame (content moving by +shift): the temporal noise a viewer
    sees, 0 for a perfectly consistent video."""
    dy, dx = shift
    changes = []
    for before, after in zip(frames, frames[1:]):
        h, w = before.shape[:2]
        a = after[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
        b = before[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        diff = np.asarray(a, np.float32) - np.asarray(b, np.float32)
        changes.append(float(np.mean(np.abs(diff))))
    return float(np.mean(changes))
