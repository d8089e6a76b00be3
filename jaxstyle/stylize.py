"""`stylize`: the one high-level call, from RGB arrays to a stylized RGB array."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import losses
from jaxstyle.errors import JaxstyleError, OptimizationError
from jaxstyle.images import fit_longest_side, resize
from jaxstyle.checkpoint import RunState, restore_state
from jaxstyle.optimize import OptimizerConfig, Progress, minimize, state_like
from jaxstyle.options import StyleOptions
from jaxstyle.preprocessing import Preprocessing
from jaxstyle.vgg import min_image_side
from jaxstyle.weights import VGGWeights

_ADAM_DEFAULT_LR = 0.02  # in [0, 1] pixel units; converted to the weights' input space


@dataclass
class StylizeProgress:
    """Passed to `stylize`'s callback after each chunk of iterations.

    Attributes:
      iteration: iterations done.
      total_iterations: iterations asked for.
      value: total loss now.
      components: loss components now (``content``, ``style``, ``tv``, ``style/<layer>``).
      evaluations: loss-and-gradient evaluations so far.
      elapsed: seconds since optimization started (compilation included).
      x: the image in the network's input space, float32 [H, W, 3].
      state: the optimizer state that goes with `x`.
      history: the loss after each iteration so far, by component.
      preprocessing: the weights' preprocessing, for `image`.
    """

    iteration: int
    total_iterations: int
    value: float
    components: dict[str, float]
    evaluations: int
    elapsed: float
    x: jax.Array
    state: object
    history: dict[str, list[float]]
    preprocessing: Preprocessing

    def run_state(self) -> RunState:
        """Everything needed to continue the run from here (see `stylize`'s `resume`)."""
        return RunState(self.iteration, np.asarray(self.x),
                        jax.tree_util.tree_map(np.asarray, self.state),
                        {k: list(v) for k, v in self.history.items()})

    def image(self) -> np.ndarray:
        """The current image as float32 [H, W, 3] RGB in [0, 1]."""
        return to_rgb(self.x, self.preprocessing)


@dataclass
class StylizeResult:
    """What `stylize` returns.

    Attributes:
      image: float32 [H, W, 3] RGB in [0, 1].
      history: the loss after each iteration, by component (``total``, ``content``, ...).
      losses: the final loss components.
      evaluations: loss-and-gradient evaluations made by the optimizer.
      timings: seconds spent on ``targets``, ``compile``, ``optimize`` and ``total``.
      weights_source: where the network's weights came from.
    """

    image: np.ndarray
    history: dict[str, list[float]]
    losses: dict[str, float]
    evaluations: int
    timings: dict[str, float]
    weights_source: str


def to_rgb(x: jax.Array, preprocessing: Preprocessing) -> np.ndarray:
    """Model-space float [H, W, 3] -> float32 RGB in [0, 1], clipped."""
    return np.clip(np.asarray(preprocessing.from_model(x), np.float32), 0.0, 1.0)


def _check_image(image, argument: str) -> jax.Array:
    image = jnp.asarray(image, jnp.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise JaxstyleError(f"{argument}: expected an RGB image [H, W, 3], got {image.shape}")
    return image


def _check_size(shape: tuple[int, ...], layers: Sequence[str], what: str) -> None:
    need = min_image_side(layers)
    if min(shape[:2]) < need:
        raise JaxstyleError(
            f"{what} of {shape[1]}x{shape[0]} px is too small for the network: the deepest "
            f"layer asked for needs at least {need} px on each side"
        )


def check_inputs(
    content_shape: tuple[int, ...], style_shapes: Sequence[tuple[int, ...]], options: StyleOptions
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Checks image counts and sizes against the options before any expensive work.

    Args:
      content_shape: the content image's shape [H, W, 3].
      style_shapes: each style image's shape.
      options: the run's options.

    Returns:
      ``(output_hw, style_hws)``: the output size and each style image's working size.

    Raises:
      JaxstyleError: no style, blend weights that do not match, or a size too small for the
        deepest layer used.
    """
    if not style_shapes:
        raise JaxstyleError("at least one style image is needed")
    blend = options.style_blend_weights
    if blend is not None and len(blend) != len(style_shapes):
        raise JaxstyleError(
            f"style_blend_weights: {len(blend)} weights for {len(style_shapes)} style images"
        )
    config = options.loss_config()
    shape = fit_longest_side(content_shape, options.size) if options.size else content_shape[:2]
    _check_size(shape, config.layers, "the output")
    style_side = max(1, round(options.style_scale * max(shape)))
    style_hws = []
    for i, style_shape in enumerate(style_shapes):
        hw = fit_longest_side(style_shape, style_side)
        _check_size(hw, config.style_layers, f"style image {i + 1} at style_scale")
        style_hws.append(hw)
    return tuple(shape), style_hws


def optimizer_config(options: StyleOptions, preprocessing: Preprocessing) -> OptimizerConfig:
    """The optimizer settings for `options`, with learning rates in the weights' input space."""
    if options.optimizer == "adam":
        lr = (options.learning_rate or _ADAM_DEFAULT_LR) * preprocessing.model_range()
    else:
        lr = options.learning_rate or 1.0
    return OptimizerConfig(options.optimizer, lr, options.lbfgs_history, options.lbfgs_linesearch)


def prepare(
    content: jax.Array,
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions,
    init_image: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Resizes the inputs and computes the loss targets and the starting image.

    Args:
      content: float [H, W, 3] RGB in [0, 1].
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1].
      weights: the network.
      options: the run's options.
      init_image: optional float [H', W', 3] RGB in [0, 1] to start from (resized to the output).

    Returns:
      ``(x0, targets)``: the model-space starting image [h, w, 3] and the objective's targets.

    Raises:
      JaxstyleError: bad shapes, too few or too many blend weights, or sizes too small.
    """
    content = _check_image(content, "content")
    styles = [_check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]
    shape, style_shapes = check_inputs(content.shape, [s.shape for s in styles], options)
    config = options.loss_config()
    pre = weights.preprocessing
    content_model = pre.to_model(resize(content, *shape))
    style_models = [pre.to_model(resize(s, *hw)) for s, hw in zip(styles, style_shapes)]
    targets = {
        "content": losses.content_targets(weights.params, content_model, config),
        "style": losses.style_targets(
            weights.params, style_models, config, options.style_blend_weights
        ),
    }
    if init_image is not None:
        x0 = pre.to_model(resize(_check_image(init_image, "init_image"), *shape))
    elif options.init == "noise":
        # Uniform RGB noise mapped into input space; neural-style uses N(0, 1e-3) in Caffe space,
        # which is a flat grey image, and gives L-BFGS nothing to work from on random weights.
        noise = jax.random.uniform(jax.random.key(options.seed), (*shape, 3))
        x0 = pre.to_model(noise)
    else:
        x0 = content_model
    return x0, targets


def stylize(
    content: jax.Array,
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions | None = None,
    *,
    init_image: jax.Array | None = None,
    callback: Callable[[StylizeProgress], None] | None = None,
    report_at: Callable[[int], bool] | None = None,
    resume: RunState | None = None,
) -> StylizeResult:
    """Repaints `content` in the style of `styles` (Gatys et al. 2015, neural-style's objective).

    Has no side effects: it reads its arguments and returns; files are the caller's business.

    Args:
      content: float [H, W, 3] RGB in [0, 1]; resized so its longest side is ``options.size``.
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1], resized to ``options.style_scale``
        times the output's longest side.
      weights: VGG19 weights from `jaxstyle.load_weights` or `jaxstyle.random_weights`.
      options: hyper-parameters; `StyleOptions()` by default.
      init_image: start from this image instead of ``options.init``.
      callback: called with a `StylizeProgress` every ``options.progress_every`` iterations.
      report_at: iterations at which a chunk must also end and `callback` be called.
      resume: continue a run from this state (from `StylizeProgress.run_state` or a checkpoint)
        instead of starting afresh; the inputs and options must be the run's own. The result is
        bit for bit that of the uninterrupted run on the same machine.

    Returns:
      A `StylizeResult` with the image, the loss history, evaluations and timings.

    Raises:
      JaxstyleError: invalid inputs or a `resume` state that does not fit;
        `OptimizationError` if the loss becomes NaN or infinite (it carries the last good state).
    """
    options = options or StyleOptions()
    start = time.perf_counter()
    x0, targets = prepare(content, styles, weights, options, init_image)
    jax.block_until_ready(targets)
    targets_seconds = time.perf_counter() - start

    def wrap(p: Progress) -> StylizeProgress:
        return StylizeProgress(
            p.iteration, p.total_iterations, p.value, p.components, p.evaluations, p.elapsed,
            p.x, p.state, p.history, weights.preprocessing,
        )

    args = (weights.params, targets)
    config = optimizer_config(options, weights.preprocessing)
    state, start_iteration, history = None, 0, None
    if resume is not None:
        if np.shape(resume.x) != x0.shape:
            raise JaxstyleError(f"resume: image of shape {np.shape(resume.x)}, run has {x0.shape}")
        like = state_like(losses.objective, options.loss_config(), x0, args, config,
                          options.progress_every)
        state = restore_state(jax.tree_util.tree_leaves(resume.state), like)
        x0, start_iteration, history = jnp.asarray(resume.x), resume.iteration, resume.history
    try:
        result = minimize(
            losses.objective,
            options.loss_config(),
            x0,
            args,
            config,
            options.iterations,
            chunk=options.progress_every,
            stops=report_at,
            callback=(lambda p: callback(wrap(p))) if callback else None,
            state=state,
            start_iteration=start_iteration,
            history=history,
        )
    except OptimizationError as exc:
        raise OptimizationError(str(exc), last_good=wrap(exc.last_good)) from None
    final = {"total": float(result.state.value)}
    final.update({k: float(v) for k, v in result.state.aux.items()})
    return StylizeResult(
        image=to_rgb(result.x, weights.preprocessing),
        history=result.history,
        losses=final,
        evaluations=result.evaluations,
        timings={
            "targets": targets_seconds,
            "compile": result.compile_seconds,
            "optimize": result.run_seconds,
            "total": time.perf_counter() - start,
        },
        weights_source=weights.source,
    )
