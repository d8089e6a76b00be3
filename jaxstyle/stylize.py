"""`stylize` and `stylize_batch`: from RGB arrays to stylized RGB arrays, one driver for both.

A run is a plan (`jaxstyle.plan`): stages of scale x tile. The driver walks it: for each stage
it builds the problem (targets, masks, start image from the canvas), calls
`jaxstyle.optimize.minimize` and pastes the result into the canvas. Every control composes with
every other because none of them is a branch of the driver: scales only change the stage's size,
tiles its window, masks and colour modes the problem, a batch the number of canvases walked in
lockstep, and a resumed run starts at the stage its checkpoint recorded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxstyle import color, losses
from jaxstyle.checkpoint import RunState, restore_state
from jaxstyle.errors import JaxstyleError, OptimizationError, count
from jaxstyle.images import fit_longest_side, resize
from jaxstyle.optimize import Progress, minimize, state_like
from jaxstyle.options import OptionsError, StyleOptions
from jaxstyle.plan import Stage, output_shape, plan, total_iterations
from jaxstyle.preprocessing import Preprocessing
from jaxstyle.tiling import paste, tiled_style_target_list
from jaxstyle.vgg import depths_of, min_image_side, pools_before, validate_layers
from jaxstyle.weights import VGGWeights


@dataclass
class StylizeProgress:
    """Passed to `stylize`'s callback after each chunk of iterations.

    Attributes:
      iteration: iterations of the whole run done (through all stages).
      total_iterations: iterations of the whole run.
      stage: the stage running (`jaxstyle.plan.Stage`: its scale, tile, window, ...).
      value: this stage's total loss now.
      components: its loss components (``content``, ``style``, ``tv``, ``style/<layer>``).
      evaluations: loss-and-gradient evaluations of this stage so far.
      elapsed: seconds since this stage's optimization started (compilation included).
      x: the stage's variable (model-space image [h, w, 3], or luminance [h, w, 1]).
      state: the optimizer state that goes with `x`.
      history: the loss after each iteration of the whole run so far, by component.
      canvas: float32 [H, W, 3] RGB, the scale's picture as it was when the stage started.
      picture: returns the whole current picture (the stage's `x` pasted into `canvas`).
    """

    iteration: int
    total_iterations: int
    stage: Stage
    value: float
    components: dict[str, float]
    evaluations: int
    elapsed: float
    x: jax.Array
    state: object
    history: dict[str, list[float]]
    canvas: np.ndarray
    picture: Callable[[], np.ndarray]

    @property
    def scale(self) -> int:
        return self.stage.scale

    @property
    def tile(self) -> int:
        return self.stage.tile

    @property
    def tiles(self) -> int:
        return self.stage.tiles

    def run_state(self) -> RunState:
        """Everything needed to continue the run from here (see `stylize`'s `resume`)."""
        return RunState(self.iteration, np.asarray(self.x),
                        jax.tree_util.tree_map(np.asarray, self.state),
                        {k: list(v) for k, v in self.history.items()},
                        stage=self.stage.index, canvas=np.asarray(self.canvas))

    def image(self) -> np.ndarray:
        """The current picture as float32 [H, W, 3] RGB in [0, 1]."""
        return self.picture()


@dataclass
class StylizeResult:
    """What `stylize` returns.

    Attributes:
      image: float32 [H, W, 3] RGB in [0, 1].
      history: the loss after each iteration, by component (``total``, ``content``, ...),
        through all stages in order.
      losses: the final loss components (the mean over the last scale's tiles when tiled).
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


def _check_size(shape: tuple[int, ...], layers: Sequence[str], what: str,
                fix: Callable[[int], str] = lambda need: "") -> None:
    need = min_image_side(layers)
    if min(shape[:2]) < need:
        raise JaxstyleError(
            f"{what} of {shape[1]}x{shape[0]} px is too small for the network: its deepest "
            f"layer used ({max(layers, key=pools_before)}) needs at least {need} px on each side"
            f"{fix(need)}"
        )


def _smallest_size(content_shape: tuple[int, ...], need: int) -> int:
    """The smallest longest side at which the content's shorter side reaches `need` px."""
    size = need
    while min(output_shape(content_shape, size)) < need:
        size += 1
    return size


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


def style_sizes(output_hw: tuple[int, int], style_shapes: Sequence[tuple[int, ...]],
                options: StyleOptions) -> list[tuple[int, int]]:
    """(H, W) each style image is resized to for an output of `output_hw`: longest side
    ``style_scale`` (or its own ``style_scales`` entry) times the output's."""
    scales = options.style_scales or (options.style_scale,) * len(style_shapes)
    if len(scales) != len(style_shapes):
        raise JaxstyleError(
            f"style_scales: {count(len(scales), 'scale')} for "
            f"{count(len(style_shapes), 'style image')}"
        )
    return [fit_longest_side(shape, max(1, round(scale * max(output_hw))))
            for shape, scale in zip(style_shapes, scales)]


def check_inputs(
    content_shape: tuple[int, ...], style_shapes: Sequence[tuple[int, ...]], options: StyleOptions
) -> tuple[Stage, ...]:
    """Checks image counts and sizes against the options before any expensive work.

    Args:
      content_shape: the content image's shape [H, W, 3].
      style_shapes: each style image's shape.
      options: the run's options.

    Returns:
      The run's plan (`jaxstyle.plan.plan`).

    Raises:
      JaxstyleError: no style, blend weights that do not match, or a size (of a tile, a scale
        or a style image) too small for the deepest layer used.
    """
    if not style_shapes:
        raise JaxstyleError("at least one style image is needed")
    blend = options.style_blend_weights
    if blend is not None and len(blend) != len(style_shapes):
        raise JaxstyleError(
            f"style_blend_weights: {count(len(blend), 'weight')} for "
            f"{count(len(style_shapes), 'style image')}"
        )
    config = options.loss_config()
    stages = plan(content_shape, options)
    flag = "--scales" if options.scales else "--size"
    for stage in stages:
        _check_size(stage.size, config.layers, f"{flag}: the output",
                    lambda need: f"; use {flag} {_smallest_size(content_shape, need)} or more")
        _check_size(stage.window[2:], config.layers, f"--tile-size: tile {stage.tile + 1}",
                    lambda need: f"; use --tile-size {max(32, need)} or more")
        for i, hw in enumerate(style_sizes(stage.size, style_shapes, options)):
            _check_size(hw, config.style_layers, f"--style-scale: style image {i + 1}",
                        lambda need: "; use a larger --style-scale")
    return stages


class Problem(NamedTuple):
    """One stage's optimization, and how its variable becomes a picture.

    Attributes:
      loss_fn: ``(x, params, targets, loss_static) -> (total, components)``, module-level.
      loss_static: its hashable last argument.
      x0: the starting variable: the model-space image [h, w, 3], or the luminance [h, w, 1] in
        [0, 1] when only luminance is optimized.
      targets: the objective's `jaxstyle.losses.Targets`.
      to_rgb: the variable -> float32 [h, w, 3] RGB in [0, 1].
      pixel_units: whether the variable is in [0, 1] pixel units (else the network's space).
    """

    loss_fn: Callable
    loss_static: object
    x0: jax.Array
    targets: losses.Targets
    to_rgb: Callable[[jax.Array], np.ndarray]
    pixel_units: bool


def luminance_objective(y: jax.Array, params: dict, targets: losses.Targets, static) -> tuple:
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


class Scale(NamedTuple):
    """One image's inputs at one scale of the plan, shared by the scale's tiles.

    Attributes:
      content_rgb: float32 [H, W, 3] RGB, the content at the scale's size.
      content_in: what the network sees of it (grey for luminance-only transfer).
      styles: the model-space style images at this scale (recoloured if asked).
      style: `jaxstyle.losses.Targets.style` of the whole style images at this scale.
      style_masks: float32 [H, W] per style (None: everywhere), or None for no regions.
      content_mask: float32 [H, W], or None.
      previous: ``((warped, weights), ...)`` at the scale's size, model space (video), or None.
    """

    content_rgb: jax.Array
    content_in: jax.Array
    styles: list
    style: tuple
    style_masks: list | None
    content_mask: jax.Array | None
    previous: tuple | None = None


def prepare_scale(
    content: jax.Array,
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions,
    stage: Stage,
    style_masks: Sequence[jax.Array | None] | None = None,
    content_mask: jax.Array | None = None,
    style: tuple | None = None,
    previous: Sequence[tuple[jax.Array, jax.Array]] | None = None,
) -> Scale:
    """Resizes and recolours the inputs for `stage`'s scale and computes the style targets.

    Args:
      content: float [H, W, 3] RGB in [0, 1].
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1].
      weights: the network.
      options: the run's options.
      stage: any stage of the scale (its ``size`` and ``tiles`` matter).
      style_masks: one mask per style (any size, resized to the scale; white = this style
        applies there; None entries apply everywhere), or None.
      content_mask: a mask; the content loss counts only where it is white.
      style: `Scale.style` of another content image at the same scale, reused (valid when the
        style targets do not depend on the content: no colour matching, no luminance-only).
      previous: for video, ``(warped, weights)`` pairs: earlier stylized frames warped to this
        one, float [H, W, 3] RGB in [0, 1], with consistency weights float [H, W] in [0, 1].

    Raises:
      JaxstyleError: masks that do not match the styles or cover nothing.
    """
    if style_masks is not None and len(style_masks) != len(styles):
        raise JaxstyleError(f"style masks: {count(len(style_masks), 'mask')} for "
                            f"{count(len(styles), 'style image')}")
    config, pre = options.loss_config(), weights.preprocessing
    content_rgb = resize(content, *stage.size)
    style_rgbs = [resize(s, *hw) for s, hw in
                  zip(styles, style_sizes(stage.size, [s.shape for s in styles], options))]
    if options.match_style_colors:
        style_rgbs = [color.match_colors(s, content_rgb) for s in style_rgbs]
    content_in = content_rgb
    if options.original_colors == "luminance":
        content_y = color.luminance(content_rgb)
        content_in = color.gray_rgb(content_y)
        style_rgbs = [color.gray_rgb(color.match_luminance(color.luminance(s), content_y))
                      for s in style_rgbs]
    model_styles = [pre.to_model(s) for s in style_rgbs]
    regions = style_masks is not None
    if style is None and stage.tiles > 1:
        style = tiled_style_target_list(weights.params, model_styles, config,
                                        options.style_blend_weights, regions, options.tile_size,
                                        options.tile_overlap)
    elif style is None:
        style = losses.style_target_list(weights.params, model_styles, config,
                                         options.style_blend_weights, regions)
    masks = None if style_masks is None else [
        None if m is None else _mask(m, stage.size, f"style mask {i + 1}")
        for i, m in enumerate(style_masks)]
    cmask = None if content_mask is None else _mask(content_mask, stage.size, "content mask")
    if previous:
        grey = options.original_colors == "luminance"
        previous = tuple(
            (pre.to_model(color.gray_rgb(color.luminance(frame)) if grey else frame),
             jnp.clip(resize(jnp.asarray(c, jnp.float32)[..., None], *stage.size)[..., 0], 0, 1))
            for frame, c in ((resize(jnp.asarray(f, jnp.float32), *stage.size), c)
                             for f, c in previous))
    return Scale(content_rgb, content_in, model_styles, style, masks, cmask, previous or None)


def stage_problem(scale: Scale, canvas: np.ndarray, stage: Stage, weights: VGGWeights,
                  options: StyleOptions) -> Problem:
    """The optimization of one stage: `scale`'s inputs cut to the stage's window, starting from
    the canvas float32 [H, W, 3] RGB there."""
    top, left, h, w = stage.window
    window = (slice(top, top + h), slice(left, left + w))
    config, pre = options.loss_config(), weights.preprocessing
    masks = None if scale.style_masks is None else [
        None if m is None else m[window] for m in scale.style_masks]
    cmask = None if scale.content_mask is None else scale.content_mask[window]
    try:
        targets = losses.region_targets(
            weights.params, pre.to_model(scale.content_in[window]), scale.styles, config, masks,
            cmask, options.style_blend_weights, scale.style)
    except ValueError as exc:
        raise JaxstyleError(str(exc)) from None
    if scale.previous:
        targets = targets._replace(previous=tuple((w[window], c[window])
                                                  for w, c in scale.previous))
    start = jnp.asarray(canvas[window])
    if options.original_colors == "luminance":
        chroma = color.rgb_to_ycbcr(scale.content_rgb[window])[..., 1:]

        def with_content_chroma(y):
            ycbcr = jnp.concatenate([jnp.clip(y, 0.0, 1.0), chroma], axis=-1)
            return np.clip(np.asarray(color.ycbcr_to_rgb(ycbcr), np.float32), 0.0, 1.0)

        return Problem(luminance_objective, (config, pre), color.luminance(start), targets,
                       with_content_chroma, pixel_units=True)
    return Problem(losses.objective, config, pre.to_model(start), targets,
                   functools.partial(to_rgb, preprocessing=pre), pixel_units=False)


def prepare(content: jax.Array, styles: Sequence[jax.Array], weights: VGGWeights,
            options: StyleOptions, key: jax.Array | None = None) -> Problem:
    """The `Problem` of a run's first stage (all of a single-scale, untiled run): to inspect
    or optimize the objective yourself. Inputs as for `stylize`."""
    stage = check_inputs(jnp.shape(content), [jnp.shape(s) for s in styles], options)[0]
    scale = prepare_scale(_check_image(content, "content"),
                          [_check_image(s, f"styles[{i}]") for i, s in enumerate(styles)],
                          weights, options, stage)
    key = jax.random.key(options.seed) if key is None else key
    return stage_problem(scale, start_canvas(scale.content_rgb, options, key), stage, weights,
                         options)


def start_canvas(content_rgb: jax.Array, options: StyleOptions, key: jax.Array,
                 init_image: jax.Array | None = None) -> np.ndarray:
    """The first scale's starting picture float32 [H, W, 3]: `init_image` resized, seeded noise
    or the content itself (``options.init``)."""
    shape = content_rgb.shape[:2]
    if init_image is not None:
        return np.asarray(resize(_check_image(init_image, "init_image"), *shape))
    if options.init == "noise":
        # Uniform RGB noise; neural-style's N(0, 1e-3) in Caffe space is a flat grey image and
        # gives L-BFGS nothing to work from on random weights.
        return np.asarray(jax.random.uniform(key, (*shape, 3)))
    return np.asarray(content_rgb)


def finish(canvas: np.ndarray, scale: Scale, options: StyleOptions) -> np.ndarray:
    """The output from the last scale's canvas: with the content's chroma when
    ``options.original_colors`` is 'swap' (neural-style's -original_colors)."""
    if options.original_colors == "swap":
        return np.asarray(color.swap_chroma(jnp.asarray(canvas), scale.content_rgb), np.float32)
    return np.asarray(canvas, np.float32)


def memory_limit_bytes(options: StyleOptions) -> int | None:
    """``options.memory_limit_gb`` in bytes (None: what the device has free; 0: no check)."""
    if options.memory_limit_gb is None:
        return None
    return int(options.memory_limit_gb * 2**30)


def _pick_output(state, x, options: StyleOptions) -> jax.Array:
    if options.keep_best:
        return state.best_x
    if options.ema_decay:
        return state.ema
    return x


def redrawn_args(args: tuple, options: StyleOptions, key: jax.Array,
                 place: Callable = lambda t: t) -> Callable[[int], tuple] | None:
    """For a style loss with random parts (sliced Wasserstein's directions): the optimizer's
    arguments for the chunk starting at an iteration, with the `Targets` among them (the one at
    index 1) redrawn every ``options.progress_every`` iterations from `key` and that period, so
    an interrupted and resumed run draws what the uninterrupted one drew. None otherwise."""
    config = options.loss_config()
    if not config.style_loss.redraws:
        return None
    redraw = jax.jit(functools.partial(losses.redraw_targets, config=config))
    return lambda iteration: (args[0], place(redraw(
        args[1], key=jax.random.fold_in(key, iteration // options.progress_every))), *args[2:])


def batched_objective(x, params, shared: losses.Targets, per_image: losses.Targets, static):
    """One image's loss with its targets split into a shared part and a per-image part (the
    fields that are not None); ``static`` is ``(loss_fn, loss_static)`` of the single-image
    problem. `jax.vmap` maps x and `per_image` over the batch."""
    loss_fn, loss_static = static
    targets = losses.Targets(*[s if p is None else p for s, p in zip(shared, per_image)])
    return loss_fn(x, params, targets, loss_static)


def _stack(trees: Sequence) -> object:
    return jax.tree_util.tree_map(lambda *t: jnp.stack(t), *trees)


class _Walk(NamedTuple):
    """What the driver needs besides the images: fixed for the whole run."""

    weights: VGGWeights
    options: StyleOptions
    key: jax.Array
    callback: Callable | None
    report_at: Callable[[int], bool] | None
    devices: Sequence[jax.Device] | None  # None: one image, not batched
    style_cache: dict | None = None  # scale -> Targets.style, kept between calls (video)
    previous: Sequence | None = None  # (warped, weights) pairs of earlier frames (video)


def _progress(p: Progress, stage: Stage, stages: tuple[Stage, ...], history: dict | None,
              canvas: np.ndarray, problem: Problem, overlap: int) -> StylizeProgress:
    """`minimize`'s progress as the whole run's (history None: a batch, whose per-image
    histories are not reported)."""
    def picture() -> np.ndarray:
        x = p.x if history is not None else p.x[0]
        return paste(canvas, problem.to_rgb(x), stage.window, overlap)

    whole = {} if history is None else {k: history.get(k, []) + v for k, v in p.history.items()}
    return StylizeProgress(stage.offset + p.iteration, total_iterations(stages), stage, p.value,
                           p.components, p.evaluations, p.elapsed, p.x, p.state, whole, canvas,
                           picture)


def _run_stage(walk: _Walk, problems: list[Problem], stage: Stage, stages: tuple[Stage, ...],
               canvas: np.ndarray, history: dict | None, resume: RunState | None,
               share_style: bool):
    """Minimizes one stage's problems: one image (`walk.devices` None), or a batch sharded over
    `walk.devices` whose style targets are shared or (colour-matched styles) per image.

    Returns ``(images, finals, result)``: each image's stage result as RGB float32 [h, w, 3],
    its final loss components, and `minimize`'s result.
    """
    options, weights = walk.options, walk.weights
    first = problems[0]
    config = options.optimizer_config(weights.preprocessing.model_range(), first.pixel_units)
    redraw_key = jax.random.fold_in(jax.random.fold_in(walk.key, 1), stage.index)
    batched = walk.devices is not None
    if not batched:
        loss_fn, loss_static, x0 = first.loss_fn, first.loss_static, first.x0
        args, batch_axes, place = (weights.params, first.targets), None, (lambda t: t)
    else:
        mesh = Mesh(np.array(walk.devices), ("batch",))
        by_image = NamedSharding(mesh, PartitionSpec("batch"))
        everywhere = NamedSharding(mesh, PartitionSpec())
        padded = problems + [problems[-1]] * (-len(problems) % len(walk.devices))
        shared = first.targets._replace(content=None,
                                        style=first.targets.style if share_style else None)
        per_style = None if share_style else _stack([p.targets.style for p in padded])
        per_image = losses.Targets(_stack([p.targets.content for p in padded]), per_style)
        loss_fn, loss_static = batched_objective, (first.loss_fn, first.loss_static)
        x0 = jax.device_put(jnp.stack([p.x0 for p in padded]), by_image)
        args = (jax.device_put(weights.params, everywhere), jax.device_put(shared, everywhere),
                jax.device_put(per_image, by_image))
        batch_axes = (None, None, 0)
        place = functools.partial(jax.device_put, device=everywhere)
    state, start = None, 0
    if resume is not None:
        if np.shape(resume.x) != x0.shape:
            raise JaxstyleError(f"resume: image of shape {np.shape(resume.x)}, run has {x0.shape}")
        like = state_like(loss_fn, loss_static, x0, args, config, options.progress_every)
        state = restore_state(jax.tree_util.tree_leaves(resume.state), like)
        x0, start = jnp.asarray(resume.x), resume.iteration - stage.offset
    # Per-image style targets of a batch (colour-matched styles) keep their first draw.
    chunk_args = redrawn_args(args, options, redraw_key, place) if share_style else None

    def report(p: Progress) -> None:
        walk.callback(_progress(p, stage, stages, history, canvas, first, options.tile_overlap))

    try:
        result = minimize(
            loss_fn, loss_static, x0, args, config, stage.iterations,
            chunk=options.progress_every, batch_axes=batch_axes,
            stops=None if walk.report_at is None else (lambda i: walk.report_at(stage.offset + i)),
            callback=report if walk.callback else None, state=state, start_iteration=start,
            memory_limit=memory_limit_bytes(options), chunk_args=chunk_args,
        )
    except OptimizationError as exc:
        last = exc.last_good and _progress(exc.last_good, stage, stages, history, canvas, first,
                                           options.tile_overlap)
        raise OptimizationError(str(exc), last_good=last) from None
    chosen = _pick_output(result.state, result.x, options)
    opt = result.state.opt
    if not batched:
        return ([first.to_rgb(chosen)],
                [{"total": float(opt.value), **{k: float(v) for k, v in opt.aux.items()}}], result)
    return ([p.to_rgb(chosen[i]) for i, p in enumerate(problems)],
            [{"total": float(opt.value[i]), **{k: float(v[i]) for k, v in opt.aux.items()}}
             for i in range(len(problems))], result)


def _walk_plan(walk: _Walk, contents: list[jax.Array], styles: list[jax.Array],
               stages: tuple[Stage, ...], init_images: list, style_masks, content_mask,
               resume: RunState | None) -> list[StylizeResult]:
    """The driver: walks `stages` for the content images (one, or a batch in lockstep)."""
    options, weights = walk.options, walk.weights
    share_style = not (options.match_style_colors or options.original_colors == "luminance")
    begin = 0 if resume is None else resume.stage
    if not 0 <= begin < len(stages) or resume is not None and not (
            0 <= resume.iteration - stages[begin].offset <= stages[begin].iterations):
        raise JaxstyleError(f"resume: stage {begin} at iteration {resume.iteration} is not part "
                            f"of this run's plan of {len(stages)} stages")
    count = len(contents)
    # The whole run's loss history per image; a resumed run's comes from its checkpoint.
    histories = ([{} for _ in contents] if resume is None
                 else [{k: list(v) for k, v in resume.history.items()}])
    canvases: list[np.ndarray] = []
    scales: list[Scale] = []
    per_stage: list[list[dict]] = []
    totals = {"targets": 0.0, "compile": 0.0, "optimize": 0.0, "total": 0.0}
    evaluations = [0] * count
    for stage in stages[begin:]:
        started = time.perf_counter()
        if not scales or stage.tile == 0 or stage.index == begin:
            cache = walk.style_cache if share_style and walk.style_cache is not None else {}
            style = cache.get(stage.size)
            scales = []
            for content, init in zip(contents, init_images):
                scales.append(prepare_scale(content, styles, weights, options, stage,
                                            style_masks, content_mask,
                                            style if share_style else None, walk.previous))
                style = cache[stage.size] = scales[-1].style
            if stage.index == begin and resume is not None and resume.canvas is not None:
                canvases = [np.asarray(resume.canvas, np.float32)]
            elif stage.index == begin and resume is not None and begin > 0:
                raise JaxstyleError("resume: the checkpoint has no canvas for stage "
                                    f"{begin + 1} (it was written by an older version)")
            elif stage.tile == 0 and stage.scale > 0 and canvases:
                canvases = [np.asarray(resize(jnp.asarray(c), *stage.size)) for c in canvases]
            elif stage.tile == 0 or not canvases:
                canvases = [start_canvas(s.content_rgb, options, walk.key, init)
                            for s, init in zip(scales, init_images)]
            if stage.tile == 0:
                per_stage = []
        problems = [stage_problem(s, c, stage, weights, options) for s, c in zip(scales, canvases)]
        jax.block_until_ready([p.targets for p in problems])
        totals["targets"] += time.perf_counter() - started
        images, finals, result = _run_stage(
            walk, problems, stage, stages, canvases[0],
            histories[0] if walk.devices is None else None,
            resume if stage.index == begin else None, share_style)
        if stage.tiles == 1:
            canvases = images
        else:
            canvases = [paste(c, image, stage.window, options.tile_overlap)
                        for c, image in zip(canvases, images)]
        per_stage.append(finals)
        for i in range(count):
            for key, values in result.history.items():
                steps = values if walk.devices is None else [step[i] for step in values]
                histories[i].setdefault(key, []).extend(steps)
            evaluations[i] += (result.evaluations if walk.devices is None
                               else int(result.state.opt.num_fun_eval[i]))
        totals["compile"] += result.compile_seconds
        totals["optimize"] += result.run_seconds
        totals["total"] += time.perf_counter() - started
    return [StylizeResult(
        image=finish(canvases[i], scales[i], options),
        history=histories[i],
        losses={k: float(np.mean([f[i][k] for f in per_stage])) for k in per_stage[-1][i]},
        evaluations=evaluations[i],
        timings=dict(totals),
        weights_source=weights.source,
        devices=1 if walk.devices is None else len(walk.devices),
    ) for i in range(count)]


def stylize(
    content: jax.Array,
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions | None = None,
    *,
    key: jax.Array | None = None,
    init_image: jax.Array | None = None,
    style_masks: Sequence[jax.Array | None] | None = None,
    content_mask: jax.Array | None = None,
    callback: Callable[[StylizeProgress], None] | None = None,
    report_at: Callable[[int], bool] | None = None,
    resume: RunState | None = None,
    previous: Sequence[tuple[jax.Array, jax.Array]] | None = None,
    style_cache: dict | None = None,
) -> StylizeResult:
    """Repaints `content` in the style of `styles` (Gatys et al. 2015, neural-style's objective).

    Has no side effects: it reads its arguments and returns; files are the caller's business.
    Scales, tiles, masks, colour modes and resuming all combine (`jaxstyle.plan`).

    Args:
      content: float [H, W, 3] RGB in [0, 1]; resized so its longest side is ``options.size``.
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1], resized to ``options.style_scale``
        (or their own ``options.style_scales``) times the output's longest side.
      weights: VGG weights from `jaxstyle.load_weights` or `jaxstyle.random_weights`.
      options: hyper-parameters; `StyleOptions()` by default.
      key: where randomness enters (the noise start, sliced Wasserstein's redraws); default
        ``jax.random.key(options.seed)``, which is what the CLI's ``--seed`` makes.
      init_image: start from this image instead of ``options.init``.
      style_masks: one mask image per style (float [H, W] or [H, W, 3], any size; white = this
        style applies there), to paint different styles in different regions.
      content_mask: a mask image; the content loss counts only where it is white.
      callback: called with a `StylizeProgress` every ``options.progress_every`` iterations
        and at the end of every stage.
      report_at: iterations of the whole run at which a chunk must also end and `callback` be
        called.
      resume: continue a run from this state (from `StylizeProgress.run_state` or a
        checkpoint), at any stage of any plan; the inputs and options must be the run's own. The
        result is bit for bit that of the uninterrupted run on the same machine.
      previous: for video (`jaxstyle.video`): ``(warped, weights)`` pairs, earlier stylized
        frames warped to this one (float [H, W, 3] RGB in [0, 1], resized to the output) and
        their per-pixel consistency weights float [H, W] in [0, 1]; adds the temporal loss
        weighted by ``options.temporal_weight``.
      style_cache: a dict kept between calls with the same styles and options (the frames of a
        video): the style targets are computed once and reused from it.

    Returns:
      A `StylizeResult` with the image, the loss history through all stages, evaluations and
      timings.

    Raises:
      JaxstyleError: invalid inputs or a `resume` state that does not fit;
        `OptimizationError` if the loss becomes NaN or infinite (it carries the last good state).
    """
    options = options or StyleOptions()
    check_network(weights, options)
    content = _check_image(content, "content")
    styles = [_check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]
    stages = check_inputs(content.shape, [s.shape for s in styles], options)
    walk = _Walk(weights, options, jax.random.key(options.seed) if key is None else key,
                 callback, report_at, None, style_cache, previous)
    return _walk_plan(walk, [content], styles, stages, [init_image], style_masks, content_mask,
                      resume)[0]


def stylize_batch(
    contents: Sequence[jax.Array],
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions | None = None,
    *,
    key: jax.Array | None = None,
    devices: Sequence[jax.Device] | None = None,
    callback: Callable[[StylizeProgress], None] | None = None,
) -> list[StylizeResult]:
    """Stylizes several content images with the same styles and options, batched and sharded.

    Images whose plans match (the same output size at every scale) run together: the
    single-image optimizer step is `jax.vmap`-ped, so every image keeps its own optimizer state
    and ends where a run of its own would, and the batch axis is sharded across `devices`. Each
    batch walks the plan's stages (scales, tiles) in lockstep.

    Args:
      contents: float [H_i, W_i, 3] RGB images in [0, 1].
      styles: the style images, as for `stylize`.
      weights: the network.
      options: as for `stylize`.
      key: as for `stylize`.
      devices: devices to shard each batch over (default: all local devices). A batch is padded
        with copies of its last image to a multiple of their number.
      callback: called with a `StylizeProgress` (its ``value`` summed over the batch, its
        ``history`` empty) after each chunk.

    Returns:
      One `StylizeResult` per content image, in order; each equals what `stylize` gives for that
      image alone (up to floating-point reassociation in batched kernels).

    Raises:
      JaxstyleError: invalid inputs or options.
    """
    options = options or StyleOptions()
    if not contents:
        raise JaxstyleError("batch: no content images")
    check_network(weights, options)
    contents = [_check_image(c, f"contents[{i}]") for i, c in enumerate(contents)]
    styles = [_check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]
    walk = _Walk(weights, options, jax.random.key(options.seed) if key is None else key,
                 callback, None, list(devices or jax.local_devices()))
    groups: dict[tuple, list[int]] = {}
    plans = {}
    for index, content in enumerate(contents):
        stages = check_inputs(content.shape, [s.shape for s in styles], options)
        signature = tuple(stage.size for stage in stages)
        groups.setdefault(signature, []).append(index)
        plans[signature] = stages
    results: list[StylizeResult | None] = [None] * len(contents)
    for signature, indices in groups.items():
        try:
            done = _walk_plan(walk, [contents[i] for i in indices], styles, plans[signature],
                              [None] * len(indices), None, None, None)
        except OptimizationError as exc:
            size = signature[-1]
            raise OptimizationError(f"batch of {len(indices)} images at {size[1]}x{size[0]}: "
                                    f"{exc}") from None
        for index, result in zip(indices, done):
            results[index] = result
    return results
