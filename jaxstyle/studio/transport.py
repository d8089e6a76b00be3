"""The studio's transport (`PageTransport`): what a job shows the page as it runs (its
`jaxstyle.studio.jobs.Snapshot` and newest picture, paced by `PreviewPace`) and its Stop button
as the stop request. Everything else a job does is the pipeline every command goes through
(`jaxstyle.pipeline`).

A stop takes effect at the end of the chunk running (a run's chunks last about one iteration,
or a fifth of a second where iterations are shorter; a sweep's: the cell) and keeps what was
reached, with the optimizer state to continue from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np

from jaxstyle.driver import StylizeProgress
from jaxstyle.pipeline import Interrupted, Transport, Watch
from jaxstyle.studio.jobs import Job, after_chunk

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


class PageTransport(Transport):
    """A studio job's transport: its progress goes to its snapshot and picture, its stop
    request is its Stop button (`Job.stop`). Lines of progress are not the page's: it shows
    snapshots.

    Args:
      job: the job.
      progress_every: its options' chunk length (`PreviewPace`).
    """

    def __init__(self, job: Job, progress_every: int):
        self.job, self.progress_every = job, progress_every

    @contextlib.contextmanager
    def watching(self, total: int | None, unit: str = "it", initial: int = 0
                 ) -> Iterator[Watch]:
        yield _PageWatch(self.job, PreviewPace(self.progress_every))


class _PageWatch(Watch):
    """A studio job's run as the page watches it."""

    def __init__(self, job: Job, pace: PreviewPace):
        self.job, self.pace = job, pace

    def show(self, progress: StylizeProgress, *, what: str = "loss",
             stopping: bool = False) -> None:
        """Measures the pace, and shows the chunk whose picture is due (`PreviewPace`), the
        last one, and the one a stop ends the run at."""
        job, p = self.job, progress
        due = self.pace.measured(p.iteration, time.perf_counter())
        if due or stopping or p.iteration == p.total_iterations:
            job.update(**after_chunk(job.snapshot, p, time.perf_counter() - job.submitted,
                                     job.show(p.image()), job.stop.is_set()))

    def cell(self, index: int, total: int, cell, sheet: Callable[[], np.ndarray]) -> None:
        job = self.job
        job.update(iteration=index + 1, total=total, frame=job.show(sheet()),
                   message=f"cell {index + 1} of {total}: {cell.quality.summary()}",
                   first_frame=job.snapshot.first_frame or time.perf_counter() - job.submitted)

    def requested(self, finished: bool = False) -> Interrupted | None:
        """Stop, unless the run has just finished: then its work is done."""
        return Interrupted(None) if self.job.stop.is_set() and not finished else None

    def report_at(self, iteration: int) -> bool:
        return self.pace(iteration)
