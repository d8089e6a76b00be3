"""The mapping between RGB images in [0, 1] and a network's input space.

Each set of pretrained weights was trained on inputs prepared one particular way; that way is
stored with the converted weights and never taken from a flag that could disagree with it.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Preprocessing:
    """How RGB pixels in [0, 1] become network inputs: ``(reorder(rgb) * scale - mean) / std``.

    Attributes:
      channel_order: "RGB" or "BGR" (Caffe-trained weights expect BGR).
      scale: 1.0 for inputs in [0, 1], 255.0 for Caffe's [0, 255].
      mean: per-channel mean subtracted after scaling, in `channel_order`.
      std: per-channel divisor applied after the mean, in `channel_order`.
    """

    channel_order: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order: expected 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0 or self.scale <= 0:
            raise ValueError("preprocessing needs 3 means, 3 positive stds and a positive scale")

    def to_model(self, rgb: jax.Array) -> jax.Array:
        """float [..., 3] RGB in [0, 1] -> float [..., 3] network input."""
        return _to_model(rgb, self)

    def from_model(self, x: jax.Array) -> jax.Array:
        """float [..., 3] network input -> float [..., 3] RGB, not clipped."""
        return _from_model(x, self)

    def model_range(self) -> float:
        """How many model-space units one full [0, 1] pixel range spans (mean over channels)."""
        return self.scale * sum(1.0 / s for s in self.std) / 3.0

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            channel_order=str(d["channel_order"]),
            scale=float(d["scale"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
        )


# Jitted (one small compilation per shape, kept by the persistent cache) rather than run op by
# op: each eager operation is compiled on its own, which made up seconds of a run's start.
@functools.partial(jax.jit, static_argnums=1)
def _to_model(rgb: jax.Array, p: Preprocessing) -> jax.Array:
    x = rgb[..., ::-1] if p.channel_order == "BGR" else rgb
    return (x * p.scale - jnp.asarray(p.mean)) / jnp.asarray(p.std)


@functools.partial(jax.jit, static_argnums=1)
def _from_model(x: jax.Array, p: Preprocessing) -> jax.Array:
    x = (x * jnp.asarray(p.std) + jnp.asarray(p.mean)) / p.scale
    return x[..., ::-1] if p.channel_order == "BGR" else x


TORCHVISION = Preprocessing(
    channel_order="RGB", scale=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
"""torchvision's ImageNet normalisation."""

CAFFE = Preprocessing(
    channel_order="BGR", scale=255.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0)
)
"""The original Caffe VGG preprocessing (BGR, 0-255, minus the mean pixel), as in neural-style."""

PRESETS = {"torchvision": TORCHVISION, "caffe": CAFFE}
