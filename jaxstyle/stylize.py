"""`stylize`: the one high-level call, from RGB arrays to a stylized RGB array."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import color, losses
from jaxstyle.checkpoint import RunState, restore_state
from jaxstyle.errors import JaxstyleError, OptimizationError
from jaxstyle.images import fit_longest_side, resize
from jaxstyle.optimize import OptimizerConfig, Progress, minimize, state_like
from jaxstyle.options import OptionsError, StyleOptions
from jaxstyle.preprocessing import Preprocessing
from jaxstyle.vgg import depths_of, min_image_side, validate_layers
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
      to_image: turns `x` into RGB (see `Problem`).
      scale: which of ``options.scales`` is running (0 for single-scale runs).
      tile: which tile is running (0 without tiling).
      tiles: how many tiles this scale has (1 without tiling).
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
    to_image: Callable[[jax.Array], np.ndarray]
    scale: int = 0
    tile: int = 0
    tiles: int = 1

    def run_state(self) -> RunState:
        """Everything needed to continue the run from here (see `stylize`'s `resume`)."""
        return RunState(self.iteration, np.asarray(self.x),
                        jax.tree_util.tree_map(np.asarray, self.state),
                        {k: list(v) for k, v in self.history.items()})

    def image(self) -> np.ndarray:
        """The current image as float32 [H, W, 3] RGB in [0, 1]."""
        return self.to_image(self.x)


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
      devices: how many devices the run was sharded over.
    """

    image: np.ndarray
    history: dict[str, list[float]]
    losses: dict[str, float]
    evaluations: int
    timings: dict[str, float]
    weights_source: str
    devices: int = 1


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


def output_shape(content_shape: tuple[int, ...], options: StyleOptions) -> tuple[int, int]:
    """(H, W) of the output: longest side ``options.size``, or the content's size if 0/None."""
    if options.size:
        return fit_longest_side(content_shape, options.size)
    return tuple(content_shape[:2])


def check_network(weights: VGGWeights, options: StyleOptions) -> None:
    """Checks that the network the weights hold has every layer the options name.

    Raises:
      OptionsError: a content or style layer the network lacks (``relu5_4`` with a VGG16); the
        message names the option and lists the network's layers.
    """
    for name in ("content_layers", "style_layers"):
        try:
            validate_layers(getattr(options, name), name, depths_of(weights.params))
        except ValueError as exc:
            raise OptionsError(str(exc)) from None


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
    shape = output_shape(content_shape, options)
    _check_size(shape, config.layers, "the output")
    scales = options.style_scales or (options.style_scale,) * len(style_shapes)
    if len(scales) != len(style_shapes):
        raise JaxstyleError(
            f"style_scales: {len(scales)} scales for {len(style_shapes)} style images"
        )
    style_hws = []
    for i, (style_shape, scale) in enumerate(zip(style_shapes, scales)):
        hw = fit_longest_side(style_shape, max(1, round(scale * max(shape))))
        _check_size(hw, config.style_layers, f"style image {i + 1} at style_scale")
        style_hws.append(hw)
    return tuple(shape), style_hws


def optimizer_config(
    options: StyleOptions, preprocessing: Preprocessing, pixel_units: bool = False
) -> OptimizerConfig:
    """The optimizer settings for `options`, with Adam's rate in the variable's units."""
    if options.optimizer == "adam":
        lr = options.learning_rate or _ADAM_DEFAULT_LR
        lr = lr if pixel_units else lr * preprocessing.model_range()
    else:
        lr = options.learning_rate or 1.0
    return OptimizerConfig(options.optimizer, lr, options.lbfgs_history, options.lbfgs_linesearch,
                           options.ema_decay)


@dataclass(frozen=True)
class Problem:
    """What is optimized, and how the optimized variable becomes a picture.

    Attributes:
      loss_fn: ``(x, params, targets, static) -> (total, components)``, a module-level function.
      static: its hashable last argument.
      x0: the starting variable: the model-space image [H, W, 3], or the luminance [H, W, 1] in
        [0, 1] when only luminance is optimized.
      targets: the objective's targets.
      to_image: the variable -> float32 [H, W, 3] RGB in [0, 1].
      pixel_units: whether the variable is in [0, 1] pixel units (else the network's space).
    """

    loss_fn: Callable
    static: object
    x0: jax.Array
    targets: dict
    to_image: Callable[[jax.Array], np.ndarray]
    pixel_units: bool


def luminance_objective(y: jax.Array, params: dict, targets: dict, static) -> tuple:
    """`losses.objective` of the grey image whose luminance is y [H, W, 1] (static: (config,
    preprocessing)): Gatys et al. 2017's luminance-only transfer."""
    config, preprocessing = static
    return losses.objective(preprocessing.to_model(color.gray_rgb(y)), params, targets, config)


def _mask(mask, shape: tuple[int, int], what: str) -> jax.Array:
    mask = jnp.asarray(mask, jnp.float32)
    if mask.ndim == 3:
        mask = mask.mean(-1)
    if mask.ndim != 2:
        raise JaxstyleError(f"{what}: expected a [H, W] or [H, W, C] image, got {mask.shape}")
    mask = jnp.clip(resize(mask[..., None], *shape)[..., 0], 0.0, 1.0)
    if float(mask.max()) < 0.5:
        raise JaxstyleError(f"{what} covers nothing: it has no white (or light) pixel")
    return mask


def prepare(
    content: jax.Array,
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions,
    init_image: jax.Array | None = None,
    style_masks: Sequence[jax.Array | None] | None = None,
    content_mask: jax.Array | None = None,
    style_targets: list[dict] | None = None,
) -> Problem:
    """Resizes and recolours the inputs, computes the targets and the starting point.

    Args:
      content: float [H, W, 3] RGB in [0, 1].
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1].
      weights: the network.
      options: the run's options (``options.size`` is the output's longest side).
      init_image: optional float [H', W', 3] RGB in [0, 1] to start from (resized to the output).
      style_masks: optional, one mask per style (any size, resized to the output; white = this
        style applies there; None entries apply everywhere).
      content_mask: optional mask; the content loss counts only where it is white.
      style_targets: ``problem.targets["style"]`` of an earlier `prepare` at the same output
        size, reused instead of recomputed (only valid when the style targets do not depend on
        the content: no masks, no colour matching, no luminance-only transfer).

    Returns:
      The `Problem` to hand to the optimizer.

    Raises:
      JaxstyleError: bad shapes or counts, masks that cover nothing, or sizes too small.
    """
    content = _check_image(content, "content")
    styles = [_check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]
    shape, style_shapes = check_inputs(content.shape, [s.shape for s in styles], options)
    if style_masks is not None and len(style_masks) != len(styles):
        raise JaxstyleError(f"style masks: {len(style_masks)} masks for {len(styles)} style images")
    config = options.loss_config()
    pre = weights.preprocessing
    content_rgb = resize(content, *shape)
    style_rgbs = [resize(s, *hw) for s, hw in zip(styles, style_shapes)]
    if options.match_style_colors:
        style_rgbs = [color.match_colors(s, content_rgb) for s in style_rgbs]
    luminance_only = options.original_colors == "luminance"
    if luminance_only:
        content_y = color.luminance(content_rgb)
        content_in = color.gray_rgb(content_y)
        style_rgbs = [color.gray_rgb(color.match_luminance(color.luminance(s), content_y))
                      for s in style_rgbs]
    else:
        content_in = content_rgb
    masks = None if style_masks is None else [
        None if m is None else _mask(m, shape, f"style mask {i + 1}")
        for i, m in enumerate(style_masks)
    ]
    cmask = None if content_mask is None else _mask(content_mask, shape, "content mask")
    try:
        targets = losses.region_targets(
            weights.params, pre.to_model(content_in), [pre.to_model(s) for s in style_rgbs],
            config, masks, cmask, options.style_blend_weights, style_targets,
        )
    except ValueError as exc:
        raise JaxstyleError(str(exc)) from None
    if init_image is not None:
        start = resize(_check_image(init_image, "init_image"), *shape)
    elif options.init == "noise":
        # Uniform RGB noise; neural-style's N(0, 1e-3) in Caffe space is a flat grey image and
        # gives L-BFGS nothing to work from on random weights.
        start = jax.random.uniform(jax.random.key(options.seed), (*shape, 3))
    else:
        start = content_in
    if luminance_only:
        chroma = color.rgb_to_ycbcr(content_rgb)[..., 1:]

        def with_content_chroma(y):
            ycbcr = jnp.concatenate([jnp.clip(y, 0.0, 1.0), chroma], axis=-1)
            return np.clip(np.asarray(color.ycbcr_to_rgb(ycbcr), np.float32), 0.0, 1.0)

        return Problem(luminance_objective, (config, pre), color.luminance(start), targets,
                       with_content_chroma, pixel_units=True)

    def to_image(x):
        rgb = to_rgb(x, pre)
        if options.original_colors == "swap":
            rgb = np.asarray(color.swap_chroma(jnp.asarray(rgb), content_rgb), np.float32)
        return rgb

    return Problem(losses.objective, config, pre.to_model(start), targets, to_image,
                   pixel_units=False)


def memory_limit_bytes(options: StyleOptions) -> int | None:
    """``options.memory_limit_gb`` in bytes (None: what the device has free; 0: no check)."""
    if options.memory_limit_gb is None:
        return None
    return int(options.memory_limit_gb * 2**30)


def _pick_output(result, options: StyleOptions) -> jax.Array:
    if options.keep_best:
        return result.state.best_x
    if options.ema_decay:
        return result.state.ema
    return result.x


def tile_count(content_shape: tuple[int, ...], options: StyleOptions) -> int:
    """How many tiles a (single-scale) run at ``options.size`` renders: 1 without tiling."""
    shape = output_shape(content_shape, options)
    if not options.tile_size or max(shape) <= options.tile_size:
        return 1
    from jaxstyle.tiling import tile_starts

    return (len(tile_starts(shape[0], options.tile_size, options.tile_overlap))
            * len(tile_starts(shape[1], options.tile_size, options.tile_overlap)))


def _combine(results: list[StylizeResult], image: np.ndarray, losses: dict[str, float],
             weights: VGGWeights) -> StylizeResult:
    """One result for a sequence of runs (scales or tiles): the history runs through them all."""
    last = results[-1]
    return StylizeResult(
        image=image,
        history={k: [v for r in results for v in r.history[k]] for k in last.history},
        losses=losses,
        evaluations=sum(r.evaluations for r in results),
        timings={k: sum(r.timings[k] for r in results) for k in last.timings},
        weights_source=weights.source,
    )


def _render(content, styles, weights, options, *, init_image, style_masks, content_mask,
            callback, report_at, resume, scale) -> StylizeResult:
    """One scale: directly, or in tiles when the output is larger than ``options.tile_size``."""
    tiles = tile_count(jnp.shape(content), options)
    if tiles == 1:
        return _stylize_scale(content, styles, weights, options, init_image=init_image,
                              style_masks=style_masks, content_mask=content_mask,
                              callback=callback, report_at=report_at, resume=resume, scale=scale)
    from jaxstyle.tiling import stylize_tiled

    if style_masks is not None or content_mask is not None or resume is not None:
        raise JaxstyleError("tiles: masks and resuming are not supported with tiling yet")

    def run_tile(content_tile, init_tile, targets, index, count):
        def on_progress(p):
            p.tile, p.tiles = index, count
            callback(p)

        return _stylize_scale(
            content_tile, styles, weights, options.replace(size=0, tile_size=None),
            init_image=init_tile, style_masks=None, content_mask=None,
            callback=on_progress if callback else None, report_at=report_at, resume=None,
            scale=scale, style_targets=targets,
        )

    image, results = stylize_tiled(content, styles, weights, options, run_tile, init_image)
    mean_losses = {k: float(np.mean([r.losses[k] for r in results])) for k in results[-1].losses}
    return _combine(results, image, mean_losses, weights)


def redrawn_args(args: tuple, options: StyleOptions) -> Callable[[int], tuple] | None:
    """For a style loss with random parts (sliced Wasserstein's directions): the optimizer's
    ``(params, targets)`` for the chunk starting at an iteration, redrawn every
    ``options.progress_every`` iterations from a key made from ``options.seed`` and that period,
    so an interrupted and resumed run draws what the uninterrupted one drew. None otherwise."""
    config = options.loss_config()
    if not config.style_loss.redraws:
        return None
    params, targets = args
    key = jax.random.fold_in(jax.random.key(options.seed), 1)  # not the noise init's key itself
    redraw = jax.jit(functools.partial(losses.redraw_targets, config=config))
    return lambda iteration: (params, redraw(
        targets, key=jax.random.fold_in(key, iteration // options.progress_every)))


def _stylize_scale(content, styles, weights, options, *, init_image, style_masks, content_mask,
                   callback, report_at, resume, scale, style_targets=None) -> StylizeResult:
    start = time.perf_counter()
    problem = prepare(content, styles, weights, options, init_image, style_masks, content_mask,
                      style_targets)
    jax.block_until_ready(problem.targets)
    targets_seconds = time.perf_counter() - start

    def wrap(p: Progress) -> StylizeProgress:
        return StylizeProgress(
            p.iteration, p.total_iterations, p.value, p.components, p.evaluations, p.elapsed,
            p.x, p.state, p.history, problem.to_image, scale,
        )

    args = (weights.params, problem.targets)
    config = optimizer_config(options, weights.preprocessing, problem.pixel_units)
    x0, state, start_iteration, history = problem.x0, None, 0, None
    if resume is not None:
        if np.shape(resume.x) != x0.shape:
            raise JaxstyleError(f"resume: image of shape {np.shape(resume.x)}, run has {x0.shape}")
        like = state_like(problem.loss_fn, problem.static, x0, args, config,
                          options.progress_every)
        state = restore_state(jax.tree_util.tree_leaves(resume.state), like)
        x0, start_iteration, history = jnp.asarray(resume.x), resume.iteration, resume.history
    try:
        result = minimize(
            problem.loss_fn,
            problem.static,
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
            memory_limit=memory_limit_bytes(options),
            chunk_args=redrawn_args(args, options),
        )
    except OptimizationError as exc:
        raise OptimizationError(str(exc), last_good=wrap(exc.last_good)) from None
    final = {"total": float(result.state.opt.value)}
    final.update({k: float(v) for k, v in result.state.opt.aux.items()})
    return StylizeResult(
        image=problem.to_image(_pick_output(result, options)),
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


def stylize(
    content: jax.Array,
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions | None = None,
    *,
    init_image: jax.Array | None = None,
    style_masks: Sequence[jax.Array | None] | None = None,
    content_mask: jax.Array | None = None,
    callback: Callable[[StylizeProgress], None] | None = None,
    report_at: Callable[[int], bool] | None = None,
    resume: RunState | None = None,
) -> StylizeResult:
    """Repaints `content` in the style of `styles` (Gatys et al. 2015, neural-style's objective).

    Has no side effects: it reads its arguments and returns; files are the caller's business.

    Args:
      content: float [H, W, 3] RGB in [0, 1]; resized so its longest side is ``options.size``.
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1], resized to ``options.style_scale``
        (or their own ``options.style_scales``) times the output's longest side.
      weights: VGG weights from `jaxstyle.load_weights` or `jaxstyle.random_weights`.
      options: hyper-parameters; `StyleOptions()` by default.
      init_image: start from this image instead of ``options.init``.
      style_masks: one mask image per style (float [H, W] or [H, W, 3], any size; white = this
        style applies there), to paint different styles in different regions.
      content_mask: a mask image; the content loss counts only where it is white.
      callback: called with a `StylizeProgress` every ``options.progress_every`` iterations.
      report_at: iterations at which a chunk must also end and `callback` be called.
      resume: continue a single-scale run from this state (from `StylizeProgress.run_state` or
        a checkpoint); the inputs and options must be the run's own. The result is bit for bit
        that of the uninterrupted run on the same machine.

    Returns:
      A `StylizeResult` with the image, the loss history, evaluations and timings. With
      ``options.scales`` the history runs through all scales in order.

    Raises:
      JaxstyleError: invalid inputs or a `resume` state that does not fit;
        `OptimizationError` if the loss becomes NaN or infinite (it carries the last good state).
    """
    options = options or StyleOptions()
    check_network(weights, options)
    common = dict(style_masks=style_masks, content_mask=content_mask, callback=callback,
                  report_at=report_at)
    if not options.scales:
        return _render(content, styles, weights, options, init_image=init_image,
                       resume=resume, scale=0, **common)
    if resume is not None:
        raise JaxstyleError("resume: multi-scale runs cannot be resumed yet")
    counts = options.scale_iterations or (options.iterations,)
    counts = counts * len(options.scales) if len(counts) == 1 else counts
    results = []
    for index, (size, iterations) in enumerate(zip(options.scales, counts)):
        step = options.replace(size=size, iterations=iterations, scales=None,
                               scale_iterations=None)
        previous = results[-1].image if results else init_image
        results.append(_render(content, styles, weights, step, init_image=previous,
                               resume=None, scale=index, **common))
    return _combine(results, results[-1].image, results[-1].losses, weights)
