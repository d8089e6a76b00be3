"""Which settings? A grid of small runs over one or two options, shown as one contact sheet.

Each cell of the grid is a full `stylize` run at low resolution with one combination of the
values, scored by `jaxstyle.quality.measure`; the sheet puts the results side by side with each
cell's settings and quality figures under it, so a user picks by looking and then renders the
chosen settings at full size. ``jaxstyle sweep`` (`sweep_files`) goes through the pipeline every
command does (`jaxstyle.pipeline`): its sheet is locked while it runs, and a stop request ends
it after the cell running, writing nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxstyle.checks import check_inputs
from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.driver import stylize
from jaxstyle.errors import count
from jaxstyle.images import save_image
from jaxstyle.inputs import Inputs, load_inputs
from jaxstyle.option_fields import OptionsError
from jaxstyle.option_groups import VideoOptions
from jaxstyle.options import StyleOptions, parse_value
from jaxstyle.outputs import check_outputs
from jaxstyle.pipeline import (
    Command,
    Interrupted,
    Network,
    Outcome,
    Transport,
    Watch,
    exit_code,
    run_command,
)
from jaxstyle.quality import Quality, measure
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


class SweepRequest(NamedTuple):
    """A sweep's files and axes (the options that stay fixed are separate: `StyleOptions`).

    Attributes:
      content: the content image's path.
      styles: the style images' paths.
      output: the contact sheet's path.
      vary: one or two axes as ``--vary`` takes them (`parse_axis`).
      weights: a weights file, 'random', or None to look for converted weights.
      max_pixels: refuse input images larger than this.
    """

    content: str
    styles: list[str]
    output: str
    vary: list[str]
    weights: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


def sweep_files(request: SweepRequest, options: StyleOptions, transport: Transport) -> int:
    """``jaxstyle sweep``: the contact sheet of `sweep` over the ``--vary`` axes, written to
    the request's output; returns the exit code (0, or 128 + the signal that stopped it, with
    nothing written).

    Raises:
      JaxstyleError: bad input or axes (checked before any work), or an output another run
        is writing.
    """
    return exit_code(run_command(SweepCommand.prepare(request, options), transport))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepCommand(Command):
    """A sweep checked and loaded: ``jaxstyle sweep``'s (`prepare`), or the studio's.

    Attributes:
      inputs: the content and style images (and every input file).
      axes: one or two ``(option, values)``.
      output: where the contact sheet goes (locked while it runs: `Command.outputs`).
    """

    inputs: Inputs
    axes: tuple[tuple[str, tuple], ...]
    output: Path

    @classmethod
    def prepare(cls, request: SweepRequest, options: StyleOptions) -> SweepCommand:
        """Reads the axes, loads the images and checks the output and every cell's options and
        sizes, before any work.

        Raises:
          JaxstyleError: naming what is wrong.
        """
        axes = tuple(parse_axis(text) for text in request.vary)
        runs = grid(options, axes)
        inputs = load_inputs(request.styles, request.content, max_pixels=request.max_pixels)
        (output,) = check_outputs([request.output], inputs.paths)
        for run in runs:
            check_inputs(inputs.content.shape, [s.shape for s in inputs.styles], run)
        return cls(options=options, outputs=(output,), weights=request.weights, inputs=inputs,
                   axes=axes, output=output)

    @property
    def cells(self) -> int:
        """How many cells the grid has."""
        return len(grid(self.options, self.axes))

    def progress(self) -> tuple[int | None, str, int]:
        return self.cells, "run", 0

    def start(self, network: Network, transport: Transport) -> SweepCommand:
        transport.log(f"{count(self.cells, 'run')} of at most "
                      f"{count(self.options.optimization.iterations, 'iteration')} at "
                      f"{self.options.plan.size} px")
        return dataclasses.replace(self, network=network)

    def run(self, watch: Watch) -> list[Cell]:
        """Runs the cells, showing each on `watch` as it is done; a stop request heard after a
        cell (not the last) ends the sweep there (`Interrupted`, holding the cells done)."""
        cells: list[Cell] = []

        def on_cell(index: int, total: int, cell: Cell) -> None:
            cells.append(cell)
            watch.cell(index, total, cell, lambda: self.sheet(cells))
            if index + 1 < total and (stop := watch.requested()) is not None:
                raise stop.at(list(cells))

        sweep(self.inputs.content, self.inputs.styles, self.network.weights, self.options,
              self.axes, on_cell)
        return cells

    def sheet(self, cells: Sequence[Cell]) -> np.ndarray:
        """The contact sheet of `cells`, a row per value of the first axis."""
        return contact_sheet(cells, columns=len(self.axes[-1][1]))

    def stopped(self, stop: Interrupted, transport: Transport) -> Outcome:
        """Writes nothing: a sheet of some cells is not the sweep asked for."""
        transport.say(f"interrupted after {count(len(stop.reached), 'run')} of {self.cells}; "
                      f"nothing written to {self.output}")
        return Outcome("stopped", stop.signum, iteration=len(stop.reached))

    def finish(self, cells: list[Cell], transport: Transport) -> Outcome:
        sheet = self.sheet(cells)
        save_image(self.output, sheet, self.inputs.paths, self.network.label)
        transport.log(f"wrote {self.output}: {len(cells)} settings side by side")
        return Outcome("done", image=sheet, iteration=len(cells))
