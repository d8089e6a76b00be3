"""How far a result went: its distances to the style images and to the content, measured with
the run's own network.

For every style layer the output's Gram matrix and its sliced Wasserstein distance to the
(blended) style are computed, and the same for the content photo at the output's size, so each
figure can be read against the untouched photo: a style ratio of 0.01 means the output's
statistics are a hundred times closer to the style's than the photo's were. The content
distance is the relative squared difference of the content layers' activations,
``mean((F - P)^2) / mean(P^2)`` (0: the photo's own features).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.checks import style_sizes
from jaxstyle.losses import LossConfig
from jaxstyle.options import StyleOptions
from jaxstyle.resampling import resize
from jaxstyle.style_losses import (
    QUANTILES,
    flat_features,
    gram_distance,
    gram_statistics,
    positions_host,
    projection_directions,
    quantiles_host,
)
from jaxstyle.targets import blend_shares, content_targets
from jaxstyle.vgg import VGGWeights, vgg_features

SCORING_SEED = 0
"""The directions of the sliced Wasserstein score are fixed, so scores of different runs compare."""

_BANK = 4  # `sliced_wasserstein`'s default bank: the score's directions are its first C


def _score_directions(channels: int) -> jax.Array:
    # The directions `sliced_wasserstein(SCORING_SEED)` scores along (its bank's first C, which
    # `prepare` selects), drawn without the rest of the bank: the style's quantiles are then
    # sorted along C directions instead of 4C, for the same figures.
    return projection_directions(SCORING_SEED, channels, _BANK * channels)[:, :channels]


# The scores sort with NumPy outside any compiled function: a compiled function that sorts
# through a host callback (as the run's losses do on CPUs) cannot be kept in JAX's persistent
# compilation cache, and would compile again in every process, seconds of every picture. What
# is compiled (the network, the Gram matrices, the projections) carries no callback.


def _projected(features: jax.Array) -> jax.Array:
    """Features [H, W, C] as samples [H*W, C] along the score's C directions."""
    flat, _ = flat_features(features, None)
    return flat @ _score_directions(flat.shape[1])


def _quantiles(projected: np.ndarray) -> np.ndarray:
    """The score's statistics of samples [N, C] along its directions (`_projected`): float32
    [C, QUANTILES] quantiles (`weighted_quantiles`'s, computed with NumPy)."""
    values = projected.T  # [C, N]
    return quantiles_host(values, np.ones(values.shape[1], np.float32), QUANTILES, True)


def _matching_distance(projected: np.ndarray, quantiles: np.ndarray) -> float:
    """`sorted_matching_distance` of samples [N, C] along the score's directions to the
    quantiles [C, Q] (`_quantiles`), computed with NumPy."""
    values = projected.T.astype(np.float32)  # [C, N]
    k, n = values.shape
    positions = positions_host(values, np.ones(n, np.float32))
    levels = quantiles.shape[-1]
    x = np.clip(positions * levels - 0.5, 0.0, levels - 1.0)
    low = np.floor(x).astype(np.int32)
    high = np.minimum(low + 1, levels - 1)
    a = np.take_along_axis(quantiles, low, -1)
    matched = a + (x - low) * (np.take_along_axis(quantiles, high, -1) - a)
    return float(np.sum(np.square(values - matched), dtype=np.float64) / (n * k))


class Quality(NamedTuple):
    """Distances of one output image, per layer and summed.

    Attributes:
      style_gram: ``{layer: mean((G - A)^2)}`` against the blended style Gram matrices A.
      style_sliced_wasserstein: ``{layer: SW2^2}`` against the style's feature distribution
        (Heitz et al.), along `SCORING_SEED`'s first C directions.
      content: ``{layer: mean((F - P)^2) / mean(P^2)}`` against the photo's activations P.
      style_gram_ratio: the summed Gram distance divided by the photo's own (1: no closer to
        the style than the photo, 0: the style's statistics).
      style_sliced_wasserstein_ratio: the same for the sliced Wasserstein distance.
      content_references: what the mean content distance is for pictures that keep nothing
        of the photo, to read it against: ``{"flat grey": ..., "noise": ...}`` (a uniform
        mid-grey image, and uniform noise drawn with `SCORING_SEED`, at the output's size).
    """

    style_gram: dict[str, float]
    style_sliced_wasserstein: dict[str, float]
    content: dict[str, float]
    style_gram_ratio: float
    style_sliced_wasserstein_ratio: float
    content_references: dict[str, float]

    @property
    def content_distance(self) -> float:
        """The content distance averaged over the content layers (0: the photo's features)."""
        return float(np.mean(list(self.content.values())))

    def summary(self) -> str:
        """One line for a log: the style ratios and the content distance with its references."""
        references = ", ".join(f"{k} {v:.2f}" for k, v in self.content_references.items())
        return (f"style distance {self.style_gram_ratio:.3g}x the photo's (Gram), "
                f"{self.style_sliced_wasserstein_ratio:.3g}x (sliced Wasserstein); "
                f"content distance {self.content_distance:.3g} (photo 0, {references})")

    def to_dict(self) -> dict:
        return self._asdict()


@functools.partial(jax.jit, static_argnums=(2,))
def _style_scores(params, image, config: LossConfig):
    """A style image's Gram matrices and samples along the score's directions, per layer."""
    feats = vgg_features(params, image, config.style_layers, config.pooling)
    return {n: (gram_statistics(feats[n]), _projected(feats[n])) for n in config.style_layers}


@functools.partial(jax.jit, static_argnums=(4,))
def _image_scores(params, image, grams, content_features, config: LossConfig):
    """An image's Gram distances to `grams`, its samples along the score's directions and its
    content distances, per layer."""
    feats = vgg_features(params, image, config.layers, config.pooling)
    gram = {n: gram_distance(feats[n], grams[n]) for n in config.style_layers}
    projected = {n: _projected(feats[n]) for n in config.style_layers}
    return gram, projected, _content(feats, content_features, config)


def _distances(params, image, targets, content_features, config: LossConfig):
    """``(gram, sliced, content)`` distances of a model-space image, each ``{layer: float}``,
    to the blended style `targets` (``{layer: (gram, quantiles)}``) and the photo's features."""
    gram, projected, content = _image_scores(
        params, image, {n: t[0] for n, t in targets.items()}, content_features, config)
    sliced = {n: _matching_distance(np.asarray(projected[n]), targets[n][1])
              for n in config.style_layers}
    return ({n: float(v) for n, v in gram.items()}, sliced,
            {n: float(v) for n, v in content.items()})


def _style_targets(params, styles_model, config: LossConfig, blend_weights) -> dict:
    """The styles' blended Gram matrices and quantile functions, ``{layer: (gram, quantiles)}``
    (each statistic weighted by the style's share and summed, as `style_targets` blends)."""
    targets = {}
    for share, style in zip(blend_shares(len(styles_model), blend_weights), styles_model):
        for n, (gram, projected) in _style_scores(params, style, config).items():
            one = (np.asarray(gram) * share, _quantiles(np.asarray(projected)) * share)
            targets[n] = one if n not in targets else (targets[n][0] + one[0],
                                                       targets[n][1] + one[1])
    return targets


def _content(feats, content_features, config: LossConfig) -> dict:
    return {n: jnp.mean(jnp.square(feats[n] - content_features[n]))
            / jnp.maximum(jnp.mean(jnp.square(content_features[n])), 1e-12)
            for n in config.content_layers}


@functools.partial(jax.jit, static_argnums=(3,))
def _content_distances(params, image, content_features, config: LossConfig):
    # The references need only the content distance: no style statistics of theirs are sorted.
    feats = vgg_features(params, image, config.content_layers, config.pooling)
    return _content(feats, content_features, config)


class Scorer(NamedTuple):
    """What scoring an output against its photo and styles needs besides the output
    (`scorer`): everything `measure` computes from the inputs alone, so that a run can have it
    made while it optimizes and score its result at once (`Scorer.measure`).

    Attributes:
      weights: the network it measures with.
      shape: the output's (H, W); `measure` takes images of this size only.
      config: the run's layers and pooling, measured in float32 with the direct convolution.
      targets: the blended styles' ``{layer: (gram, quantiles)}``.
      content_features: the photo's features at the output's size.
      photo: the photo's own ``(gram, sliced, content)`` distances, the ratios' denominators.
      references: `Quality.content_references`.
    """

    weights: VGGWeights
    shape: tuple[int, int]
    config: LossConfig
    targets: dict
    content_features: dict
    photo: tuple
    references: dict

    def measure(self, image: np.ndarray | jax.Array) -> Quality:
        """The `Quality` of an output of `shape`, float [H, W, 3] RGB in [0, 1]."""
        image = jnp.asarray(image, jnp.float32)
        if tuple(image.shape[:2]) != self.shape:
            raise ValueError(f"image: {image.shape[0]}x{image.shape[1]}, scored at "
                             f"{self.shape[0]}x{self.shape[1]}")
        out = _distances(self.weights.params, self.weights.preprocessing.to_model(image),
                         self.targets, self.content_features, self.config)
        ratio = [sum(o.values()) / max(sum(b.values()), 1e-30)
                 for o, b in zip(out[:2], self.photo[:2])]
        return Quality(out[0], out[1], out[2], ratio[0], ratio[1], dict(self.references))


def scorer(
    weights: VGGWeights,
    shape: tuple[int, int],
    content: np.ndarray | jax.Array,
    styles: Sequence[np.ndarray | jax.Array],
    options: StyleOptions | None = None,
) -> Scorer:
    """Scores outputs of `shape` (H, W) against `content` and `styles`, as `measure`'s
    arguments are (`Scorer.measure`)."""
    options = options or StyleOptions()
    h, w = shape
    style_hws = style_sizes((h, w), [jnp.shape(s) for s in styles], options)
    pre = weights.preprocessing
    # The run's layers and pooling, measured in float32 with the scores' own statistics.
    config = options.loss_config().replace(precision="float32", convolution="direct")
    styles_model = [pre.to_model(resize(jnp.asarray(s, jnp.float32), *hw))
                    for s, hw in zip(styles, style_hws)]
    targets = _style_targets(weights.params, styles_model, config,
                             options.objective.style_blend_weights)
    photo = pre.to_model(resize(jnp.asarray(content, jnp.float32), h, w))
    content_features = content_targets(weights.params, photo, config)
    base = _distances(weights.params, photo, targets, content_features, config)
    references = {
        "flat grey": jnp.full((h, w, 3), 0.5, jnp.float32),
        "noise": jax.random.uniform(jax.random.key(SCORING_SEED), (h, w, 3)),
    }
    for name, picture in references.items():
        scores = _content_distances(weights.params, pre.to_model(picture), content_features,
                                    config)
        references[name] = float(np.mean([float(v) for v in scores.values()]))
    return Scorer(weights, (h, w), config, targets, content_features, base, references)


def measure(
    weights: VGGWeights,
    image: np.ndarray | jax.Array,
    content: np.ndarray | jax.Array,
    styles: Sequence[np.ndarray | jax.Array],
    options: StyleOptions | None = None,
) -> Quality:
    """Scores a stylized image against its content and style images.

    Args:
      weights: the network to measure with (the run's own).
      image: the output, float [H, W, 3] RGB in [0, 1].
      content: the content image, any size (resized to the output's).
      styles: the style images, resized as the run resized them (``options.objective.style_scale``).
      options: the run's options: layers, pooling, blend weights and style scales.

    Returns:
      A `Quality`.
    """
    shape = tuple(jnp.shape(image)[:2])
    return scorer(weights, shape, content, styles, options).measure(image)
