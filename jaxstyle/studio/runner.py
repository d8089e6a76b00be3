"""One studio job from arrays to files: a run (`jaxstyle.stylize`) or a sweep
(`jaxstyle.sweep`), scored by `jaxstyle.quality.measure`, its picture and JSON report
written into the job's folder.

Nothing here knows about HTTP or threads: the caller passes callbacks that see each chunk and
say whether to stop. A stop takes effect at the end of the chunk running (a run's chunks last
about one iteration, or a fifth of a second where iterations are shorter; a sweep's: the cell)
and keeps what was reached, with the optimizer state to continue from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxstyle import __version__
from jaxstyle.checkpoint import RunState
from jaxstyle.driver import StylizeProgress, stylize
from jaxstyle.files import atomic_write
from jaxstyle.images import save_image
from jaxstyle.options import StyleOptions
from jaxstyle.quality import measure
from jaxstyle.runner import output_label, run_report, weights_record
from jaxstyle.studio.store import mask_png
from jaxstyle.sweeps import Cell, contact_sheet, sweep
from jaxstyle.weights import VGGWeights

RESULT = "result.png"
SHEET = "sheet.png"
REPORT = "report.json"
STYLE_MASK = "style-mask-{}.png"  # numbered from 1, as the styles on the command line
CONTENT_MASK = "content-mask.png"


class _Stop(Exception):
    """Raised from the progress callback to end a job after the current chunk."""


class Outcome(NamedTuple):
    """How a job ended.

    Attributes:
      status: "done" (it ran to its end) or "stopped" (asked to, after a chunk).
      image: float32 [H, W, 3] RGB in [0, 1]: the result, the picture reached, or the sheet.
      iteration: iterations of the run done (a sweep: cells done).
      state: where a run stands, to continue it (`stylize`'s ``resume``); None for a sweep.
      report: what ``report.json`` holds.
    """

    status: str
    image: np.ndarray
    iteration: int
    state: RunState | None
    report: dict


PREVIEW_SECONDS = 1.0
"""About how often a run shows its picture."""
ANSWER_SECONDS = 0.2
"""About the longest a chunk lasts, so that a stop is answered within one iteration, or this
long where iterations are shorter. Each chunk end costs a few milliseconds (3-8 ms measured on
a loaded 2-core machine with the tiny VGG19 at 32-128 px), at most 4 % of a chunk this long.
At a new scale the first chunk may hold iterations measured at the coarser one (a few times
faster): one chunk, then the pace is the new scale's."""


class PreviewPace:
    """Where a run's chunks end, and which chunks show a picture.

    A chunk ends after the first iteration (the first picture, as soon as the run has
    started), at the usual ends (every ``progress_every``, where the stop rules look), and every
    `step` iterations in between, `step` set from the pace measured so far so that a chunk lasts
    about `ANSWER_SECONDS` or one iteration, whichever is longer: a stop is heard at a chunk's
    end. A picture is shown after the first chunk and then about every `PREVIEW_SECONDS`.
    Chunk ends never change a result: the compiled loop carries its state across them exactly,
    and sliced Wasserstein's redraws go by ``iteration // progress_every``.

    Args:
      progress_every: the options' chunk length, the longest a chunk gets.
    """

    def __init__(self, progress_every: int):
        self.every, self.step, self.last, self.shown = progress_every, 1, None, None

    def __call__(self, iteration: int) -> bool:
        """`stylize`'s ``report_at``: whether a chunk ends after `iteration`."""
        return iteration == 1 or iteration % self.every == 0 or iteration % self.step == 0

    def measured(self, iteration: int, now: float) -> bool:
        """Takes the pace from a chunk that ended at `iteration` at time `now` (seconds);
        returns whether its picture is due."""
        chunk = 0.0
        if self.last is not None and iteration > self.last[0]:
            chunk = now - self.last[1]
            per = chunk / (iteration - self.last[0])
            self.step = max(1, min(self.every, round(ANSWER_SECONDS / max(per, 1e-6))))
        self.last = (iteration, now)
        # The chunk end nearest PREVIEW_SECONDS after the last picture shows the next one.
        due = self.shown is None or now - self.shown + chunk / 2 >= PREVIEW_SECONDS
        if due:
            self.shown = now
        return due


def run(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    weights: VGGWeights,
    options: StyleOptions,
    folder: Path,
    *,
    on_progress: Callable[[StylizeProgress], None],
    should_stop: Callable[[], bool],
    inputs: dict,
    resume: RunState | None = None,
    style_cache: dict | None = None,
    style_masks: Sequence[np.ndarray] | None = None,
    content_mask: np.ndarray | None = None,
) -> Outcome:
    """Stylizes `content` into ``folder/result.png`` and writes ``folder/report.json``.

    Args:
      content: float32 [H, W, 3] RGB in [0, 1]; styles: the style images, likewise.
      weights: the network; options: the run's options.
      folder: where the files go (it exists).
      on_progress: sees the `StylizeProgress` of each chunk whose picture is due (`PreviewPace`),
        of the last one, and of the one a stop ends the run at.
      should_stop: asked after each chunk (one iteration, or about a fifth of a second where
        iterations are shorter); True ends the run there.
      inputs: what the report says the inputs were (names, checksums, the command line).
      resume: continue from this state (with ``options.optimization.iterations`` raised to run
        further).
      style_cache: `stylize`'s cache of style targets, kept by the caller between runs.
      style_masks: one mask float32 [H, W] per style (`stylize`'s), or None.
      content_mask: float32 [H, W] (`stylize`'s), or None.

    Returns:
      The `Outcome`; its ``state`` continues the run.

    Raises:
      JaxstyleError: what `stylize` raises for bad inputs or a diverging loss.
    """
    latest: list[StylizeProgress] = []  # only the newest: each holds a whole optimizer state
    first = resume.iteration if resume is not None else 0
    started = time.perf_counter()
    pace = PreviewPace(options.performance.progress_every)

    def callback(p: StylizeProgress) -> None:
        latest[:] = [p]
        due = pace.measured(p.iteration, time.perf_counter())
        stop = should_stop() and p.iteration < p.total_iterations
        if due or stop or p.iteration == p.total_iterations:
            on_progress(p)
        if stop:
            raise _Stop

    try:
        result = stylize(content, styles, weights, options, callback=callback, report_at=pace,
                         resume=resume, style_cache=style_cache, style_masks=style_masks,
                         content_mask=content_mask)
    except _Stop:
        end = _stopped(latest[0], time.perf_counter() - started)
    else:
        end = _finished(result, first)
    done = len(end.history.get("total", ()))
    state = latest[0].run_state() if latest else None
    report = _save(folder, end, weights, options, content, styles, inputs, done,
                   resume.iteration if resume is not None else None)
    return Outcome(end.status, end.image, done, state, report)


class _End(NamedTuple):
    """How a run ended, as its report says: "done" or "stopped", with the picture, the loss
    history, the final losses, the evaluation counts and the timings then."""

    status: str
    image: np.ndarray
    history: dict
    losses: dict
    evaluations: int
    timings: dict


def _stopped(p: StylizeProgress, seconds: float) -> _End:
    """A run stopped after the chunk `p`, `seconds` after it started."""
    return _End("stopped", p.image(), p.history, {"total": p.value, **p.components},
                p.evaluations, {"total": seconds})


def _finished(result, first: int) -> _End:
    """A run that finished (`stylize`'s result), having started at iteration `first`."""
    timings = dict(result.timings)
    ran = len(result.history.get("total", ())) - first
    timings["per_iteration"] = timings["optimize"] / max(1, ran)
    return _End("done", result.image, result.history, result.losses, result.evaluations, timings)


def _save(folder: Path, end: _End, weights: VGGWeights, options: StyleOptions,
          content: np.ndarray, styles: Sequence[np.ndarray], inputs: dict, done: int,
          resumed_from: int | None) -> dict:
    """Measures the picture, writes it and the report into `folder`; returns the report."""
    quality = measure(weights, end.image, content, styles, options)
    save_image(folder / RESULT, end.image, description=output_label(weights))
    report = run_report(weights, options, end.losses, end.evaluations, end.timings, quality,
                        end.history, **inputs, output=RESULT, status=end.status,
                        iterations_done=done, resumed_from_iteration=resumed_from)
    write_json(folder / REPORT, report)
    return report


def run_sweep(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    weights: VGGWeights,
    options: StyleOptions,
    axes: Sequence[tuple[str, tuple]],
    folder: Path,
    *,
    on_cell: Callable[[int, int, Cell, np.ndarray], None],
    should_stop: Callable[[], bool],
    inputs: dict,
) -> Outcome:
    """`jaxstyle sweep` into ``folder/sheet.png`` (the contact sheet) and ``folder/report.json``.

    Args:
      content, styles, weights, options: as for `run`; ``options`` applies to every cell.
      axes: one or two ``(option, values)`` (`jaxstyle.sweep.parse_axis`).
      folder: where the files go.
      on_cell: sees ``(index, count, cell, sheet so far)`` after each cell.
      should_stop: asked after each cell; True ends the sweep there.
      inputs: what the report says the inputs were.

    Returns:
      The `Outcome` (``iteration``: cells done; ``state``: None).
    """
    cells: list[Cell] = []
    columns = len(axes[-1][1])

    def callback(index: int, count: int, cell: Cell) -> None:
        cells.append(cell)
        on_cell(index, count, cell, contact_sheet(cells, columns))
        if should_stop() and index + 1 < count:
            raise _Stop

    try:
        sweep(content, styles, weights, options, axes, callback)
        status = "done"
    except _Stop:
        status = "stopped"
    sheet = contact_sheet(cells, columns)
    save_image(folder / SHEET, sheet, description=output_label(weights))
    report = {
        "jaxstyle_version": __version__,
        **inputs,
        "output": SHEET,
        "status": status,
        "vary": {name: list(values) for name, values in axes},
        "weights": weights_record(weights),
        "options": options.to_dict(),
        "cells": [{"settings": cell.settings, "final_losses": cell.losses,
                   "quality": cell.quality.to_dict(), "seconds": cell.seconds}
                  for cell in cells],
    }
    write_json(folder / REPORT, report)
    return Outcome(status, sheet, len(cells), None, report)


def save_masks(folder: Path, style_masks: Sequence[np.ndarray | None] | None,
               content_mask: np.ndarray | None) -> tuple[tuple[str, ...], str | None]:
    """Writes a run's masks into `folder` as the grey PNGs ``--style-masks`` and
    ``--content-mask`` read; returns their names. A style with no mask of its own (None) gets
    a white one, for the command line takes a file for every style.

    Args:
      style_masks: float32 [H, W] in [0, 1] per style or None; or None for no regions.
      content_mask: float32 [H, W] in [0, 1], or None.
    """
    names = []
    shown = [m for m in style_masks or () if m is not None]
    for i, mask in enumerate(style_masks if shown else ()):
        names.append(STYLE_MASK.format(i + 1))
        white = np.ones(shown[0].shape, np.float32)
        (folder / names[-1]).write_bytes(mask_png(white if mask is None else mask))
    if content_mask is not None:
        (folder / CONTENT_MASK).write_bytes(mask_png(content_mask))
    return tuple(names), None if content_mask is None else CONTENT_MASK


def write_json(path: Path, data: dict) -> None:
    """Writes `data` as indented JSON, atomically."""
    with atomic_write(path) as f:
        f.write(json.dumps(data, indent=2, default=_plain).encode())


def _plain(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")
