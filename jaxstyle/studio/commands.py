"""The studio's two commands as the pipeline (`jaxstyle.pipeline`) runs them: a run
(`StudioRun`) and a sweep (`StudioSweep`), from the images the store holds to the job's folder
(its picture and ``report.json``). What is the studio's own is what a stop keeps: the picture
reached (a run's, with the optimizer state to continue from; a sweep's sheet of the cells
done), written and reported as the job's result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxstyle import __version__
from jaxstyle.images import save_image
from jaxstyle.inputs import Inputs
from jaxstyle.pipeline import (
    Command,
    Interrupted,
    Network,
    Outcome,
    Reached,
    Transport,
    Watch,
    finish_image,
    stylize_watched,
)
from jaxstyle.reports import weights_record, write_json
from jaxstyle.run_state import RunState
from jaxstyle.studio.store import mask_png
from jaxstyle.sweeps import Cell, SweepCommand

RESULT = "result.png"
SHEET = "sheet.png"
REPORT = "report.json"
STYLE_MASK = "style-mask-{}.png"  # numbered from 1, as the styles on the command line
CONTENT_MASK = "content-mask.png"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudioRun(Command):
    """A studio run: `inputs` (content, styles, masks) stylized into ``folder/result.png``
    with ``folder/report.json``; a stop keeps the picture reached as the result.

    Attributes:
      inputs: the images, float32 arrays as `jaxstyle.stylize` takes them.
      folder: where the files go (it exists).
      fields: what the report says the inputs were (names, checksums, the command line).
      resume: continue from this state (with ``options.optimization.iterations`` raised to
        run further), or None.
      style_cache: `stylize`'s cache of style targets, kept by the studio between runs.
      started: when it started (`start`).
    """

    inputs: Inputs
    folder: Path
    fields: dict
    resume: RunState | None = None
    style_cache: dict | None = None
    started: float = 0.0

    def start(self, network: Network, transport: Transport) -> StudioRun:
        return dataclasses.replace(self, network=network, started=time.perf_counter())

    def run(self, watch: Watch) -> tuple:
        """The run, and its newest progress (whose state continues it)."""
        latest = []  # only the newest: each holds a whole optimizer state

        def keep(p, stopping: bool) -> None:
            latest[:] = [p]

        result = stylize_watched(self.inputs, self.network, self.options, watch, own=keep,
                                 resume=self.resume, style_cache=self.style_cache)
        return result, latest[0] if latest else None

    def stopped(self, stop: Interrupted, transport: Transport) -> Outcome:
        p = stop.reached
        return self._keep(Reached.stopped(p, time.perf_counter() - self.started), "stopped",
                          p.run_state())

    def finish(self, result, transport: Transport) -> Outcome:
        result, latest = result
        return self._keep(result, "done", latest.run_state() if latest else None)

    def _keep(self, reached, status: str, state: RunState | None) -> Outcome:
        """Writes the picture and its report (`finish_image`) as the job's result."""
        done = len(reached.history.get("total", ()))
        first = self.resume.iteration if self.resume is not None else None
        _, report = finish_image(
            self.folder / RESULT, reached, self.inputs.content, self.inputs, self.options,
            self.network, None, ran=done - (first or 0), fields={
                **self.fields, "output": RESULT, "status": status, "iterations_done": done,
                "resumed_from_iteration": first})
        write_json(self.folder / REPORT, report)
        return Outcome(status, image=reached.image, iteration=done, state=state, report=report)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudioSweep(SweepCommand):
    """A studio sweep: the sheet goes to ``folder/sheet.png`` (`SweepCommand.output`) with
    ``folder/report.json``; a stop keeps the sheet of the cells done as the result.

    Attributes:
      fields: what the report says the inputs were.
    """

    fields: dict

    def stopped(self, stop: Interrupted, transport: Transport) -> Outcome:
        return self._keep(stop.reached, "stopped")

    def finish(self, cells: list[Cell], transport: Transport) -> Outcome:
        return self._keep(cells, "done")

    def _keep(self, cells: Sequence[Cell], status: str) -> Outcome:
        sheet = self.sheet(cells)
        save_image(self.output, sheet, description=self.network.label)
        report = {
            "jaxstyle_version": __version__,
            **self.fields,
            "output": self.output.name,
            "status": status,
            "vary": {name: list(values) for name, values in self.axes},
            "weights": weights_record(self.network.weights),
            "options": self.options.to_dict(),
            "cells": [{"settings": cell.settings, "final_losses": cell.losses,
                       "quality": cell.quality.to_dict(), "seconds": cell.seconds}
                      for cell in cells],
        }
        write_json(self.output.with_name(REPORT), report)
        return Outcome(status, image=sheet, iteration=len(cells), report=report)


def save_masks(folder: Path, style_masks: Sequence[np.ndarray | None] | None,
               content_mask: np.ndarray | None) -> tuple[tuple[str, ...], str | None]:
    """Writes a run's masks into `folder` as the grey PNGs ``--style-masks`` and
    ``--content-mask`` read; returns their names. A style with no mask of its own (None) gets
    a white one, for the command line takes a file for every style.

    Args:
      folder: the run's folder.
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
