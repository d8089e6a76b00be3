"""A stage's problem: the inputs resized and recoloured for a scale, the targets, the start.

`prepare_scale` does what a scale of the plan (`jaxstyle.stages`) shares between its tiles;
`stage_problem` cuts it to one stage's window and adds the start image from the canvas.
The inputs are checked first (`jaxstyle.checks`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import color, losses, neighbour_layers, neighbours, pyramid
from jaxstyle.checks import check_image, check_inputs, style_sizes
from jaxstyle.choices import NEURAL_NEIGHBOUR
from jaxstyle.errors import JaxstyleError
from jaxstyle.option_fields import OptionsError
from jaxstyle.options import StyleOptions
from jaxstyle.preprocessing import Preprocessing
from jaxstyle.resampling import resize
from jaxstyle.stages import Stage
from jaxstyle.targets import blend_shares, region_targets, style_target_list
from jaxstyle.tiling import tiled_style_target_list
from jaxstyle.vgg import VGGWeights, transform_kernels


def to_rgb(x: jax.Array, preprocessing: Preprocessing) -> np.ndarray:
    """Model-space float [H, W, 3] -> float32 RGB in [0, 1], clipped."""
    return np.clip(np.asarray(preprocessing.from_model(x), np.float32), 0.0, 1.0)


class Problem(NamedTuple):
    """One stage's optimization, and how its variable becomes a picture.

    Attributes:
      loss_fn: ``(x, params, targets, loss_static) -> (total, components)``, module-level.
      loss_static: its hashable last argument, of the type `loss_fn` names: a
        `jaxstyle.losses.LossConfig` (`jaxstyle.losses.objective`), a `LuminanceStatic`
        (`luminance_objective`), a `jaxstyle.neighbours.NeighbourConfig`, or a
        `jaxstyle.pyramid.Banded` (any of them as a function of the pyramid's bands).
      x0: the starting variable: the model-space image [h, w, 3], or the luminance [h, w, 1] in
        [0, 1] when only luminance is optimized.
      targets: the objective's targets, a NamedTuple (`jaxstyle.losses.Targets`, or
        `jaxstyle.neighbours.NeighbourTargets`).
      to_rgb: the variable -> float32 [h, w, 3] RGB in [0, 1].
      pixel_units: whether the variable is in [0, 1] pixel units (else the network's space).
      image_shape: the image's shape [h, w, c]: x0's, unless x0 holds the bands of its
        Laplacian pyramid (``parametrization="pyramid"``, `jaxstyle.pyramid`).
      image_targets: the fields of `targets` that are the content image's own (a batch stacks
        them image by image, `jaxstyle.layouts`); the others are the styles', which the images
        of a batch share.
      redraw: ``(targets, key) -> targets`` with the objective's random part drawn afresh
        from `key` (the neural-neighbour last pass's subsamples, `neighbour_layers.draw`),
        what the images share only; None: the style loss says (`jaxstyle.stage_run`).
    """

    loss_fn: Callable
    loss_static: object
    x0: jax.Array
    targets: losses.Targets | neighbours.NeighbourTargets
    to_rgb: Callable[[jax.Array], np.ndarray]
    pixel_units: bool
    image_shape: tuple[int, ...] = ()
    image_targets: tuple[str, ...] = ()
    redraw: Callable | None = None


IMAGE_TARGETS = ("content", "style_masks", "content_mask", "previous", "style_reference")
"""The fields of `jaxstyle.losses.Targets` that are the content image's own."""

NEIGHBOUR_IMAGE_TARGETS = ("content_columns", "content", "style_masks", "content_mask",
                           "content_layer_masks")
"""The fields of `jaxstyle.neighbours.NeighbourTargets` that are the content image's own."""
LAYER_IMAGE_TARGETS = ("content", "content_layer_masks")
"""The fields of `jaxstyle.neighbour_layers.LayerTargets` that are the content image's own."""


class LuminanceStatic(NamedTuple):
    """`luminance_objective`'s static argument.

    Attributes:
      objective: the objective of the grey image, `jaxstyle.losses.objective` or
        `jaxstyle.neighbours.objective`.
      config: its static argument (`jaxstyle.losses.LossConfig`, or
        `jaxstyle.neighbours.NeighbourConfig`).
      preprocessing: the network's, which maps the grey image into its input space.
    """

    objective: Callable
    config: losses.LossConfig | neighbours.NeighbourConfig
    preprocessing: Preprocessing


def luminance_objective(y: jax.Array, params: dict, targets, static: LuminanceStatic) -> tuple:
    """``static.objective`` of the grey image whose luminance is y [H, W, 1]: Gatys et al.
    2017's luminance-only transfer."""
    return static.objective(static.preprocessing.to_model(color.gray_rgb(y)), params, targets,
                            static.config)


def objective_of(options: StyleOptions, weights: VGGWeights, final: bool = False
                 ) -> tuple[Callable, object]:
    """``(loss_fn, loss_static)`` of the run's objective of its variable: `losses.objective`,
    or the neural-neighbour one (`neighbours.objective`, in its `final` pass
    `neighbour_layers.objective`) with its preset, of the luminance with
    ``original_colors="luminance"`` (`luminance_objective`), else of the image."""
    pre = weights.preprocessing
    if options.preset == NEURAL_NEIGHBOUR:
        loss_fn = neighbour_layers.objective if final else neighbours.objective
        loss_static = neighbour_config(options, weights)
    else:
        loss_fn, loss_static = losses.objective, options.loss_config(
            model_range=pre.model_range())
    if options.objective.original_colors == "luminance":
        return luminance_objective, LuminanceStatic(loss_fn, loss_static, pre)
    return loss_fn, loss_static


def _resized_mask(mask: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """A checked mask float32 [H, W] (`check_mask`) at `shape`."""
    return jnp.clip(resize(mask[..., None], *shape)[..., 0], 0.0, 1.0)


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
      style_rgbs: the style images at this scale, float32 [H_i, W_i, 3] RGB (recoloured if
        asked), for ``original_colors="oklab"``.
    """

    content_rgb: jax.Array
    content_in: jax.Array
    styles: list
    style: tuple
    style_masks: list | None
    content_mask: jax.Array | None
    previous: tuple | None = None
    style_rgbs: tuple = ()


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
    key: jax.Array | None = None,
) -> Scale:
    """Resizes and recolours the inputs for `stage`'s scale and computes the style targets.

    Args:
      content: float [H, W, 3] RGB in [0, 1].
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1].
      weights: the network.
      options: the run's options.
      stage: any stage of the scale (its ``size`` and ``tiles`` matter).
      style_masks: one mask float32 [H, W] per style (`check_masks`; any size, resized to the
        scale; white = this style applies there; None entries apply everywhere), or None.
      content_mask: a mask (`check_mask`); the content loss counts only where it is white.
      style: `Scale.style` of another content image at the same scale, reused (valid when the
        style targets do not depend on the content: no colour matching, no luminance-only).
      previous: for video, ``(warped, weights)`` pairs: earlier stylized frames warped to this
        one, float [H, W, 3] RGB in [0, 1], with consistency weights float [H, W] in [0, 1].
      key: the run's key (`jaxstyle.stylize`'s; default ``jax.random.key(options.seed)``), from
        which the neural-neighbour objective's style samples are drawn.
    """
    config, pre = options.loss_config(), weights.preprocessing
    content_rgb = resize(content, *stage.size)
    content_in, style_rgbs = _recoloured(content_rgb, styles, options, stage)
    model_styles = [pre.to_model(s) for s in style_rgbs]
    regions = style_masks is not None
    if options.preset == NEURAL_NEIGHBOUR and previous:
        raise OptionsError(f"previous: not with preset {NEURAL_NEIGHBOUR}: the temporal video "
                           "term does not compose with it yet", options=("preset",))
    if style is None:
        key = jax.random.key(options.seed) if key is None else key
        style = _style_targets(model_styles, weights, options, stage, config, regions, key)
    masks = None if style_masks is None else [
        None if m is None else _resized_mask(m, stage.size) for m in style_masks]
    cmask = None if content_mask is None else _resized_mask(content_mask, stage.size)
    return Scale(content_rgb, content_in, model_styles, style, masks, cmask,
                 _resized_previous(previous, options, pre, stage.size), tuple(style_rgbs))


def _recoloured(content_rgb: jax.Array, styles: Sequence[jax.Array], options: StyleOptions,
                stage: Stage) -> tuple[jax.Array, list]:
    """``(content_in, style_rgbs)``: what the network sees of the content at the scale (grey
    for luminance-only transfer) and the style images resized for `stage`'s output,
    recoloured as the options ask (colour-matched, or grey with the content's luminance)."""
    sizes = style_sizes(stage.size, [s.shape for s in styles], options, stage.coarse)
    style_rgbs = [resize(s, *hw) for s, hw in zip(styles, sizes)]
    if options.objective.match_style_colors:
        style_rgbs = [color.match_colors(s, content_rgb) for s in style_rgbs]
    content_in = content_rgb
    if options.objective.original_colors == "luminance":
        content_y = color.luminance(content_rgb)
        content_in = color.gray_rgb(content_y)
        style_rgbs = [color.gray_rgb(color.match_luminance(color.luminance(s), content_y))
                      for s in style_rgbs]
    return content_in, style_rgbs


def _style_targets(model_styles: list, weights: VGGWeights, options: StyleOptions, stage: Stage,
                   config, regions: bool, key: jax.Array) -> tuple:
    """`Scale.style` of the model-space style images at `stage`'s scale: the neural-neighbour
    objective's style samples, or the style targets (per tile of the scale when it is tiled)."""
    if layered(stage, len(model_styles), regions):
        return neighbour_layers.final_style(weights.params, model_styles[0],
                                            neighbour_config(options, weights),
                                            jax.random.fold_in(key, stage.scale))
    if options.preset == NEURAL_NEIGHBOUR:
        return neighbour_styles(model_styles, weights, options, stage.scale, regions, key)
    if stage.tiles > 1:
        return tiled_style_target_list(weights.params, model_styles, config,
                                       options.objective.style_blend_weights, regions,
                                       options.plan.tile_size, options.plan.tile_overlap)
    return style_target_list(weights.params, model_styles, config,
                             options.objective.style_blend_weights, regions)


def _resized_previous(previous, options: StyleOptions, pre: Preprocessing,
                      size: tuple[int, int]) -> tuple | None:
    """`Scale.previous`: the video's ``(warped, weights)`` pairs at `size`, the frames in model
    space (grey for luminance-only transfer), or None."""
    scaled = []
    for frame, weights in previous or ():
        frame = resize(jnp.asarray(frame, jnp.float32), *size)
        if options.objective.original_colors == "luminance":  # compared with the grey optimized
            frame = color.gray_rgb(color.luminance(frame))
        weights = resize(jnp.asarray(weights, jnp.float32)[..., None], *size)[..., 0]
        scaled.append((pre.to_model(frame), jnp.clip(weights, 0.0, 1.0)))
    return tuple(scaled) or None


def layered(stage: Stage, styles: int, regions: bool) -> bool:
    """Whether `stage` matches each layer on its own (`neighbour_layers`): the neural-neighbour
    route's last pass (`Stage.final`) with one style and no style masks. With several styles or
    masks that pass matches hypercolumns, as the scales before it (its per-layer matching takes
    one style: docs/guide/losses.md)."""
    return stage.final and styles == 1 and not regions


def neighbour_styles(model_styles: list, weights: VGGWeights, options: StyleOptions,
                     scale: int, regions: bool, key: jax.Array) -> tuple:
    """The neural-neighbour objective's style side at a scale (`NeighbourTargets.style`): one
    pool of every style's hypercolumns mixed by ``style_blend_weights`` (equal by default), or
    with `regions` one pool per style. Drawn from `key` folded with the scale (and the style's
    index), so a run, and a run resumed at any stage, draws the same samples every time."""
    key = jax.random.fold_in(key, scale)
    config = neighbour_config(options, weights)
    samples = neighbours.STYLE_SAMPLES  # read here, at each call: tests lower it
    if regions:
        return tuple(neighbours.style_hypercolumns(weights.params, [s], config,
                                                   jax.random.fold_in(key, i), samples)
                     for i, s in enumerate(model_styles))
    shares = None
    if len(model_styles) > 1:  # one style: all of its hypercolumns, whatever its weight
        shares = blend_shares(len(model_styles), options.objective.style_blend_weights)
    return (neighbours.style_hypercolumns(weights.params, model_styles, config, key, samples,
                                          shares),)


def neighbour_config(options: StyleOptions, weights: VGGWeights) -> neighbours.NeighbourConfig:
    """The neural-neighbour objective's static configuration for the network `weights` hold."""
    config = options.loss_config(model_range=weights.preprocessing.model_range())
    return neighbours.NeighbourConfig(config, neighbours.hypercolumn_layers(weights.params),
                                      rotations=options.objective.style_rotations)


def stage_problem(scale: Scale, canvas: np.ndarray, stage: Stage, weights: VGGWeights,
                  options: StyleOptions) -> Problem:
    """The optimization of one stage: `scale`'s inputs cut to the stage's window, starting from
    the canvas float32 [H, W, 3] RGB there."""
    top, left, h, w = stage.window
    window = (slice(top, top + h), slice(left, left + w))
    pre = weights.preprocessing
    start = jnp.asarray(canvas[window])
    final = layered(stage, len(scale.styles), scale.style_masks is not None)
    loss_fn, loss_static = objective_of(options, weights, final)
    targets = _stage_targets(scale, window, weights, options, final)
    if options.objective.original_colors == "luminance":
        chroma = color.rgb_to_ycbcr(scale.content_rgb[window])[..., 1:]

        def with_content_chroma(y):
            ycbcr = jnp.concatenate([jnp.clip(y, 0.0, 1.0), chroma], axis=-1)
            return np.clip(np.asarray(color.ycbcr_to_rgb(ycbcr), np.float32), 0.0, 1.0)

        problem = Problem(loss_fn, loss_static, start_variable(start, weights, options),
                          targets, with_content_chroma, pixel_units=True)
    else:
        problem = Problem(loss_fn, loss_static, start_variable(start, weights, options),
                          targets, functools.partial(to_rgb, preprocessing=pre),
                          pixel_units=False)
    own = NEIGHBOUR_IMAGE_TARGETS if options.preset == NEURAL_NEIGHBOUR else IMAGE_TARGETS
    problem = problem._replace(image_shape=tuple(problem.x0.shape), image_targets=own)
    if final:
        problem = problem._replace(image_targets=LAYER_IMAGE_TARGETS,
                                   redraw=_layer_redraw(weights, options))
    return in_bands(problem) if options.optimization.parametrization == "pyramid" else problem


def start_variable(start: jax.Array, weights: VGGWeights, options: StyleOptions) -> jax.Array:
    """The variable a stage starting from the RGB picture `start` float32 [h, w, 3] optimizes:
    its luminance [h, w, 1] with ``original_colors="luminance"``, else the picture in the
    network's space [h, w, 3]."""
    if options.objective.original_colors == "luminance":
        return color.luminance(start)
    return weights.preprocessing.to_model(start)


def _layer_redraw(weights: VGGWeights, options: StyleOptions) -> Callable:
    """`Problem.redraw` of the neural-neighbour last pass (`neighbour_layers.draw`)."""
    config = neighbour_config(options, weights)
    return lambda targets, key: neighbour_layers.draw(weights.params, targets, key, config)


def _stage_targets(scale: Scale, window: tuple[slice, slice], weights: VGGWeights,
                   options: StyleOptions, final: bool = False):
    """The objective's targets (`losses.Targets`, or `neighbours.NeighbourTargets` with the
    neural-neighbour preset, `neighbour_layers.LayerTargets` in its `final` pass) for
    `scale`'s inputs cut to `window`."""
    pre = weights.preprocessing
    masks = None if scale.style_masks is None else [
        None if m is None else m[window] for m in scale.style_masks]
    cmask = None if scale.content_mask is None else scale.content_mask[window]
    content = pre.to_model(scale.content_in[window])
    objective = options.objective
    try:
        if final:
            return neighbour_layers.final_targets(
                weights.params, content, scale.style, neighbour_config(options, weights),
                options.loss_weights(), cmask)
        if options.preset == NEURAL_NEIGHBOUR:
            return neighbours.neighbour_targets(
                weights.params, content, scale.style, neighbour_config(options, weights),
                objective.content_alpha, options.loss_weights(), style_masks=masks,
                content_mask=cmask, blend_weights=objective.style_blend_weights)
        config = options.loss_config(model_range=pre.model_range())
        targets = region_targets(weights.params, content, scale.styles, config, masks, cmask,
                                 objective.style_blend_weights, scale.style,
                                 weights=options.loss_weights())
    except ValueError as exc:
        raise JaxstyleError(str(exc)) from None
    if scale.previous:
        targets = targets._replace(previous=tuple((w[window], c[window])
                                                  for w, c in scale.previous))
    return targets


def banded(loss_fn: Callable, loss_static, image_shape: Sequence[int]) -> tuple:
    """``(loss_fn, loss_static, shapes)`` of the objective of an image of `image_shape` as a
    function of its Laplacian pyramid's bands (`jaxstyle.pyramid.objective`)."""
    shapes = pyramid.band_shapes(tuple(image_shape))
    return pyramid.objective, pyramid.Banded(loss_fn, loss_static, shapes), shapes


def in_bands(problem: Problem) -> Problem:
    """`problem` with the bands of its image's Laplacian pyramid as the variable."""
    loss_fn, loss_static, shapes = banded(problem.loss_fn, problem.loss_static,
                                          problem.image_shape)
    pixels = problem.to_rgb
    return problem._replace(loss_fn=loss_fn, loss_static=loss_static,
                            x0=pyramid.decompose(problem.x0, shapes),
                            to_rgb=lambda z: pixels(pyramid.synthesize(z, shapes)))


def network_params(params: dict, options: StyleOptions, image_shape: Sequence[int]) -> dict:
    """The parameters to optimize images of `image_shape` [H, W, ...] with: `params` (the
    weights' `params`) with the kernels that Winograd's algorithm runs on transformed once here
    rather than at every evaluation (`jaxstyle.vgg.transform_kernels`). `stylize` does this for
    each stage; pass the result in `minimize`'s args in place of `params` to get the same speed
    (`params` alone give the same values, a little slower on CPU). Off CPU, and for
    ``convolution="direct"``, `params` come back unchanged.

    The copies cost memory: for VGG16 up to relu5_1 at 384 px about 2 x 130 MB. Build them once
    per image size, not per image of a batch.
    """
    config = options.loss_config()
    return transform_kernels(params, image_shape, config.layers, config.convolution,
                             losses.PRECISIONS[config.precision])


def prepare(content: jax.Array, styles: Sequence[jax.Array], weights: VGGWeights,
            options: StyleOptions, key: jax.Array | None = None) -> Problem:
    """The `Problem` of a run's first stage (all of a single-scale, untiled run): to inspect
    or optimize the objective yourself. Inputs as for `stylize`."""
    stage = check_inputs(jnp.shape(content), [jnp.shape(s) for s in styles], options)[0]
    key = jax.random.key(options.seed) if key is None else key
    scale = prepare_scale(check_image(content, "content"),
                          [check_image(s, f"styles[{i}]") for i, s in enumerate(styles)],
                          weights, options, stage, key=key)
    return stage_problem(scale, start_canvas(scale.content_rgb, options, key), stage, weights,
                         options)


def start_canvas(content_rgb: jax.Array, options: StyleOptions, key: jax.Array,
                 init_image: jax.Array | None = None) -> np.ndarray:
    """The first scale's starting picture float32 [H, W, 3]: `init_image` resized, seeded noise
    or the content itself (``options.optimization.init``)."""
    shape = content_rgb.shape[:2]
    if init_image is not None:
        return np.asarray(resize(check_image(init_image, "init_image"), *shape))
    if options.optimization.init == "noise":
        # Uniform RGB noise; neural-style's N(0, 1e-3) in Caffe space is a flat grey image and
        # gives L-BFGS nothing to work from on random weights.
        return np.asarray(jax.random.uniform(key, (*shape, 3)))
    return np.asarray(content_rgb)


def carried_canvas(canvas: np.ndarray, content_rgb: jax.Array) -> np.ndarray:
    """A finer scale's starting picture float32 [H, W, 3]: the coarser scale's result `canvas`
    [h, w, 3] upsampled to `content_rgb`'s [H, W], plus the photo's detail finer than [h, w]
    (the content minus its own round trip through [h, w]).

    Upsampling alone starts the finer scale from a blurred picture that is far from the photo's
    fine features, so its first iterations only sharpen; with the photo's fine band the
    content term starts near where it ends (docs/benchmarks.md, "Time to a picture").
    """
    (h, w), (height, width) = np.shape(canvas)[:2], content_rgb.shape[:2]
    detail = content_rgb - resize(resize(content_rgb, h, w), height, width)
    return np.clip(np.asarray(resize(jnp.asarray(canvas), height, width) + detail), 0.0, 1.0)


def finish(canvas: np.ndarray, scale: Scale, options: StyleOptions) -> np.ndarray:
    """The output from the last scale's canvas: with the content's chroma when
    ``options.objective.original_colors`` is 'swap' (neural-style's -original_colors), or with the
    content's chroma in the style's palette when it is 'oklab' (`jaxstyle.color.oklab_colors`)."""
    if options.objective.original_colors == "swap":
        return np.asarray(color.swap_chroma(jnp.asarray(canvas), scale.content_rgb), np.float32)
    if options.objective.original_colors == "oklab":  # a style weighted 0 gives no colour
        shares = blend_shares(len(scale.style_rgbs), options.objective.style_blend_weights)
        palette = [s for s, share in zip(scale.style_rgbs, shares) if share > 0]
        return np.asarray(color.oklab_colors(jnp.asarray(canvas), scale.content_rgb, palette),
                          np.float32)
    return np.asarray(canvas, np.float32)
