"""A studio job as the page sees it: the `Request` it made, the `Job` with its newest `Snapshot`
and picture, and what each chunk of a run changes in the snapshot (`after_chunk`).

A snapshot is replaced whole after every chunk (readers never see half an update), and only the
newest picture is kept, with a sequence number; older pictures are dropped, so a slow page
always gets the newest one and nothing queues up.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import numpy as np

from jaxstyle.checkpoint import RunState
from jaxstyle.driver import StylizeProgress
from jaxstyle.options import StyleOptions

_PLOT_POINTS = 400  # loss points a snapshot carries at most (the page's plot)
_PACE_DECAY = 0.7  # weight of the earlier chunks in the time per iteration shown


class Request(NamedTuple):
    """A job as the page asked for it.

    Attributes:
      kind: "run" or "sweep".
      content: the content image's id; styles: the style images' ids.
      options: the options (a sweep's apply to every cell).
      axes: a sweep's ``(option, values)`` pairs; empty for a run.
      resume: for a run that continues another: that run's id and state.
      style_masks: a run's regions: per style a mask's id, or None (everywhere); None for
        no regions.
      content_mask: the id of the mask where the content loss counts; None: everywhere.
    """

    kind: str
    content: str
    styles: tuple[str, ...]
    options: StyleOptions
    axes: tuple = ()
    resume: tuple[int, RunState] | None = None
    style_masks: tuple[str | None, ...] | None = None
    content_mask: str | None = None


class Snapshot(NamedTuple):
    """What the page is told about a job, as of its last chunk.

    Attributes:
      job: its id; kind: "run" or "sweep".
      status: "queued", "running", "stopping", "done", "stopped" or "failed".
      message: a sentence for the page (an error's message when failed).
      iteration: iterations done (a sweep: cells done); total: of the whole job (with a stop
        tolerance, the most it runs).
      loss: the total loss now (None before the first chunk).
      per_iteration: seconds per iteration at the scale running, from `per_work` (None until
        a second chunk).
      eta: seconds left at that pace, if it runs to `total`, every later scale's iterations
        counted by their pixels.
      work_done: the run's pixel-iterations done (`jaxstyle.driver.StylizeProgress.work`);
        per_work: seconds per pixel-iteration, a moving average over the chunks since the first.
      frame: sequence number of the newest picture (0: none yet).
      first_frame: seconds from submission to the first picture.
      elapsed: seconds since submission; chunk_at: at the last chunk's end (a stopped run's:
        the chunk the stop waited for).
      stop_asked: seconds from submission to Stop (None: not asked).
      plot: ``(iteration, loss)`` after each chunk, thinned to a few hundred points.
      record: the history entry, once the job has ended.
    """

    job: int
    kind: str
    status: str
    message: str = ""
    iteration: int = 0
    total: int = 0
    loss: float | None = None
    per_iteration: float | None = None
    eta: float | None = None
    work_done: int = 0
    per_work: float | None = None
    frame: int = 0
    first_frame: float | None = None
    elapsed: float = 0.0
    chunk_at: float = 0.0
    stop_asked: float | None = None
    plot: tuple = ()
    record: dict | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "stopped", "failed")


class Job:
    """A submitted job: its request, its newest `Snapshot` and picture, and its stop flag."""

    def __init__(self, job_id: int, request: Request):
        self.id, self.request = job_id, request
        self.submitted = time.perf_counter()
        self.mask_files: dict = {"style": [], "content": None}  # saved in the run's folder
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._snapshot = Snapshot(job_id, request.kind, "queued", "waiting for the network")
        self._frame: tuple[int, np.ndarray | None] = (0, None)

    @property
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def update(self, **changes) -> Snapshot:
        """Replaces the snapshot with one that has `changes` (and the elapsed time)."""
        with self._lock:
            self._snapshot = self._snapshot._replace(
                elapsed=time.perf_counter() - self.submitted, **changes)
            return self._snapshot

    def frame(self) -> tuple[int, np.ndarray | None]:
        """``(sequence number, float32 [H, W, 3] picture)`` of the newest picture."""
        with self._lock:
            return self._frame

    def forget_picture(self) -> None:
        with self._lock:
            self._frame = (self._frame[0], None)

    def show(self, image: np.ndarray) -> int:
        """Makes `image` the newest picture; returns its sequence number."""
        with self._lock:
            seq = self._frame[0] + 1
            self._frame = (seq, image)
        return seq


def after_chunk(before: Snapshot, p: StylizeProgress, elapsed: float, frame: int,
                stopping: bool) -> dict:
    """What a chunk changes in a run's snapshot: the iteration, loss and picture, and the
    pace measured from the previous chunk of this job (`elapsed`: seconds since submission)."""
    changes = {"iteration": p.iteration, "total": p.total_iterations, "loss": p.value,
               "frame": frame, "status": "stopping" if stopping else "running", "message": "",
               "plot": thin_plot(before.plot + ((p.iteration, p.value),))}
    if before.first_frame is None:
        changes["first_frame"] = elapsed
    # Paced in pixel-iterations, so that a pace measured at a coarse scale predicts the finer
    # ones, and the estimate does not jump when a scale ends.
    done, total = p.work()
    window = p.stage.window
    changes["work_done"] = done
    if before.frame and done > before.work_done:  # a chunk of this job came before
        pace = (elapsed - before.chunk_at) / (done - before.work_done)
        if before.per_work is not None:  # short chunks vary: a moving average
            pace = (1 - _PACE_DECAY) * pace + _PACE_DECAY * before.per_work
        changes.update(per_work=pace, per_iteration=pace * window[2] * window[3],
                       eta=pace * (total - done))
    return {**changes, "chunk_at": elapsed}


def thin_plot(points: tuple) -> tuple:
    """At most `_PLOT_POINTS` of `points`, keeping the first and the newest."""
    if len(points) <= _PLOT_POINTS:
        return points
    step = len(points) / (_PLOT_POINTS - 1)
    return tuple(points[int(i * step)] for i in range(_PLOT_POINTS - 1)) + (points[-1],)
