"""Which settings? A grid of small runs over one or two options, shown as one contact sheet.

Each cell of the grid is a full `stylize` run at low resolution with one combination of the
values, scored by `jaxstyle.quality.measure`; the sheet puts the results side by side with each
cell's settings and quality figures under it, so a user picks by looking and then renders the
chosen settings at full size.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxstyle.checks import check_inputs
from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.driver import stylize
from jaxstyle.errors import count
from jaxstyle.images import save_image
from jaxstyle.option_fields import OptionsError
from jaxstyle.option_groups import VideoOptions
from jaxstyle.options import StyleOptions, parse_value
from jaxstyle.quality import Quality, measure
from jaxstyle.runner import ProgressDisplay, check_outputs, load_inputs, open_network
from jaxstyle.weights import VGGWeights

_CAPTION_LINES = 3
_FONT_SIZE = 12


class Cell(NamedTuple):
    """One run of the grid.

    Attributes:
      settings: ``{option: value}`` for the swept options only.
      image: float32 [H, W, 3] RGB in [0, 1].
      quality: its `Quality`.
      losses: its final losses.
      seconds: how long its run took.
    """

    settings: dict[str, object]
    image: np.ndarray
    quality: Quality
    losses: dict[str, float]
    seconds: float


_VIDEO_OPTIONS = frozenset(f.name for f in dataclasses.fields(VideoOptions))


def parse_axis(text: str) -> tuple[str, tuple]:
    """``"style_weight=10,100,1000"`` (or ``style-weight=...``) -> ("style_weight", (10.0, ...)).

    Values are separated by commas, or by semicolons where a value is itself a comma-separated
    list (``style_layers=relu1_1,relu2_1;relu3_1,relu4_1``).

    Raises:
      OptionsError: not NAME=V,V,..., an unknown option, or a value of the wrong type.
    """
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not values.strip():
        raise OptionsError(f"--vary: expected OPTION=VALUE,VALUE,..., got {text!r}")
    if name in _VIDEO_OPTIONS:
        raise OptionsError(f"--vary {name}: an option of jaxstyle video, which a sweep (one "
                           "image) would ignore")
    separator = ";" if ";" in values else ","
    try:
        return name, tuple(parse_value(name, v.strip())
                           for v in values.split(separator) if v.strip())
    except OptionsError as exc:
        raise OptionsError(f"--vary {exc}") from None


def grid(options: StyleOptions, axes: Sequence[tuple[str, tuple]]) -> list[StyleOptions]:
    """Every combination of the axes' values applied to `options`, the last axis fastest.

    Raises:
      OptionsError: more than two axes, an axis without values, or a combination that is not
        valid (checked before any run starts).
    """
    if not 1 <= len(axes) <= 2:
        raise OptionsError(f"--vary: one or two options can be swept, got {len(axes)}")
    for name, values in axes:
        if not values:
            raise OptionsError(f"--vary {name}: no values")
    names = [name for name, _ in axes]
    if len(set(names)) != len(names):
        raise OptionsError(f"--vary: {names[0]} is given twice")
    combos = itertools.product(*(values for _, values in axes))
    try:
        return [options.replace(**dict(zip(names, combo))) for combo in combos]
    except OptionsError as exc:
        raise OptionsError(f"--vary {exc}") from None


def sweep(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    weights: VGGWeights,
    options: StyleOptions,
    axes: Sequence[tuple[str, tuple]],
    callback: Callable[[int, int, Cell], None] | None = None,
) -> list[Cell]:
    """Runs `stylize` once per combination of the axes' values and scores each result.

    Args:
      content: float [H, W, 3] RGB in [0, 1]; styles: the style images.
      weights: the network.
      options: everything that stays fixed (its ``size`` and ``iterations`` apply to each cell).
      axes: one or two ``(option name, values)``, e.g. from `parse_axis`.
      callback: called with (index, count, cell) after each cell.

    Returns:
      The cells in row-major order (the last axis varies fastest).
    """
    runs = grid(options, axes)
    cells = []
    for index, run in enumerate(runs):
        start = time.perf_counter()
        result = stylize(content, styles, weights, run)
        cell = Cell({name: run.by_name()[name] for name, _ in axes}, result.image,
                    measure(weights, result.image, content, styles, run), result.losses,
                    time.perf_counter() - start)
        cells.append(cell)
        if callback is not None:
            callback(index, len(runs), cell)
    return cells


def _caption(cell: Cell) -> list[str]:
    settings = ", ".join(f"{k}={_short(v)}" for k, v in cell.settings.items())
    content = cell.quality.content_distance
    return [settings,
            f"style x{cell.quality.style_gram_ratio:.2g} Gram, "
            f"x{cell.quality.style_sliced_wasserstein_ratio:.2g} SW",
            f"content {content:.3g}, {cell.seconds:.0f} s"]


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def contact_sheet(cells: Sequence[Cell], columns: int) -> np.ndarray:
    """The cells' images in a grid of `columns`, each with three caption lines under it.

    Returns:
      float32 [H, W, 3] RGB in [0, 1].
    """
    font = ImageFont.load_default(size=_FONT_SIZE)
    line = _FONT_SIZE + 3
    height = max(c.image.shape[0] for c in cells)
    width = max(max(c.image.shape[1] for c in cells),
                max(int(font.getlength(text)) + 8 for c in cells for text in _caption(c)))
    cell_h = height + _CAPTION_LINES * line + 8
    rows = -(-len(cells) // columns)
    sheet = Image.new("RGB", (columns * width, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, cell in enumerate(cells):
        x, y = (i % columns) * width, (i // columns) * cell_h
        picture = Image.fromarray(np.round(np.clip(cell.image, 0, 1) * 255).astype(np.uint8))
        sheet.paste(picture, (x + (width - picture.width) // 2, y))
        for j, text in enumerate(_caption(cell)):
            draw.text((x + 4, y + height + 4 + j * line), text, fill="black", font=font)
    return np.asarray(sheet, np.float32) / 255.0



def sweep_files(content: str, styles: Sequence[str], output: str, options: StyleOptions,
                vary: Sequence[str], log: Callable[[str], None], weights: str | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, progress_bar: bool = True) -> int:
    """``jaxstyle sweep``: the contact sheet of `sweep` over the ``--vary`` axes, written to
    `output`; returns the exit code.

    Raises:
      JaxstyleError: bad input or axes (checked before any work).
    """
    axes = [parse_axis(text) for text in vary]
    runs = grid(options, axes)
    inputs = load_inputs(styles, content, max_pixels=max_pixels)
    (output,) = check_outputs([output], inputs.paths)
    for run in runs:
        check_inputs(inputs.content.shape, [s.shape for s in inputs.styles], run)
    network = open_network(weights, options.seed, log)
    log(f"{count(len(runs), 'run')} of at most "
        f"{count(options.optimization.iterations, 'iteration')} at {options.plan.size} px")
    with ProgressDisplay(len(runs), unit="run", enabled=progress_bar) as display:
        above = display.log(log)

        def on_cell(index: int, total: int, cell: Cell) -> None:
            settings = ", ".join(f"{k}={v}" for k, v in cell.settings.items())
            above(f"[{index + 1}/{total}] {settings}: {cell.quality.summary()} "
                  f"({cell.seconds:.0f} s)")
            display.step()

        cells = sweep(inputs.content, inputs.styles, network.weights, options, axes, on_cell)
    save_image(output, contact_sheet(cells, columns=len(axes[-1][1])), inputs.paths,
               network.label)
    log(f"wrote {output}: {len(cells)} settings side by side")
    return 0
