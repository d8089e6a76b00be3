"""A stage's problem: the inputs resized and recoloured for a scale, the targets, the start.

`prepare_scale` does what a scale of the plan (`jaxstyle.plan`) shares between its tiles;
`stage_problem` cuts it to one stage's window and adds the start image from the canvas.
`check_inputs` checks counts and sizes against the whole plan before any expensive work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import color, losses
from jaxstyle.errors import JaxstyleError, count
from jaxstyle.images import fit_longest_side, resize
from jaxstyle.options import OptionsError, StyleOptions
from jaxstyle.plan import Stage, output_shape, plan
from jaxstyle.preprocessing import Preprocessing
from jaxstyle.tiling import tiled_style_target_list
from jaxstyle.vgg import depths_of, min_image_side, pools_before, validate_layers
from jaxstyle.weights import VGGWeights


def to_rgb(x: jax.Array, preprocessing: Preprocessing) -> np.ndarray:
    """Model-space float [H, W, 3] -> float32 RGB in [0, 1], clipped."""
    return np.clip(np.asarray(preprocessing.from_model(x), np.float32), 0.0, 1.0)


def check_image(image, argument: str) -> jax.Array:
    """`image` as float32 [H, W, 3], or a `JaxstyleError` naming `argument`."""
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
    scaled = []
    for frame, weights in previous or ():
        frame = resize(jnp.asarray(frame, jnp.float32), *stage.size)
        if options.original_colors == "luminance":  # compared with the grey image optimized
            frame = color.gray_rgb(color.luminance(frame))
        weights = resize(jnp.asarray(weights, jnp.float32)[..., None], *stage.size)[..., 0]
        scaled.append((pre.to_model(frame), jnp.clip(weights, 0.0, 1.0)))
    return Scale(content_rgb, content_in, model_styles, style, masks, cmask,
                 tuple(scaled) or None)


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
    scale = prepare_scale(check_image(content, "content"),
                          [check_image(s, f"styles[{i}]") for i, s in enumerate(styles)],
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
        return np.asarray(resize(check_image(init_image, "init_image"), *shape))
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
