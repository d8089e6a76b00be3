"""The objective: content, style and total-variation losses weighed and summed (their targets are
`jaxstyle.targets`').

Every function here is pure and works on one image; batch with `jax.vmap`. Two normalisations
of the same terms: neural-style's ("neural-style", the neural-style and fast presets), whose
formulas are those of ProGamerGov/neural-style-pt in the network's input space, so their users'
weight values carry over; and the relative one of the default preset ("relative"), where every
term is divided by its target's own energy so that one style strength means the same for any
network, pair and size (`objective`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import choices
from jaxstyle.choices import WEIGHT_NORMALIZATIONS
from jaxstyle.style_losses import (
    GRAM,
    MEAN_COVARIANCE,
    StyleLoss,
    gram_distance,
    gram_statistics,
    masked,
    mean_covariance_statistics,
    wasserstein_distance,
)
from jaxstyle.terms import CONTENT_LOSSES, temporal_loss, tv_loss
from jaxstyle.vgg import CONVOLUTIONS, vgg_features
from jaxstyle.vgg_layers import validate_layers

# The style losses live in jaxstyle.style_losses; their names stay importable from here.
__all__ = [
    "GRAM",
    "MEAN_COVARIANCE",
    "PRECISIONS",
    "WEIGHT_NORMALIZATIONS",
    "LossConfig",
    "LossWeights",
    "StyleLoss",
    "Targets",
    "features",
    "gram_distance",
    "gram_statistics",
    "mean_covariance_statistics",
    "network_features",
    "objective",
    "style_distance",
    "wasserstein_distance",
]

PRECISIONS = dict(zip(choices.PRECISIONS, (jnp.float32, jnp.bfloat16)))
_REFERENCE_SIDE = 512  # "resolution" normalisation equals neural-style's at this output size
_REFERENCE_FLOOR = 1e-3  # the relative style term's divisor is at least this times the energy


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """The static part of the objective: what changes its code or its shapes (hashable,
    jit-static). How much each term weighs is not here but in `LossWeights`, a traced
    argument, so that a new weight recompiles nothing.

    ``LossConfig()`` is the balanced preset's objective (``StyleOptions().loss_config()``, with
    the direct convolution and a model range of 1); change a field with `replace`, e.g.
    ``LossConfig().replace(style_loss=my_loss)``. A run makes its own from its options
    (``StyleOptions(...).loss_config()``), which decide 'auto' convolutions and read the model
    range from the weights.

    Attributes:
      content_layers: layers whose activations are matched to the content image's; default
        neural-style's ``("relu4_2",)``.
      style_layers: layers whose Gram matrices are matched to the style images'; default
        neural-style's ``relu1_1`` to ``relu5_1``.
      pooling: "max" (the default) or "avg".
      style_loss: a `StyleLoss`: `GRAM` (neural-style's, the default), `MEAN_COVARIANCE`,
        `jaxstyle.style_losses.sliced_wasserstein(seed)`, `gram_histogram(weight)`, or your own.
      content_loss: "mse" (neural-style's, the default) or "self_similarity" (STROTSS's),
        `jaxstyle.terms.CONTENT_LOSSES`.
      weight_normalization: "relative" (the default, the balanced preset's, below);
        "neural-style" keeps its formulas exactly; "resolution" divides the
        TV term by ``max(H, W) / 512`` (a sum of neighbour differences grows linearly with the
        image side), so the same weights behave alike at 256 px and 1024 px; content and Gram
        losses are means and need no change. Identical to "neural-style" at 512 px.
        "relative" divides each content layer's term by the photo's own energy (``mean(P^2)``)
        and averages them, divides the style term by the photo's own style distance
        (`Targets.style_reference`), and measures TV and the temporal term in [0, 1] pixel
        units (`model_range`), so a weight means the same for any network, layer, image pair
        and size (`objective`).
      model_range: model-space units per [0, 1] pixel range of the network's preprocessing
        (`jaxstyle.Preprocessing.model_range`; default 1, pass your weights' own); used by the
        "relative" normalisation only.
      precision: "float32" (the default), or "bfloat16" to run the network's convolutions in
        bfloat16 while Gram matrices and losses stay float32 (so they cannot overflow as fp16
        runs do).
      convolution: "direct" (the default: XLA's convolution; on CPUs tiny wide maps as one
        matrix product) or "winograd" (Winograd's algorithm for the wide float32 layers on
        CPUs); see `jaxstyle.vgg.CONVOLUTIONS`. (The balanced preset's "auto" is the run's
        choice between them, `jaxstyle.StyleOptions.network_convolution`.)
    """

    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    pooling: str = "max"
    style_loss: StyleLoss = GRAM
    content_loss: str = "mse"
    weight_normalization: str = "relative"
    precision: str = "float32"
    convolution: str = "direct"
    model_range: float = 1.0

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.convolution not in CONVOLUTIONS:
            raise ValueError(f"convolution: expected one of {CONVOLUTIONS}, "
                             f"got {self.convolution!r}")
        if not isinstance(self.style_loss, StyleLoss):
            raise ValueError(f"style_loss: expected a StyleLoss, got {self.style_loss!r}")
        if self.content_loss not in CONTENT_LOSSES:
            raise ValueError(f"content_loss: expected one of {tuple(CONTENT_LOSSES)}, "
                             f"got {self.content_loss!r}")
        if self.weight_normalization not in WEIGHT_NORMALIZATIONS:
            raise ValueError(
                f"weight_normalization: expected one of {WEIGHT_NORMALIZATIONS}, "
                f"got {self.weight_normalization!r}"
            )
        validate_layers(self.content_layers, "content_layers")
        validate_layers(self.style_layers, "style_layers")
        if not (self.model_range >= 0 and math.isfinite(self.model_range)):
            raise ValueError(f"model_range: must be a finite number >= 0, got {self.model_range}")

    def replace(self, **changes) -> LossConfig:
        """A copy with `changes` (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))


class LossWeights(NamedTuple):
    """How much each term of `objective` weighs: float32 arrays carried in `Targets.weights`,
    traced like the targets, so that a run with other weights reuses the compiled objective.

    Make one with `LossWeights.create` (or ``StyleOptions(...).loss_weights()``). A weight of 0
    multiplies its term by 0 and the term is still computed, as it was when the weights were
    static (skipping a term at 0 would need code of its own for 0). Only the temporal term
    exists or not by the targets' structure (`Targets.previous`, static): `jaxstyle.video` gives
    no earlier frames at a temporal weight of 0, so going from 0 to another value, and only
    that, compiles again.

    Attributes:
      content: float32 [], w_c, multiplies each content layer's loss.
      style: float32 [], w_s, multiplies each style layer's loss (the options' style weight
        times their style strength).
      style_layers: float32 [L], a_l, one multiplier per style layer (on top of w_s).
      tv: float32 [], w_tv, multiplies the total variation of the model-space image.
      temporal: float32 [], weight of the temporal loss (video), used when the targets carry
        previous frames.
    """

    content: np.ndarray
    style: np.ndarray
    style_layers: np.ndarray
    tv: np.ndarray
    temporal: np.ndarray

    @classmethod
    def create(cls, config: LossConfig, *, content_weight: float = 1.0,
               style_weight: float = 20.0, tv_weight: float = 0.3,
               style_layer_weights: Sequence[float] | None = None,
               temporal_weight: float = 30.0) -> LossWeights:
        """Checked weights for an objective of `config` (whose style layers they must match).
        The defaults are the balanced preset's (``StyleOptions().loss_weights()``), made for
        the "relative" normalisation of ``LossConfig()``.

        Args:
          config: the objective's configuration.
          content_weight: w_c, a finite number >= 0 (as are the other weights); default 1.
          style_weight: w_s; default 20, the balanced preset's style weight (1) times its style
            strength (`jaxstyle.presets.BALANCED_STYLE_STRENGTH`).
          tv_weight: w_tv; default 0.3.
          style_layer_weights: one multiplier >= 0 per style layer of `config`; default 1 each.
          temporal_weight: the temporal term's weight; default 30. It weighs only targets that
            carry earlier frames (`Targets.previous`, video).

        Returns:
          NumPy float32 arrays (so that making them starts no JAX backend).

        Raises:
          ValueError: a weight that is negative or not finite, or a number of style layer
            weights other than the number of style layers; the message names the argument.
        """
        scalars = {"content_weight": content_weight, "style_weight": style_weight,
                   "tv_weight": tv_weight, "temporal_weight": temporal_weight}
        for name, value in scalars.items():
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
        layers = len(config.style_layers)
        if style_layer_weights is None:
            style_layer_weights = (1.0,) * layers
        if len(style_layer_weights) != layers:
            raise ValueError(f"style_layer_weights: {len(style_layer_weights)} values for "
                             f"{layers} style layers")
        if style_layer_weights and min(style_layer_weights) < 0:
            raise ValueError("style_layer_weights: weights must be >= 0")
        scalar = lambda value: np.asarray(value, np.float32)
        return cls(scalar(content_weight), scalar(style_weight),
                   np.asarray(style_layer_weights, np.float32), scalar(tv_weight),
                   scalar(temporal_weight))


def features(params: dict, image: jax.Array, layers: tuple[str, ...], config: LossConfig):
    """Activations of a model-space image [H, W, 3] at `layers`, with the network settings of
    `config` (`network_features`)."""
    return network_features(params, image, layers, config.pooling, config.precision,
                            config.convolution)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def network_features(params: dict, image: jax.Array, layers: tuple[str, ...], pooling: str,
                     precision: str, convolution: str):
    """`jaxstyle.vgg_features` of `image` cast to `precision` (one of `PRECISIONS`), compiled
    once per layers, pooling, precision and convolution."""
    return vgg_features(params, image.astype(PRECISIONS[precision]), layers, pooling,
                        convolution)


class Targets(NamedTuple):
    """What `objective` matches the image's features to.

    Attributes:
      content: ``{layer: float32 [h, w, C]}`` activations of the content image.
      style: one ``{layer: target}`` per style region: a single blended target without masks
        (neural-style's behaviour), one per style image with masks.
      style_masks: per style region, ``{layer: float32 [h, w]}`` where that style applies, or
        None for everywhere; None: no regions at all.
      style_weights: float32 [S], each style region's weight; None: 1 each.
      content_mask: ``{layer: float32 [h, w]}`` where the content loss counts; None: everywhere.
      previous: for video (Ruder et al. 2016), ``((warped, weights), ...)``: earlier stylized
        frames warped to this one, model-space float32 [H, W, 3], each with its per-pixel
        consistency weights float32 [H, W] in [0, 1]; None: no temporal term.
      style_reference: float32 [S, L], per style region and style layer, the content photo's
        own distance to the style, which the relative objective divides its style term by
        once weighted by the layers' weights (`jaxstyle.targets.region_targets` sets it);
        None: the style targets' energy.
      weights: the `LossWeights`, which `objective` needs; traced like the rest, so that other
        weights reuse the compiled objective.
    """

    content: dict
    style: tuple
    style_masks: tuple | None = None
    style_weights: jax.Array | None = None
    content_mask: dict | None = None
    previous: tuple | None = None
    style_reference: jax.Array | None = None
    weights: LossWeights | None = None


def style_distance(config: LossConfig, feats: dict, target: dict, mask: dict | None):
    """``D(F_l, A_l)`` float32 [L]: features' style distance to one target at each style
    layer."""
    return jnp.stack([config.style_loss.distance(feats[name], target[name], mask and mask[name])
                      for name in config.style_layers])


def _layer_weighted(layer_weights: jax.Array, values) -> jax.Array:
    """``sum_l a_l v_l`` of one value per style layer, added in layer order."""
    return sum(layer_weights[i] * values[i] for i in range(len(layer_weights)))


def _style_energy(config: LossConfig, feats: dict, target: dict, layer_weights: jax.Array):
    """``sum_l a_l E(A_l)``: one target's layer-weighted energy (`StyleLoss.energy`)."""
    return _layer_weighted(layer_weights, [
        config.style_loss.target_energy(target[name], feats[name].shape[-1])
        for name in config.style_layers])


def objective(
    image: jax.Array, params: dict, targets: Targets, config: LossConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total loss of one model-space image and its components.

    With neural-style's normalisation (and "resolution"), ``total = sum_l w_c * mean((F_l -
    P_l)^2) + sum_l w_s * a_l * D(F_l, A_l) + w_tv * TV(image)`` with the weights w_c, w_s, the
    per-layer style weights a_l and w_tv from `Targets.weights`, and D the style distance
    (``mean((G - A)^2)`` of Gram matrices by default). With "relative", ``total = w_c *
    mean_l(mean((F_l - P_l)^2) / mean(P_l^2)) + w_s * sum_l a_l D(F_l, A_l) / R + w_tv *
    TV(image) / (3 H W r)`` with R the photo's own distance to the style, ``sum_l a_l D(P_l,
    A_l)`` (`Targets.style_reference`; floored at 0.001 of the targets' energy
    `StyleLoss.energy`, which replaces it when the targets do not carry it) and r the model
    range: the content term is the quality line's content distance and the style term the
    fraction of the photo's distance to the style that is left.

    Args:
      image: float32 [H, W, 3] in the network's input space.
      params: VGG parameters (`jaxstyle.vgg_features`).
      targets: from `jaxstyle.targets.region_targets`, or ``Targets(content=content_targets(...),
        style=(style_targets(...),), weights=LossWeights.create(config, ...))``; their
        `LossWeights` are traced, so a change of weight recompiles nothing.
      config: layers, pooling and style loss (static under `jax.jit`).

    Returns:
      ``(total, components)`` with components ``content``, ``style``, ``tv`` and
      ``style/<layer>`` for each style layer (and ``temporal`` with previous frames), all
      float32 scalars.

    Raises:
      ValueError: targets without weights, or with a number of style layer weights other than
        the config's style layers.
    """
    w = _checked_weights(targets, config)
    feats = features(params, image, config.layers, config)
    content = _content_term(feats, targets, config)
    components = _style_components(feats, targets, config)
    style = sum(components[f"style/{name}"] for name in config.style_layers)
    tv = _tv_term(image, w.tv, config)
    components.update(content=content, style=style, tv=tv)
    total = content + style + tv
    if targets.previous:
        temporal = _temporal_term(image, targets, config)
        components["temporal"] = temporal
        total = total + temporal
    return total, components


def _checked_weights(targets: Targets, config: LossConfig) -> LossWeights:
    """`targets`' weights, once they are known to be there and to match the style layers."""
    w = targets.weights
    if w is None:
        raise ValueError("targets: no weights; give Targets(..., weights=LossWeights.create("
                         "config, ...)) or StyleOptions(...).loss_weights()")
    if jnp.shape(w.style_layers) != (len(config.style_layers),):
        raise ValueError(f"targets: weights.style_layers has shape {jnp.shape(w.style_layers)} "
                         f"for {len(config.style_layers)} style layers")
    return w


def _content_term(feats: dict, targets: Targets, config: LossConfig) -> jax.Array:
    """The weighted content term: summed over the content layers, or with "relative" the mean
    of each layer's term divided by the photo's own energy there."""
    w = targets.weights
    relative = config.weight_normalization == "relative"
    content_mask = targets.content_mask
    distance_to_content = CONTENT_LOSSES[config.content_loss]
    content = 0.0
    for name in config.content_layers:
        mask = content_mask and content_mask[name]
        term = distance_to_content(feats[name], targets.content[name], mask)
        if relative and config.content_loss == "mse":  # self-similarity is scale-free already
            term = term / _energy(targets.content[name], mask)
        content = content + w.content * term
    if relative:
        content = content / len(config.content_layers)
    return content


def _style_components(feats: dict, targets: Targets, config: LossConfig) -> dict:
    """``{"style/<layer>": float32 []}``: each style layer's weighted term, summed over the style
    regions (each divided by its reference with "relative")."""
    w = targets.weights
    styles = targets.style
    masks = targets.style_masks or [None] * len(styles)
    weights = jnp.ones(len(styles)) if targets.style_weights is None else targets.style_weights
    style_loss = config.style_loss
    references = [1.0] * len(styles)
    if config.weight_normalization == "relative":
        references = _style_references(feats, targets, config)
    components = {}
    for j, name in enumerate(config.style_layers):
        per_style = [weights[i] * style_loss.distance(feats[name], target[name],
                                                      masks[i] and masks[i][name])
                     / references[i] for i, target in enumerate(styles)]
        components[f"style/{name}"] = w.style * w.style_layers[j] * sum(per_style)
    return components


def _style_references(feats: dict, targets: Targets, config: LossConfig) -> list:
    """The relative style term's divisor R per style region: the photo's layer-weighted distance
    to it (`Targets.style_reference`), else the targets' energy."""
    layer_weights = targets.weights.style_layers
    energies = [_style_energy(config, feats, target, layer_weights) for target in targets.style]
    given = targets.style_reference
    # Floored: a photo that already has the style's statistics is not divided by ~0.
    return [jnp.maximum(energy if given is None else _layer_weighted(layer_weights, given[i]),
                        _REFERENCE_FLOOR * energy)
            for i, energy in enumerate(energies)]


def _tv_term(image: jax.Array, weight: jax.Array, config: LossConfig) -> jax.Array:
    """The weighted total variation of the model-space image [H, W, 3], normalised."""
    tv = weight * tv_loss(image)
    if config.weight_normalization == "resolution":
        # A sum of neighbour differences of the same picture grows linearly with its side.
        tv = tv * _REFERENCE_SIDE / max(image.shape[:2])
    elif config.weight_normalization == "relative":
        # The mean absolute neighbour difference, in pixel units.
        tv = tv / (float(image.size) * config.model_range)
    return tv


def _temporal_term(image: jax.Array, targets: Targets, config: LossConfig) -> jax.Array:
    """The weighted temporal term over `Targets.previous` (in pixel units with "relative")."""
    temporal = targets.weights.temporal * sum(
        temporal_loss(image, warped, weights) for warped, weights in targets.previous)
    if config.weight_normalization == "relative":
        temporal = temporal / config.model_range**2
    return temporal


def _energy(target: jax.Array, mask: jax.Array | None) -> jax.Array:
    """mean(target^2) over the region `mask` [h, w] (or all of it) of features [h, w, C]: the
    content term's scale under the relative objective."""
    squared, area = masked(jnp.square(target.astype(jnp.float32)), mask)
    return jnp.maximum(jnp.sum(squared) / (area * target.shape[-1]), 1e-30)
