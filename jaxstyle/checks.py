"""A run's inputs checked before any expensive work: images, masks, weights and options, and
every size of the plan against the deepest layer used.

`check_inputs` checks counts and sizes against the whole plan (`jaxstyle.stages`); the others
check one argument each and give it back in the form the run uses, and `check_image_inputs`
gathers one content image's (`ImageInputs`), what a batch holds one of per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.choices import MAX_SIDE
from jaxstyle.errors import JaxstyleError, count
from jaxstyle.option_fields import OptionsError
from jaxstyle.options import StyleOptions
from jaxstyle.resampling import fit_bucket, fit_longest_side
from jaxstyle.stages import Stage, output_shape, plan
from jaxstyle.vgg import VGGWeights
from jaxstyle.vgg_layers import depths_of, min_image_side, pools_before, validate_layers


class ImageInputs(NamedTuple):
    """One content image's inputs besides the styles (which the images of a batch share), as
    `jaxstyle.stylize` takes them, checked.

    Attributes:
      content: float32 [H, W, 3] RGB in [0, 1].
      style_masks: float32 [H, W] per style (None: everywhere), or None for no regions.
      content_mask: float32 [H, W], or None.
      init_image: float32 [H, W, 3] to start from, or None (``options.optimization.init``).
      previous: for video, ``((warped, weights), ...)`` (`prepare_scale`), or None.
    """

    content: jax.Array
    style_masks: list | None = None
    content_mask: jax.Array | None = None
    init_image: jax.Array | None = None
    previous: tuple | None = None

    def controls(self) -> tuple:
        """What decides the structure of this image's targets (not its sizes): which styles
        have masks, whether there is a content mask, how many earlier frames. Images of one
        plan with the same controls run as one batch."""
        return (None if self.style_masks is None else tuple(m is None for m in self.style_masks),
                self.content_mask is not None, len(self.previous or ()))



def check_image(image, argument: str, channels: tuple[int, ...] = (3,)) -> jax.Array:
    """`image` as float32 [H, W, C] in [0, 1], C one of `channels` (3: RGB).

    uint8 images are converted (divided by 255); float images must already be in [0, 1] (a
    float image in 0-255 would come out all white, so it is refused).

    Raises:
      JaxstyleError: naming `argument`: not an array of numbers, the wrong shape, empty,
        not finite, or floats outside [0, 1].
    """
    array = np.asarray(image) if not isinstance(image, jax.Array) else image
    kind = np.dtype(array.dtype).kind
    if kind not in "uif" or np.dtype(array.dtype) == np.bool_:
        raise JaxstyleError(f"{argument}: expected an image of numbers, got dtype {array.dtype}")
    shape = tuple(array.shape)
    wanted = " or ".join(f"[H, W, {c}]" for c in channels)
    if len(shape) != 3 or shape[-1] not in channels:
        raise JaxstyleError(f"{argument}: expected an image {wanted}, got shape {shape}")
    if 0 in shape[:2]:
        raise JaxstyleError(f"{argument}: the image is empty (shape {shape})")
    if np.dtype(array.dtype) == np.uint8:
        return jnp.asarray(array, jnp.float32) / 255.0
    if kind != "f":
        raise JaxstyleError(f"{argument}: expected float values in [0, 1] or uint8, got dtype "
                            f"{array.dtype}")
    if isinstance(array, jax.Array):
        image = jnp.asarray(array, jnp.float32)
        low, high = float(jnp.min(image)), float(jnp.max(image))
    else:  # on the host: no small program to look up or compile for each image's shape
        image = np.asarray(array, np.float32)
        low, high = float(image.min()), float(image.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise JaxstyleError(f"{argument}: the image holds NaN or infinite values")
    if low < -1e-3 or high > 1 + 1e-3:
        hint = "; divide by 255" if high > 1.5 else ""
        raise JaxstyleError(f"{argument}: float values must be in [0, 1], got [{low:g}, "
                            f"{high:g}]{hint}")
    if isinstance(image, jax.Array):
        return jnp.clip(image, 0.0, 1.0)
    # Adding 0 makes -0.0 0.0, as jnp.clip does; every other value stays as it is.
    return jax.device_put(np.clip(image, np.float32(0.0), np.float32(1.0)) + np.float32(0.0))


def check_mask(mask, argument: str) -> jax.Array:
    """A mask image as float32 [H, W] in [0, 1] (white: applies), from [H, W], [H, W, 1] or
    [H, W, 3] (the mean of the colours). A mask with transparency comes from
    `jaxstyle.images.load_mask`, where transparent means no.

    Raises:
      JaxstyleError: naming `argument`: not such an image, or a mask with no white (or light)
        pixel.
    """
    array = jnp.asarray(mask) if jnp.ndim(mask) != 2 else jnp.asarray(mask)[..., None]
    if array.ndim == 3 and array.shape[-1] not in (1, 3):
        raise JaxstyleError(f"{argument}: expected an image [H, W], [H, W, 1] or [H, W, 3], got "
                            f"shape {tuple(array.shape)} (for transparency use "
                            "jaxstyle.images.load_mask)")
    array = check_image(array, argument, channels=(1, 3))
    values = jnp.mean(array, axis=-1)
    if float(jnp.max(values)) < 0.5:
        raise JaxstyleError(f"{argument} covers nothing: it has no white (or light) pixel")
    return values


def check_masks(style_masks, content_mask, styles: int) -> tuple[list | None, jax.Array | None]:
    """`check_mask` for each style mask (None entries: everywhere) and the content mask.

    Raises:
      JaxstyleError: a number of style masks other than `styles`, or a mask `check_mask`
        refuses.
    """
    if style_masks is not None and len(style_masks) != styles:
        raise JaxstyleError(f"style_masks: {count(len(style_masks), 'mask')} for "
                            f"{count(styles, 'style image')}")
    masks = None if style_masks is None else [
        None if m is None else check_mask(m, f"style mask {i + 1}")
        for i, m in enumerate(style_masks)]
    return masks, None if content_mask is None else check_mask(content_mask, "content mask")


def check_image_inputs(styles: int, content, init_image=None, style_masks=None,
                       content_mask=None, previous=None, index: int | None = None) -> ImageInputs:
    """One content image's inputs as `jaxstyle.stylize` takes them, checked (`check_image`,
    `check_masks`) for a run with `styles` style images; `index`: the image's place in a batch,
    which the messages name (``contents[2]``, ``init_images[2]``).

    Raises:
      JaxstyleError: an image or mask these checks refuse.
    """
    def name(argument: str) -> str:
        return argument if index is None else f"{argument}s[{index}]"

    content = check_image(content, name("content"))
    init_image = None if init_image is None else check_image(init_image, name("init_image"))
    try:
        style_masks, content_mask = check_masks(style_masks, content_mask, styles)
    except JaxstyleError as exc:
        raise JaxstyleError(str(exc) if index is None else f"contents[{index}]: {exc}") from None
    return ImageInputs(content, style_masks, content_mask, init_image,
                       tuple(previous) if previous else None)


def check_batch_inputs(contents: Sequence, styles: int, init_images: Sequence | None = None,
                       style_masks: Sequence | None = None, content_masks: Sequence | None = None,
                       previous: Sequence | None = None) -> list[ImageInputs]:
    """`check_image_inputs` for each of `contents` with its entries of the other arguments
    (each None, or one entry per content image).

    Raises:
      JaxstyleError: no contents, a per-image argument whose length is not theirs, or an image
        or mask `check_image_inputs` refuses.
    """
    if not contents:
        raise JaxstyleError("contents: no content images")
    per_image = {"init_images": init_images, "style_masks": style_masks,
                 "content_masks": content_masks, "previous": previous}
    for name, given in per_image.items():
        if given is not None and len(given) != len(contents):
            raise JaxstyleError(f"{name}: {len(given)} given for "
                                f"{count(len(contents), 'content image')}")
    columns = [[None] * len(contents) if given is None else given for given in per_image.values()]
    return [check_image_inputs(styles, *inputs, index=i)
            for i, inputs in enumerate(zip(contents, *columns))]


def check_arguments(weights, options) -> StyleOptions:
    """The weights and options of a run, checked: `options` None means `StyleOptions()`.

    Raises:
      JaxstyleError: weights that are not `jaxstyle.VGGWeights`, options that are not
        `StyleOptions` (a dict says how to make one), or layers the network lacks.
    """
    if not isinstance(weights, VGGWeights):
        raise JaxstyleError(f"weights: expected VGGWeights (jaxstyle.load_weights(...)), got "
                            f"{type(weights).__name__}")
    if isinstance(options, dict):
        raise JaxstyleError("options: expected a StyleOptions, got a dict; use "
                            "StyleOptions(**options)")
    options = StyleOptions() if options is None else options
    if not isinstance(options, StyleOptions):
        raise JaxstyleError(f"options: expected a StyleOptions, got {type(options).__name__}")
    check_network(weights, options)
    return options


def _check_size(shape: tuple[int, ...], layers: Sequence[str], option: str, what: str,
                fix: Callable[[int], str] = lambda need: "") -> None:
    """Refuses `shape` (`what`, which `option` sets) when it is thinner than `layers` need;
    `fix` words the advice for the size needed, naming `option` as ``option`` or
    ``option=value`` (`JaxstyleError.options`)."""
    need = min_image_side(layers)
    if min(shape[:2]) < need:
        raise JaxstyleError(
            f"{option}: {what} of {shape[1]}x{shape[0]} px is too small for the network: its "
            f"deepest layer used ({max(layers, key=pools_before)}) needs at least {need} px on "
            f"each side{fix(need)}", options=(option,))


def _smallest_size(content_shape: tuple[int, ...], need: int) -> int:
    """The smallest longest side at which the content's shorter side reaches `need` px."""
    size = need
    while min(output_shape(content_shape, size)) < need and size <= MAX_SIDE:
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
            validate_layers(getattr(options.objective, name), name, depths_of(weights.params))
        except ValueError as exc:
            raise OptionsError(str(exc)) from None


def style_sizes(output_hw: tuple[int, int], style_shapes: Sequence[tuple[int, ...]],
                options: StyleOptions, coarse: bool = False) -> list[tuple[int, int]]:
    """(H, W) each style image is resized to for an output of `output_hw`: longest side
    ``style_scale`` (or its own ``style_scales`` entry) times the output's; at a `coarse`
    scale (`Stage.coarse`), in a shape bucket (`fit_bucket`)."""
    scales = options.objective.style_scales or (options.objective.style_scale,) * len(style_shapes)
    if len(scales) != len(style_shapes):
        raise JaxstyleError(
            f"style_scales: {count(len(scales), 'scale')} for "
            f"{count(len(style_shapes), 'style image')}"
        )
    fit = fit_bucket if coarse else fit_longest_side
    return [fit(shape, max(1, round(scale * max(output_hw))))
            for shape, scale in zip(style_shapes, scales)]


def check_inputs(content_shape: tuple[int, ...], style_shapes: Sequence[tuple[int, ...]],
                 options: StyleOptions) -> tuple[Stage, ...]:
    """Checks image counts and sizes against the options before any expensive work.

    Args:
      content_shape: the content image's shape [H, W, 3].
      style_shapes: each style image's shape.
      options: the run's options.

    Returns:
      The run's plan (`jaxstyle.stages`).

    Raises:
      JaxstyleError: no style, blend weights that do not match, or a size (of a tile, a scale
        or a style image) too small for the deepest layer used; the last names the option that
        sets the size, and what to set it to, as ``size=21`` (`JaxstyleError.options`).
    """
    if not style_shapes:
        raise JaxstyleError("at least one style image is needed")
    blend = options.objective.style_blend_weights
    if blend is not None and len(blend) != len(style_shapes):
        raise JaxstyleError(
            f"style_blend_weights: {count(len(blend), 'weight')} for "
            f"{count(len(style_shapes), 'style image')}"
        )
    config = options.loss_config()
    stages = plan(content_shape, options)
    sizing = "scales" if options.plan.scales else "size"
    for stage in stages:
        _check_size(stage.size, config.layers, sizing, "the output",
                    lambda need: f"; use {sizing}={size} or more"
                    if (size := _smallest_size(content_shape, need)) <= MAX_SIDE
                    else f"; at {sizing}={MAX_SIDE}, the largest, it is still too thin: crop it")
        _check_size(stage.window[2:], config.layers, "tile_size", f"tile {stage.tile + 1}",
                    lambda need: f"; use tile_size={max(32, need)} or more")
        for i, hw in enumerate(style_sizes(stage.size, style_shapes, options, stage.coarse)):
            _check_size(hw, config.style_layers, "style_scale", f"style image {i + 1}",
                        lambda need: "; use a larger style_scale")
    return stages
