"""The command line's transport (`Terminal`): messages and one progress bar on stderr, and
SIGINT/SIGTERM as stop requests."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator

import numpy as np

from jaxstyle.pipeline import Interrupted, Log, Transport, Watch


class ProgressDisplay:
    """The one progress bar of every command (tqdm on stderr): iterations of the whole run
    with the loss, the scale and tile running and the time left, or frames of a video."""

    def __init__(self, total: int | None, *, initial: int = 0, unit: str = "it",
                 enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit=unit, disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True, delay=0.1)

    def show(self, progress, *, what: str = "loss") -> None:
        """Shows a `jaxstyle.StylizeProgress`; a run whose total changed (a batch's next size
        group) restarts the bar."""
        bar = self.bar
        if bar.total != progress.total_iterations or progress.iteration < bar.n:
            bar.reset(total=progress.total_iterations)
        stage = progress.stage
        where = (f" scale {stage.scale + 1}" if stage.scale else "") + (
            f" tile {stage.tile + 1}/{stage.tiles}" if stage.tiles > 1 else "")
        bar.set_postfix_str(f"{what} {progress.value:.4g}{where}", refresh=False)
        bar.update(progress.iteration - bar.n)

    def step(self, n: int = 1, description: str | None = None) -> None:
        """Counts `n` units done (a video's frames, a sweep's cells)."""
        if description is not None:
            self.bar.set_description(description, refresh=False)
        self.bar.update(n)

    def log(self, log: Log) -> Log:
        """`log` made to write its lines above the bar instead of through it."""
        def write(message: str) -> None:
            with self.bar.external_write_mode(file=sys.stderr):
                log(message)

        return write

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def stop_requests(log: Log) -> Iterator[list[int]]:
    """The first SIGINT/SIGTERM asks the run to stop after the current chunk (the list it
    yields then holds the signal); a second one gets the default action and ends the process at
    once."""
    requested: list[int] = []

    def handler(signum, _frame):
        requested.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        log("\nstopping after the current chunk (press Ctrl-C again to quit at once)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Terminal(Transport):
    """The command line's transport.

    Args:
      log: where progress messages go (a quiet command line's drops them).
      progress_bar: whether to show the bar.
    """

    def __init__(self, log: Log, progress_bar: bool = True):
        self._log, self.progress_bar = log, progress_bar

    def log(self, message: str) -> None:
        self._log(message)

    def say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def watching(self, total: int | None, unit: str = "it", initial: int = 0
                 ) -> Iterator[Watch]:
        """The bar, and SIGINT/SIGTERM heard as stop requests (`stop_requests`)."""
        with ProgressDisplay(total, initial=initial, unit=unit,
                             enabled=self.progress_bar) as display, \
                stop_requests(self._log) as stop:
            yield _BarWatch(display, stop, display.log(self._log))


class _BarWatch(Watch):
    """A run watched on the terminal: its progress on the bar, the signals it was sent."""

    def __init__(self, display: ProgressDisplay, stop: list[int], above: Log):
        self.display, self.stop, self.above = display, stop, above

    def show(self, progress, *, what: str = "loss", stopping: bool = False) -> None:
        self.display.show(progress, what=what)

    def step(self, n: int = 1, description: str | None = None) -> None:
        self.display.step(n, description)

    def cell(self, index: int, total: int, cell, sheet: Callable[[], np.ndarray]) -> None:
        settings = ", ".join(f"{k}={v}" for k, v in cell.settings.items())
        self.above(f"[{index + 1}/{total}] {settings}: {cell.quality.summary()} "
                   f"({cell.seconds:.0f} s)")
        self.display.step()

    def requested(self, finished: bool = False) -> Interrupted | None:
        return Interrupted(self.stop[0]) if self.stop else None

    def log(self, message: str) -> None:
        self.above(message)

    def close(self) -> None:
        self.display.close()
