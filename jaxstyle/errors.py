"""Errors that describe bad user input; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from collections.abc import Sequence


class JaxstyleError(ValueError):
    """Base class for errors caused by the user's input rather than by a bug.

    A message names an option by its `jaxstyle.StyleOptions` field, never by a command-line
    flag: ``size: the output ...`` or ``use tile_size=48 or more``.

    Attributes:
      options: the fields the message names that way beyond its leading ``field:``, so that a
        front end can word them its own way (the command line writes its flags,
        `jaxstyle.messages`); empty when it names none.
    """

    options: tuple[str, ...] = ()

    def __init__(self, *args, options: Sequence[str] = ()):
        super().__init__(*args)
        self.options = tuple(options)


class ImageError(JaxstyleError):
    """An image file is missing, unreadable, truncated, or not an image."""


class WeightsError(JaxstyleError):
    """A weights file is missing, malformed, unsafe, or does not match a VGG layout."""


class OptimizationError(JaxstyleError):
    """The optimization diverged (a loss became NaN or infinite).

    Attributes:
      last_good: the `jaxstyle.optimize.Progress` of the `jaxstyle.minimize` call's last good
        iteration (its image and optimizer state), so callers can keep what was achieved; None
        when none is known.
    """

    def __init__(self, message: str, last_good=None):
        super().__init__(message)
        self.last_good = last_good


class RunDivergedError(OptimizationError):
    """A stylization's optimization diverged: what `jaxstyle.stylize` and
    `jaxstyle.stylize_batch` raise.

    Attributes:
      last_good: as for `OptimizationError`: the diverged stage's own `Progress`.
      run: the whole run's `jaxstyle.StylizeProgress` at that iteration: its picture
        (``run.image()``) and the state to resume from (``run.run_state()``).
    """

    def __init__(self, message: str, last_good, run):
        super().__init__(message, last_good)
        self.run = run


class CheckpointError(JaxstyleError):
    """A checkpoint is corrupt, from another version, or does not match the run resumed."""


class OutOfMemoryError(JaxstyleError):
    """A run's estimated peak memory exceeds what is available; nothing was allocated."""


def count(n: int, noun: str) -> str:
    """'1 image', '2 images': counts in messages."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
