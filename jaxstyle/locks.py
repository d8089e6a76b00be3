"""The lock a command holds on each output while it writes it, so that two runs (two hosts
sharing a folder, two terminals) never write one file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from jaxstyle.errors import JaxstyleError

_LOCK_TRIES = 5


def lock_path(output: Path) -> Path:
    """The lock file a run holds while it writes `output` (hidden, next to it)."""
    return output.with_name(f".{output.name}.lock")


@contextlib.contextmanager
def locked(output: Path) -> Iterator[None]:
    """Holds `lock_path(output)` for the block (an advisory ``flock``: released by the system
    when the process ends however it ends), so two runs never write one output.

    Raises:
      JaxstyleError: another process holds it.
    """
    import fcntl

    path = lock_path(output)
    for _ in range(_LOCK_TRIES):
        try:
            handle = open(path, "a+")
        except OSError as exc:
            raise JaxstyleError(f"{output}: cannot lock it ({exc.strerror or exc})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()  # not ours: the file stays for the run that holds it
            raise JaxstyleError(f"{output}: another jaxstyle run ({holder}) is writing it; wait "
                                "for it to finish or choose another output") from None
        if _same_inode(handle, path):
            break
        handle.close()  # locked a file its holder removed as it finished: lock the new one
    else:
        raise JaxstyleError(f"{output}: cannot lock it (its lock file keeps changing)")
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held, so no one locks it in between
        handle.close()


@contextlib.contextmanager
def all_locked(outputs: Iterable[Path]) -> Iterator[None]:
    """Holds `locked` on every one of `outputs` (in order) for the block."""
    with contextlib.ExitStack() as held:
        for output in outputs:
            held.enter_context(locked(output))
        yield


def _same_inode(handle, path: Path) -> bool:
    """Whether the open `handle` is still the file at `path`."""
    try:
        here, there = os.fstat(handle.fileno()), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
