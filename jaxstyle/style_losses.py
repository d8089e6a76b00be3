"""Style losses as `StyleLoss` pairs of pure functions: ``statistics`` and ``distance``.

- `GRAM`: neural-style's Gram matrices (Gatys et al. 2015).
- `MEAN_COVARIANCE`: a Gaussian's mean and covariance, compared with the 2-Wasserstein distance.
- `sliced_wasserstein`: the whole feature distribution, compared along random 1-D projections
  (Heitz, Vanhoey, Chambon & Belcour, CVPR 2021).
- `gram_histogram`: Gram plus the per-channel histogram loss of Risser, Wilmot & Barnes (2017).

A style image's statistics are blended with other styles' by a weighted sum. For the two
distribution losses a target is kept as quantile functions at `QUANTILES` levels: a weighted sum
of 1-D quantile functions is the 1-D Wasserstein barycenter, so blending stays meaningful.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.choices import STYLE_LOSSES
from jaxstyle.cpu_pool import host_callbacks_safe

QUANTILES = 256
"""Levels at which a distribution target keeps its quantile function."""


def check_hwc(features: jax.Array, argument: str) -> None:
    """Raises ValueError naming `argument` unless it is one image's activations [H, W, C]."""
    if features.ndim != 3:
        raise ValueError(f"{argument}: expected [H, W, C], got shape {tuple(features.shape)}")


def _identity(target):
    return target


def _no_redraw(target, key):
    del key
    return target


@dataclass(frozen=True)
class StyleLoss:
    """A style loss as pure functions, so research users can plug in their own.

    Attributes:
      name: shown in reports.
      statistics: ``(features [H, W, C], mask [H, W] | None) -> target`` (any pytree); targets of
        several style images are blended by a weighted sum of these.
      distance: ``(features [H, W, C], target, mask [H, W] | None) -> scalar``.
      prepare: applied to a blended target once, before optimization (e.g. a matrix square root).
      redraw: ``(prepared target, key) -> target``, applied between compiled chunks of iterations
        (L-BFGS needs the objective fixed within one); the identity for deterministic losses.
      energy: ``(prepared target) -> scalar``, the target's own size on the distance's scale:
        the distance from a blank (all-zero) feature map to it. The relative objective's style
        term is floored by it (and divided by it when the targets do not carry the photo's own
        distance). None: `distance` of a 1 x 1 zero map, computed when needed.
    """

    name: str
    statistics: Callable
    distance: Callable
    prepare: Callable = _identity
    redraw: Callable = _no_redraw
    energy: Callable | None = None

    def target_energy(self, target, channels: int) -> jax.Array:
        """`energy` of a prepared target of a layer with `channels` channels."""
        if self.energy is not None:
            return self.energy(target)
        return self.distance(jnp.zeros((1, 1, channels), jnp.float32), target, None)

    @property
    def redraws(self) -> bool:
        """Whether the loss has a random part that `redraw` changes."""
        return self.redraw is not _no_redraw


def masked(features: jax.Array, mask: jax.Array | None):
    """(float32 features [H, W, C] * mask, number of pixels weighted in, a float); mask float
    [H, W] in [0, 1] or None (every pixel)."""
    h, w, _ = features.shape
    if mask is None:  # a float: a count times C past 2**31 would overflow a jitted int32
        return features.astype(jnp.float32), float(h * w)
    return features.astype(jnp.float32) * mask[..., None], jnp.maximum(jnp.sum(mask), 1e-6)


@jax.custom_jvp
def _self_product(flat: jax.Array) -> jax.Array:
    """flat^T flat of flat [N, C]."""
    return flat.T @ flat


@_self_product.defjvp
def _self_product_jvp(primals, tangents):
    # d(F^T F) = S + S^T with S = F^T dF. JAX's own rule is F^T dF + dF^T F, whose transpose
    # (the gradient) is two [N, C] x [C, C] products; transposing this one adds the cotangent
    # to its transpose first and takes one product, which halves the dearest part of the Gram
    # losses' gradient (relu1_1 at 384 px: 78 -> 30 ms for value and gradient).
    (flat,), (tangent,) = primals, tangents
    s = flat.T @ tangent
    return _self_product(flat), s + s.T


def gram_statistics(features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Gram matrix of features over the region `mask` (all of it if None), as in neural-style.

    With a mask the normalisation is C times the mask's area rather than C*H*W, so a region's
    Gram matrix is comparable to a whole style image's.

    Args:
      features: float [H, W, C], one image's activations.
      mask: float [H, W] in [0, 1], or None for the whole image.

    Returns:
      float32 [C, C], ``F^T F / (C * area)`` with F the [H*W, C] matrix of (masked) features and
      area H*W without a mask.
    """
    check_hwc(features, "features")
    f, area = masked(features, mask)
    return _self_product(f.reshape(-1, f.shape[-1])) / (f.shape[-1] * area)


def gram_distance(features: jax.Array, target: jax.Array,
                  mask: jax.Array | None = None) -> jax.Array:
    """neural-style's style loss, ``mean((G - A)^2)``, on the region `mask`.

    Args:
      features: float [H, W, C], the image's activations.
      target: float [C, C], the style's Gram matrix A (`gram_statistics`).
      mask: float [H, W] in [0, 1], or None for the whole image.

    Returns:
      float32 scalar.

    Raises:
      ValueError: `target` is not [C, C] for the features' C.
    """
    check_hwc(features, "features")
    c = features.shape[-1]
    if target.shape != (c, c):
        raise ValueError(f"target: shape {target.shape}, expected {(c, c)}")
    return jnp.mean(jnp.square(gram_statistics(features, mask) - target))


def mean_covariance_statistics(features: jax.Array, mask: jax.Array | None = None) -> dict:
    """Per-channel mean [C] and covariance [C, C] of features [H, W, C], weighted by `mask`."""
    check_hwc(features, "features")
    flat = features.reshape(-1, features.shape[-1]).astype(jnp.float32)
    weights = jnp.ones(flat.shape[0]) if mask is None else mask.reshape(-1)
    total = jnp.maximum(jnp.sum(weights), 1e-6)
    mean = weights @ flat / total
    centred = (flat - mean) * jnp.sqrt(weights)[:, None]
    return {"mean": mean, "cov": _self_product(centred) / total}


def _psd_sqrt(a: jax.Array) -> jax.Array:
    values, vectors = jnp.linalg.eigh(a)
    return (vectors * jnp.sqrt(jnp.maximum(values, 1e-8))) @ vectors.T


@jax.custom_jvp
def _trace_sqrt(m: jax.Array) -> jax.Array:
    """tr(M^1/2) of a symmetric positive semi-definite M [C, C]."""
    return jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(m), 0.0)))


@_trace_sqrt.defjvp
def _trace_sqrt_jvp(primals, tangents):
    # d tr(M^1/2) = tr(M^-1/2 dM) / 2, from the eigenvalues alone. Differentiating through
    # eigh instead divides by eigenvalue gaps, which ReLU features (channels that are all zero,
    # hence repeated zero eigenvalues) make 0: the gradient was NaN at the first step. Along
    # eigenvalues under 1e-6 of the largest the derivative (infinite in theory) is taken as 0.
    (m,), (dm,) = primals, tangents
    values, vectors = jnp.linalg.eigh(m)
    root = jnp.sqrt(jnp.maximum(values, 0.0))
    inverse = jnp.where(root > 1e-6 * jnp.max(root), 0.5 / jnp.maximum(root, 1e-30), 0.0)
    return jnp.sum(root), jnp.sum(((vectors * inverse) @ vectors.T) * dm)


def _mean_covariance_prepare(target: dict) -> dict:
    return {**target, "cov_sqrt": _psd_sqrt(target["cov"])}


def wasserstein_distance(features: jax.Array, target: dict, mask: jax.Array | None = None):
    """Squared 2-Wasserstein distance between Gaussians fitted to the features and the target.

    ``|mu - mu_t|^2 + tr(S + S_t - 2 (S_t^1/2 S S_t^1/2)^1/2)``, the mean+covariance style loss
    of crowsonkb/style-transfer-pytorch; `target` comes from `mean_covariance_statistics` plus
    ``cov_sqrt`` (added by the `StyleLoss`'s ``prepare``). Averaged over channels so its scale
    does not grow with the layer's width.
    """
    stats = mean_covariance_statistics(features, mask)
    root = target["cov_sqrt"]
    cross = root @ stats["cov"] @ root
    cross = (cross + cross.T) / 2  # symmetric to rounding, as eigh assumes
    distance = (jnp.sum(jnp.square(stats["mean"] - target["mean"]))
                + jnp.trace(stats["cov"]) + jnp.trace(target["cov"]) - 2 * _trace_sqrt(cross))
    return jnp.maximum(distance, 0.0) / features.shape[-1]


def _levels(n: int) -> jax.Array:
    return (jnp.arange(n, dtype=jnp.float32) + 0.5) / n


# Sorting is the cost of the distribution losses. XLA's CPU sort ran ~70x slower than NumPy's
# here (a [64, 174592] float32 array: 2.1 s against 0.03 s), so on CPUs the ranks come from
# NumPy through a host callback; other platforms sort with XLA. Only ranks and positions cross
# over, never gradients: the losses are written so that their gradient is elementwise. Where
# jaxlib's CPU pool has a single thread the callback would hang (`jaxstyle.cpu_pool`): XLA sorts.


def _numpy_on_cpus(host: Callable, xla: Callable, values: jax.Array, weights: jax.Array):
    """``host(values, weights)`` (NumPy through a callback) on CPUs whose jaxlib pool can run
    it, ``xla(values, weights)`` elsewhere."""
    cpu = host if host_callbacks_safe() else xla
    return jax.lax.platform_dependent(values, weights, cpu=cpu, default=xla)


def positions_host(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """NumPy: each sample's position in (0, 1) in its row's weighted order; [K, N] -> [K, N].

    Tied values (ReLU zeros) may be ordered either way: their loss terms are the same whichever
    target each gets. NumPy's default sort is deterministic and 7x faster than its stable one.
    """
    k, n = values.shape
    order = np.argsort(values, axis=-1)
    if np.all(weights == weights[0]):
        middle = np.broadcast_to((np.arange(n, dtype=np.float32) + 0.5) / n, (k, n))
    else:
        w = weights[order]
        middle = (np.cumsum(w, axis=-1) - w / 2) / max(float(weights.sum()), 1e-6)
    positions = np.empty((k, n), np.float32)
    np.put_along_axis(positions, order, middle.astype(np.float32, copy=False), axis=-1)
    return positions


def _positions_xla(values: jax.Array, weights: jax.Array) -> jax.Array:
    order = jnp.argsort(values, axis=-1, stable=True)
    w = weights[order]
    middle = (jnp.cumsum(w, axis=-1) - w / 2) / jnp.maximum(jnp.sum(weights), 1e-6)
    return jnp.take_along_axis(middle, jnp.argsort(order, axis=-1), -1)


def _positions(values: jax.Array, weights: jax.Array) -> jax.Array:
    """Each sample's position in its row's weighted order, the middle of its weight: float32
    [K, N] in (0, 1) for values [K, N] and weights [N] (constant: no gradient flows)."""
    values = jax.lax.stop_gradient(values.astype(jnp.float32))
    weights = jax.lax.stop_gradient(weights.astype(jnp.float32))

    def host(v, w):
        shape = jax.ShapeDtypeStruct(v.shape, jnp.float32)
        return jax.pure_callback(lambda a, b: positions_host(np.asarray(a), np.asarray(b)),
                                 shape, v, w, vmap_method="sequential")

    return _numpy_on_cpus(host, _positions_xla, values, weights)


def _quantile_at(quantiles: jax.Array, positions: jax.Array) -> jax.Array:
    """Quantile functions [K, Q] (levels (j + 0.5) / Q) read at positions [K, N], linearly
    interpolated and held constant beyond the first and last level (as `jnp.interp`)."""
    q = quantiles.shape[-1]
    x = jnp.clip(positions * q - 0.5, 0.0, q - 1.0)
    low = jnp.floor(x).astype(jnp.int32)
    high = jnp.minimum(low + 1, q - 1)
    frac = x - low
    a = jnp.take_along_axis(quantiles, low, -1)
    return a + frac * (jnp.take_along_axis(quantiles, high, -1) - a)


def quantiles_host(values: np.ndarray, weights: np.ndarray, levels: int,
                    uniform: bool) -> np.ndarray:
    """NumPy: quantile functions [K, levels] of the rows of values [K, N] (see
    `weighted_quantiles`)."""
    wanted = (np.arange(levels, dtype=np.float64) + 0.5) / levels
    if uniform:
        return np.quantile(values, wanted, axis=-1, method="hazen").T.astype(np.float32)
    order = np.argsort(values, axis=-1)
    ordered = np.take_along_axis(values, order, -1)
    cumulative = np.cumsum(weights[order], axis=-1)
    out = np.empty((values.shape[0], levels), np.float32)
    for row in range(values.shape[0]):
        index = np.searchsorted(cumulative[row], wanted * cumulative[row, -1], side="left")
        out[row] = ordered[row, np.minimum(index, values.shape[1] - 1)]
    return out


def _quantiles_xla(values: jax.Array, weights: jax.Array, levels: int, uniform: bool):
    if uniform:
        return _quantile_at(jnp.sort(values, axis=-1),
                            jnp.broadcast_to(_levels(levels), (values.shape[0], levels)))
    order = jnp.argsort(values, axis=-1, stable=True)
    ordered = jnp.take_along_axis(values, order, -1)
    cumulative = jnp.cumsum(weights[order], axis=-1)
    index = jax.vmap(jnp.searchsorted, in_axes=(0, 0))(
        cumulative, _levels(levels)[None, :] * cumulative[:, -1:])
    return jnp.take_along_axis(ordered, jnp.minimum(index, values.shape[1] - 1), -1)


def weighted_quantiles(values: jax.Array, weights: jax.Array | None, levels: int = QUANTILES):
    """Quantile functions of the columns of `values`, each sample weighted.

    Args:
      values: float [N, K], N samples of K one-dimensional distributions.
      weights: float [N] >= 0 (a mask's values), or None for equal weights.
      levels: how many quantile levels, at ``(j + 0.5) / levels``.

    Returns:
      float32 [K, levels] (no gradient). With equal weights, linear interpolation between the
      sorted samples placed at ``(i + 0.5) / N`` (NumPy's "hazen" method); with weights, the
      smallest sample whose cumulative weight reaches the level ("inverted_cdf"), so that
      samples of weight 0 play no part.
    """
    values = jax.lax.stop_gradient(values.astype(jnp.float32)).T  # [K, N]
    uniform = weights is None
    weights = jnp.ones(values.shape[1]) if uniform else weights.astype(jnp.float32)
    weights = jax.lax.stop_gradient(weights)

    def host(v, w):
        shape = jax.ShapeDtypeStruct((v.shape[0], levels), jnp.float32)
        return jax.pure_callback(
            lambda a, b: quantiles_host(np.asarray(a), np.asarray(b), levels, uniform),
            shape, v, w, vmap_method="sequential")

    xla = functools.partial(_quantiles_xla, levels=levels, uniform=uniform)
    return _numpy_on_cpus(host, xla, values, weights)


def sorted_matching_distance(values: jax.Array, weights: jax.Array | None,
                             quantiles: jax.Array) -> jax.Array:
    """Mean squared distance of each sample to the target's quantile at the sample's rank.

    The 1-D optimal-transport (Wasserstein-2) distance between the empirical distributions of
    the columns of `values` and the targets, averaged over the K columns; its gradient moves
    each sample toward its histogram-matched value (Risser et al.'s remapping), and is
    elementwise: the matched values are constants.

    Args:
      values: float [N, K]; weights: float [N] or None; quantiles: float [K, Q] (a target from
        `weighted_quantiles`).

    Returns:
      float32 scalar.
    """
    values = values.astype(jnp.float32).T  # [K, N]
    k, n = values.shape
    w = jnp.ones(n) if weights is None else weights.astype(jnp.float32)
    matched = jax.lax.stop_gradient(_quantile_at(quantiles, _positions(values, w)))
    total = jnp.maximum(jnp.sum(w), 1e-6)
    return jnp.sum(w * jnp.square(values - matched)) / (total * k)


def flat_features(features: jax.Array, mask: jax.Array | None):
    """Features [H, W, C] as samples [H*W, C], with the mask [H, W] as their weights [H*W] (or
    None)."""
    check_hwc(features, "features")
    return features.reshape(-1, features.shape[-1]), None if mask is None else mask.reshape(-1)


def projection_directions(seed: int, channels: int, count: int) -> jax.Array:
    """`count` random unit vectors in R^channels, float32 [channels, count], drawn from
    ``jax.random.key(seed)``: the fixed bank of `sliced_wasserstein`."""
    d = jax.random.normal(jax.random.key(seed), (channels, count), jnp.float32)
    return d / jnp.linalg.norm(d, axis=0, keepdims=True)


@functools.cache
def sliced_wasserstein(seed: int = 0, bank: int = 4, per_channel: int = 1) -> StyleLoss:
    """The sliced Wasserstein style loss of Heitz et al. (CVPR 2021).

    Features [N, C] are projected on K = ``per_channel * C`` random unit directions; the sorted
    projections are compared with the style's (1-D optimal transport, squared, averaged over
    samples and directions). The target keeps the style's quantile functions along a fixed bank
    of ``bank * K`` directions drawn from ``jax.random.key(seed)``; each compiled chunk uses K of
    them, redrawn between chunks by `StyleLoss.redraw` with an explicit key (L-BFGS needs a
    deterministic objective within a chunk, and new directions keep it from fitting a few).

    Args:
      seed: the directions' key.
      bank: directions in the bank, as a multiple of K.
      per_channel: directions per chunk, as a multiple of the layer's width.

    Returns:
      A `StyleLoss` (the same object for the same arguments, so compiled code is reused).
    """

    def bank_size(channels: int) -> int:
        return bank * per_channel * channels

    def statistics(features, mask=None):
        flat, weights = flat_features(features, mask)
        total = bank_size(flat.shape[1])
        projected = flat @ projection_directions(seed, flat.shape[1], total)
        return {"quantiles": weighted_quantiles(projected, weights)}

    def prepare(target):
        k = target["quantiles"].shape[0] // bank
        return {**target, "select": jnp.arange(k, dtype=jnp.int32)}

    def redraw(target, key):
        total = target["quantiles"].shape[0]
        select = jax.random.choice(key, total, (total // bank,), replace=False)
        return {**target, "select": select.astype(jnp.int32)}

    def distance(features, target, mask=None):
        flat, weights = flat_features(features, mask)
        total = bank_size(flat.shape[1])
        directions = projection_directions(seed, flat.shape[1], total)[:, target["select"]]
        return sorted_matching_distance(flat @ directions, weights,
                                        target["quantiles"][target["select"]])

    def energy(target):  # over the whole bank, so that it does not change with the redraws
        return jnp.mean(jnp.square(target["quantiles"]))

    return StyleLoss("sliced_wasserstein", statistics, distance, prepare, redraw, energy)


@functools.cache
def gram_histogram(weight: float = 1.0) -> StyleLoss:
    """Gram loss plus Risser, Wilmot & Barnes' (2017) histogram loss, ``weight`` times it.

    The histogram term matches each channel's distribution to the style's: the squared distance
    of every activation to its histogram-matched value, averaged (`sorted_matching_distance`
    along the channel axes). Gram matrices alone can match with the wrong per-channel spread,
    which Risser et al. saw as washed-out or unstable results.
    """

    def statistics(features, mask=None):
        flat, weights = flat_features(features, mask)
        return {"gram": gram_statistics(features, mask),
                "quantiles": weighted_quantiles(flat, weights)}

    def distance(features, target, mask=None):
        flat, weights = flat_features(features, mask)
        return (gram_distance(features, target["gram"], mask)
                + weight * sorted_matching_distance(flat, weights, target["quantiles"]))

    def energy(target):
        return (jnp.mean(jnp.square(target["gram"]))
                + weight * jnp.mean(jnp.square(target["quantiles"])))

    return StyleLoss("gram_histogram", statistics, distance, energy=energy)


def _mean_covariance_energy(target: dict) -> jax.Array:
    channels = target["mean"].shape[0]
    return (jnp.sum(jnp.square(target["mean"])) + jnp.trace(target["cov"])) / channels


def _gram_energy(target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(target))


GRAM = StyleLoss("gram", gram_statistics, gram_distance, energy=_gram_energy)
"""neural-style's style loss: Gram matrices compared by mean squared difference."""

MEAN_COVARIANCE = StyleLoss("mean_cov", mean_covariance_statistics, wasserstein_distance,
                            _mean_covariance_prepare, energy=_mean_covariance_energy)
"""crowsonkb's style loss: a Gaussian's mean and covariance, compared by the 2-Wasserstein
distance."""


def style_loss_named(name: str, seed: int = 0, histogram_weight: float = 1.0) -> StyleLoss:
    """The `StyleLoss` called `name`, made with the run's seed (sliced_wasserstein's directions)
    and histogram weight (gram_histogram's).

    Raises:
      ValueError: an unknown name (the message lists `STYLE_LOSSES`).
    """
    makers = {"gram": lambda: GRAM, "mean_cov": lambda: MEAN_COVARIANCE,
              "sliced_wasserstein": lambda: sliced_wasserstein(seed),
              "gram_histogram": lambda: gram_histogram(histogram_weight)}
    if name not in makers:
        raise ValueError(f"style_loss: expected one of {STYLE_LOSSES}, got {name!r}")
    return makers[name]()
