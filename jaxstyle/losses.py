"""The neural-style objective: content, style (Gram) and total-variation losses.

Every function here is pure and works on one image; batch with `jax.vmap`. The default objective
reproduces jcjohnson/neural-style's (and ProGamerGov/neural-style-pt's) formulas exactly, in the
network's input space, so their users' weight values carry over.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxstyle.vgg import validate_layers, vgg19_features


def _check_hwc(features: jax.Array, argument: str) -> None:
    if features.ndim != 3:
        raise ValueError(f"{argument}: expected [H, W, C], got shape {tuple(features.shape)}")


def gram_matrix(features: jax.Array) -> jax.Array:
    """Gram matrix normalised by the number of elements, as in neural-style.

    Args:
      features: float [H, W, C], one image's activations.

    Returns:
      float32 [C, C], ``F^T F / (C * H * W)`` with F the [H*W, C] matrix of features.
    """
    _check_hwc(features, "features")
    h, w, c = features.shape
    flat = features.reshape(h * w, c).astype(jnp.float32)
    return flat.T @ flat / (c * h * w)


def content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared difference between activations, float [H, W, C] each -> scalar."""
    _check_hwc(features, "features")
    if features.shape != target.shape:
        raise ValueError(f"target: shape {target.shape} differs from features {features.shape}")
    return jnp.mean(jnp.square(features.astype(jnp.float32) - target))


def style_loss(features: jax.Array, target_gram: jax.Array) -> jax.Array:
    """Mean squared difference of Gram matrices: features [H, W, C], target [C, C] -> scalar."""
    gram = gram_matrix(features)
    if target_gram.shape != gram.shape:
        raise ValueError(f"target_gram: shape {target_gram.shape}, expected {gram.shape}")
    return jnp.mean(jnp.square(gram - target_gram))


def tv_loss(image: jax.Array) -> jax.Array:
    """Anisotropic total variation: sum of absolute neighbour differences of float [H, W, C]."""
    _check_hwc(image, "image")
    return jnp.sum(jnp.abs(image[1:] - image[:-1])) + jnp.sum(jnp.abs(image[:, 1:] - image[:, :-1]))


@dataclass(frozen=True)
class LossConfig:
    """The static part of the objective: layers, weights and pooling (hashable, jit-static).

    Attributes:
      content_layers: layers whose activations are matched to the content image's.
      style_layers: layers whose Gram matrices are matched to the style images'.
      content_weight: w_c, multiplies each content layer's loss.
      style_weight: w_s, multiplies each style layer's loss.
      tv_weight: w_tv, multiplies the total variation of the model-space image.
      style_layer_weights: per-style-layer multipliers (on top of w_s), one per style layer.
      pooling: "max" or "avg".
    """

    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_weight: float = 5.0
    style_weight: float = 100.0
    tv_weight: float = 1e-3
    style_layer_weights: tuple[float, ...] | None = None
    pooling: str = "max"

    def __post_init__(self):
        validate_layers(self.content_layers, "content_layers")
        validate_layers(self.style_layers, "style_layers")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
        if self.style_layer_weights is not None:
            if len(self.style_layer_weights) != len(self.style_layers):
                raise ValueError(
                    f"style_layer_weights: {len(self.style_layer_weights)} values for "
                    f"{len(self.style_layers)} style layers"
                )
            if min(self.style_layer_weights) < 0:
                raise ValueError("style_layer_weights: weights must be >= 0")

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))

    def layer_weights(self) -> tuple[float, ...]:
        return self.style_layer_weights or (1.0,) * len(self.style_layers)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _features(params: dict, image: jax.Array, layers: tuple[str, ...], pooling: str):
    return {k: v[0] for k, v in vgg19_features(params, image[None], layers, pooling).items()}


def content_targets(params: dict, content: jax.Array, config: LossConfig) -> dict[str, jax.Array]:
    """Activations of the model-space content image [H, W, 3] at each content layer."""
    return _features(params, content, config.content_layers, config.pooling)


def style_targets(
    params: dict,
    styles: Sequence[jax.Array],
    config: LossConfig,
    blend_weights: Sequence[float] | None = None,
) -> dict[str, jax.Array]:
    """Blended target Gram matrices of one or more model-space style images.

    Args:
      params: VGG19 parameters.
      styles: model-space style images, each float32 [H_i, W_i, 3] (sizes may differ).
      config: the objective's layers and pooling.
      blend_weights: one non-negative weight per style image, normalised to sum 1 (default: equal).

    Returns:
      ``{layer: float32 [C, C]}``, the weighted sum of the styles' Gram matrices.

    Raises:
      ValueError: no styles, or blend weights that do not match or sum to zero.
    """
    if not styles:
        raise ValueError("styles: at least one style image is needed")
    weights = jnp.ones(len(styles)) if blend_weights is None else jnp.asarray(blend_weights, float)
    if weights.shape != (len(styles),):
        raise ValueError(f"blend_weights: {weights.shape[0]} weights for {len(styles)} style images")
    if bool(jnp.any(weights < 0)) or float(weights.sum()) <= 0:
        raise ValueError("blend_weights: weights must be >= 0 and not all zero")
    weights = weights / weights.sum()
    targets = {name: 0.0 for name in config.style_layers}
    for weight, style in zip(weights, styles):
        feats = _features(params, style, config.style_layers, config.pooling)
        for name in config.style_layers:
            targets[name] = targets[name] + weight * gram_matrix(feats[name])
    return targets


def objective(
    image: jax.Array, params: dict, targets: dict, config: LossConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total neural-style loss of one model-space image and its components.

    ``total = sum_l w_c * mean((F_l - P_l)^2) + sum_l w_s * a_l * mean((G_l - A_l)^2)
    + w_tv * TV(image)`` with a_l the per-layer style weights.

    Args:
      image: float32 [H, W, 3] in the network's input space.
      params: VGG19 parameters.
      targets: ``{"content": content_targets(...), "style": style_targets(...)}``.
      config: layers, weights and pooling (static under `jax.jit`).

    Returns:
      ``(total, components)`` with components ``content``, ``style``, ``tv`` and
      ``style/<layer>`` for each style layer, all float32 scalars.
    """
    feats = _features(params, image, config.layers, config.pooling)
    content = sum(
        config.content_weight * content_loss(feats[name], targets["content"][name])
        for name in config.content_layers
    )
    components = {}
    for name, layer_weight in zip(config.style_layers, config.layer_weights()):
        components[f"style/{name}"] = (
            config.style_weight * layer_weight * style_loss(feats[name], targets["style"][name])
        )
    style = sum(components[f"style/{name}"] for name in config.style_layers)
    tv = config.tv_weight * tv_loss(image)
    components.update(content=content, style=style, tv=tv)
    return content + style + tv, components
