"""A command's input images, loaded and checked once, at the boundary (`load_inputs`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.errors import JaxstyleError, count
from jaxstyle.images import load_image, load_mask


class Inputs(NamedTuple):
    """A run's images, loaded and checked once, at the boundary.

    Attributes:
      styles: the style images, each float32 [H, W, 3] RGB in [0, 1].
      content: the content image, or None (a batch or a video brings its own).
      init_image: the start image, or None.
      style_masks: one mask image per style, or None.
      content_mask: the content loss's mask image, or None.
      paths: every input file, which no output may overwrite.
    """

    styles: list[np.ndarray]
    content: np.ndarray | None = None
    init_image: np.ndarray | None = None
    style_masks: list[np.ndarray] | None = None
    content_mask: np.ndarray | None = None
    paths: tuple[str, ...] = ()


def load_inputs(styles: Sequence[str], content: str | None = None, *,
                init_image: str | None = None, style_masks: Sequence[str] | None = None,
                content_mask: str | None = None, others: Sequence[str] = (),
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Inputs:
    """Loads a run's images; `others` are further input files (a batch's contents, a video)
    that outputs must not overwrite but that the command reads itself.

    Raises:
      JaxstyleError: masks that do not match the styles, or an image that cannot be read or
        is larger than `max_pixels` (`jaxstyle.ImageError`, naming the file).
    """
    if not styles:
        raise JaxstyleError("at least one style image is needed")
    masks = list(style_masks or [])
    if masks and len(masks) != len(styles):
        raise JaxstyleError(f"--style-masks: {count(len(masks), 'mask')} for "
                            f"{count(len(styles), 'style image')}")
    paths = [p for p in (content, *styles, *masks, init_image, content_mask) if p]

    def load(path, reader=load_image):
        return None if path is None else reader(path, max_pixels)

    content_image = load(content)  # the content first: its errors are the ones to see first
    return Inputs([load(p) for p in styles], content_image, load(init_image),
                  [load(p, load_mask) for p in masks] or None, load(content_mask, load_mask),
                  tuple(map(str, [*paths, *others])))
