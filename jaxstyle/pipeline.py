"""The one path every command goes through: check, lock, load, open the network, run with
progress and stop requests, finish, report.

A command (``jaxstyle stylize`` and ``resume``, ``batch``, ``sweep``, ``video``, the studio's
runs and sweeps) checks and loads its inputs into a `Command`, and `run_command` walks it
through the rest: its outputs locked, the checks that need them locked, the network opened,
its run watched by a `Transport` (the command line's progress bar and signals,
`jaxstyle.terminal`; the studio's page and Stop button, `jaxstyle.studio.transport`), then its
finish (the files it writes, its report) or what a stop request leaves. What stays in each
command is only what is its own: a checkpoint to resume, a batch's names, a sweep's grid, a
video's frames, the studio's folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxstyle.ahead import Ahead
from jaxstyle.driver import StylizeProgress, StylizeResult, stylize
from jaxstyle.images import save_image
from jaxstyle.inputs import Inputs
from jaxstyle.locks import all_locked
from jaxstyle.options import StyleOptions
from jaxstyle.quality import Quality, measure, scorer
from jaxstyle.reports import output_label, run_report, summary_line
from jaxstyle.run_state import RunState
from jaxstyle.stages import output_shape
from jaxstyle.weights import VGGWeights, resolve_weights, usage_line

Log = Callable[[str], None]


class Interrupted(Exception):
    """A stop request ended a run after a chunk (of an image's iterations, a sweep's cell, a
    video's frame).

    Attributes:
      signum: the signal that asked (the command line), or None (the studio's Stop button).
      reached: what the run had reached then: an image run's newest `StylizeProgress`, a
        sweep's cells; None where the command keeps its own.
    """

    def __init__(self, signum: int | None, reached=None):
        super().__init__(signum)
        self.signum, self.reached = signum, reached

    def at(self, reached) -> Interrupted:
        """This stop request, having reached `reached`."""
        return Interrupted(self.signum, reached)


class Watch:
    """A run as its transport watches it: its progress shown as it comes, its stop requests
    heard at the end of each chunk. Each method does nothing unless a transport's does."""

    def show(self, progress: StylizeProgress, *, what: str = "loss",
             stopping: bool = False) -> None:
        """A chunk of an image run ended; `what` names its loss, `stopping`: the run ends
        here on a stop request."""

    def step(self, n: int = 1, description: str | None = None) -> None:
        """`n` more units (a video's frames) are done; `description`: what runs now."""

    def cell(self, index: int, total: int, cell, sheet: Callable[[], np.ndarray]) -> None:
        """Cell `index` of a sweep's `total` is done (a `jaxstyle.sweeps.Cell`); `sheet()` is
        the contact sheet so far."""

    def requested(self, finished: bool = False) -> Interrupted | None:
        """The stop request pending, as the exception that ends the run, or None. `finished`:
        the run has just done its last chunk, and a transport may let it finish rather than
        stop there (the studio does; the command line stops, keeping what it was asked to)."""
        return None

    def report_at(self, iteration: int) -> bool:
        """Whether the transport wants a chunk to end after `iteration` (the studio's
        previews); where chunks end never changes a result."""
        return False

    def log(self, message: str) -> None:
        """A line of progress, shown with the progress."""

    def close(self) -> None:
        """Ends the progress shown (before a stopped run says what it kept)."""


class Transport:
    """Where a command's messages and progress go and where its stop requests come from:
    `jaxstyle.terminal.Terminal` for the command line, the studio's page for a studio job."""

    def log(self, message: str) -> None:
        """A progress message (a quiet command line drops it)."""

    def say(self, message: str) -> None:
        """A message the user must see even when quiet: what was skipped, where work went."""

    @contextlib.contextmanager
    def watching(self, total: int | None, unit: str = "it", initial: int = 0
                 ) -> Iterator[Watch]:
        """Watches a run of `total` units (None: unknown) from `initial` for the block."""
        yield Watch()


class Network(NamedTuple):
    """The network a command runs, and how its outputs name it.

    Attributes:
      weights: the VGG weights.
      path: the file they came from ('random' for random weights).
      label: what output files say about the network that made them.
    """

    weights: VGGWeights
    path: str
    label: str


def open_network(spec: str | None, seed: int, log: Log) -> Network:
    """Resolves ``--weights`` (`jaxstyle.weights.resolve_weights`) and logs which network runs."""
    weights, path = resolve_weights(spec, seed)
    log(usage_line(weights))
    return Network(weights, path, output_label(weights))


def network_of(weights: VGGWeights, path: str) -> Network:
    """A network already loaded (the studio keeps one open), as `open_network` gives one."""
    return Network(weights, path, output_label(weights))


class Outcome(NamedTuple):
    """How a command ended.

    Attributes:
      status: "done" (it ran to its end) or "stopped" (on a stop request, after a chunk).
      stop: the signal that stopped it (None: the studio's Stop button, or not stopped).
      image: float32 [H, W, 3] RGB in [0, 1]: the result, the picture reached or a sweep's
        sheet; None for commands of many pictures.
      iteration: iterations done (a sweep: cells done).
      state: where a run stands, to continue it (`stylize`'s ``resume``), or None.
      report: the report written, or None.
      skipped: inputs skipped as unusable (a batch's content images).
    """

    status: str
    stop: int | None = None
    image: np.ndarray | None = None
    iteration: int = 0
    state: RunState | None = None
    report: dict | None = None
    skipped: int = 0


EXIT_SOME_FAILED = 1
"""The exit code of a command that skipped some of its inputs (and did the rest)."""


def exit_code(outcome: Outcome) -> int:
    """A command line's exit code for `outcome`: 0, `EXIT_SOME_FAILED`, or 128 + the signal
    that stopped it."""
    if outcome.status == "stopped":
        return 128 + (outcome.stop or 0)
    return EXIT_SOME_FAILED if outcome.skipped else 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Command:
    """A command checked and its inputs loaded, before any work: what `run_command` locks,
    opens a network for, runs, and finishes. Each command's subclass holds what is its own and
    writes `run`, `stopped` and `finish`.

    Attributes:
      options: the run's options (``options.seed`` makes random weights).
      outputs: the files it writes, each locked while it runs (`jaxstyle.locks.locked`).
      weights: the network to open (a file, 'random', or None to look for converted weights).
      network: the network, once open (`start`).
    """

    options: StyleOptions
    outputs: tuple[Path, ...] = ()
    weights: str | None = None
    network: Network | None = None

    def progress(self) -> tuple[int | None, str, int]:
        """What its progress counts: (total or None, unit, done before this run)."""
        return None, "it", 0

    def claim(self, transport: Transport) -> Command:
        """Runs the checks that need its outputs locked (what is there already); returns the
        command with what they found."""
        return self

    def start(self, network: Network, transport: Transport) -> Command:
        """The command with its network, and what it prepares once that is open."""
        return dataclasses.replace(self, network=network)

    def run(self, watch: Watch):
        """Does the work, showing progress on `watch`; raises `Interrupted` on a stop request
        that `watch` hears. Returns what `finish` takes."""
        raise NotImplementedError

    def stopped(self, stop: Interrupted, transport: Transport) -> Outcome:
        """Keeps what a stop request left and says where it went."""
        raise NotImplementedError

    def finish(self, result, transport: Transport) -> Outcome:
        """Writes what the run made and reports it."""
        raise NotImplementedError


def run_command(command: Command, transport: Transport, network: Network | None = None
                ) -> Outcome:
    """Walks a checked and loaded `command` through the rest of the pipeline: locks its
    outputs, runs its checks that need them locked (`Command.claim`), opens its network
    (unless `network` is given: the studio keeps one open), runs it watched by `transport`
    (progress, stop requests), then finishes it, or keeps what a stop request left.

    Raises:
      JaxstyleError: an output another run holds, or what the command raises (bad input
        found under the lock, a diverging loss).
    """
    with all_locked(command.outputs):
        command = command.claim(transport)
        network = network or open_network(command.weights, command.options.seed, transport.log)
        command = command.start(network, transport)
        with transport.watching(*command.progress()) as watch:
            try:
                result = command.run(watch)
            except Interrupted as stop:
                watch.close()
                return command.stopped(stop, transport)
        return command.finish(result, transport)


Own = Callable[[StylizeProgress, bool], None]
"""What a command does itself after each chunk of an image run: given its progress and whether
a stop request ends the run there (a checkpoint, a picture every so often)."""


def chunk_callback(watch: Watch, *, what: str = "loss", own: Own | None = None
                   ) -> Callable[[StylizeProgress], None]:
    """`stylize`'s ``callback`` for a watched run: after each chunk it asks `watch` for a stop
    request, shows the progress, calls `own`, and ends the run with `Interrupted` (holding the
    progress) if a stop was asked."""

    def callback(p: StylizeProgress) -> None:
        stop = watch.requested(finished=p.iteration >= p.total_iterations)
        watch.show(p, what=what, stopping=stop is not None)
        if own is not None:
            own(p, stop is not None)
        if stop is not None:
            raise stop.at(p)

    return callback


def scoring_ahead(inputs: Inputs, network: Network, options: StyleOptions) -> Ahead:
    """The quality line's preparation for a run's output (`jaxstyle.quality.scorer`: the
    styles' and the photo's own scores), as a background job for `stylize_watched` to start
    after the run's first progress and `finish_image` to take: made while the run optimizes,
    it leaves only the output's own scores for the end (at 256 px, seconds of every picture
    from an empty compilation cache)."""
    shape = output_shape(inputs.content.shape, options.plan.size)
    return Ahead([(0, functools.partial(scorer, network.weights, shape, inputs.content,
                                        inputs.styles, options))])


def stylize_watched(inputs: Inputs, network: Network, options: StyleOptions, watch: Watch, *,
                    own: Own | None = None, ends: Callable[[int], bool] | None = None,
                    resume: RunState | None = None, style_cache: dict | None = None,
                    scoring: Ahead | None = None) -> StylizeResult:
    """The run step of one image: `jaxstyle.stylize` on `inputs` (content, styles, start
    image, masks) with `chunk_callback`.

    Args:
      own: the command's own step after each chunk (`Own`).
      ends: iterations after which the command needs a chunk to end (to checkpoint, to save a
        picture), besides those the transport wants (`Watch.report_at`).
      resume: continue from this state; style_cache: `stylize`'s.
      scoring: `scoring_ahead`'s job, started after the first chunk (once the first scale's
        compiling, which the run waits for, is done); a run that raises drops it if it has
        not started (a stopped or failed run is not scored).

    Raises:
      Interrupted: a stop request, after a chunk; ``reached`` is that chunk's progress.
    """
    def report_at(iteration: int) -> bool:
        return (ends is not None and ends(iteration)) or watch.report_at(iteration)

    def after_chunk(p: StylizeProgress, stopping: bool) -> None:
        if scoring is not None and not stopping:
            scoring.start()
        if own is not None:
            own(p, stopping)

    try:
        return stylize(inputs.content, inputs.styles, network.weights, options,
                       init_image=inputs.init_image, style_masks=inputs.style_masks,
                       content_mask=inputs.content_mask,
                       callback=chunk_callback(watch, own=after_chunk), report_at=report_at,
                       resume=resume, style_cache=style_cache)
    except BaseException:
        if scoring is not None:
            scoring.cancel()
        raise


class Reached(NamedTuple):
    """A picture a run reached, as its report describes it: a finished `StylizeResult`'s
    fields, or (`Reached.stopped`) a stopped run's, from its newest progress."""

    image: np.ndarray
    history: dict
    losses: dict
    evaluations: int
    timings: dict
    scales: tuple = ()

    @classmethod
    def stopped(cls, p: StylizeProgress, seconds: float) -> Reached:
        """A run stopped after the chunk `p`, `seconds` after it started."""
        return cls(p.image(), p.history, {"total": p.value, **p.components}, p.evaluations,
                   {"total": seconds})


def finish_image(output: Path, reached: StylizeResult | Reached, content: np.ndarray,
                 inputs: Inputs, options: StyleOptions, network: Network, log: Log | None, *,
                 ran: int | None = None, fields: dict | None = None,
                 scoring: Ahead | None = None) -> tuple[Quality, dict]:
    """The finish and report steps of one image: writes `reached` to `output`, measures its
    quality, logs its summary and quality lines (if `log`: a finished result's), and makes its
    JSON report (the caller writes it where it goes).

    Args:
      content: the content image it was made from, float32 [H, W, 3].
      inputs: the styles and the input files, which `output` may not overwrite.
      ran: iterations run by this process (default: all of its history); the time per
        iteration is the optimizer's time over these.
      fields: what the command adds to the report (its inputs, a resume point, a status).
      scoring: `scoring_ahead`'s job for this run (taken, and started if it was not), or None.

    Returns:
      Its `Quality`, and its report.
    """
    save_image(output, reached.image, inputs.paths, network.label)
    quality = _measure(reached.image, content, inputs, options, network, scoring)
    done = len(reached.history.get("total", ()))  # a scale that stopped early ran fewer
    timings = dict(reached.timings)
    if "optimize" in timings:
        timings["per_iteration"] = timings["optimize"] / max(1, done if ran is None else ran)
    if log is not None:
        log(summary_line(output, reached, content.shape, done, timings["per_iteration"]))
        log(f"quality: {quality.summary()}")
    details = dict(fields or {})
    details.setdefault("output", str(output))
    details["scales"] = [{"size": list(size), "iterations": n, "seconds": seconds}
                         for size, n, seconds in reached.scales]
    return quality, run_report(network.weights, options, reached.losses, reached.evaluations,
                               timings, quality, reached.history, **details)


def _measure(image: np.ndarray, content: np.ndarray, inputs: Inputs, options: StyleOptions,
             network: Network, scoring: Ahead | None) -> Quality:
    """`jaxstyle.quality.measure`, from `scoring`'s preparation when it has one for an output
    of this shape (the same figures)."""
    if scoring is not None:
        scoring.start()
        prepared = scoring.take(0)
        if prepared is not None and prepared.shape == image.shape[:2]:
            return prepared.measure(image)
    return measure(network.weights, image, content, inputs.styles, options)
