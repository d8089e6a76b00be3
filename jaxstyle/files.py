"""Atomic file replacement: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yields a binary file that replaces `path` only when the block finishes without error.

    The data goes to a hidden temporary file in the same folder, is flushed to disk, then renamed
    over `path`; on any error (a full disk, Ctrl-C) the temporary file is removed and the previous
    `path`, if any, is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's contents, read in 1 MiB blocks."""
    return _digest_of(path, hashlib.sha256())


def md5_of(path: str | os.PathLike) -> str:
    """Hex MD5 of a file's contents (to match checksums publishers give as MD5, not for
    security)."""
    return _digest_of(path, hashlib.md5(usedforsecurity=False))


def _digest_of(path: str | os.PathLike, digest) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_tagged_msgpack(
    path: str | os.PathLike, format_name: str, version: int | tuple[int, ...],
    error: type[Exception], kind: str, advice: str,
) -> dict:
    """Reads a flax msgpack file whose top level carries ``format`` and ``version`` tags
    (`version`: the one this jaxstyle writes, or every version it reads, newest last).

    Raises:
      error: the file is truncated or corrupt, another format, or another version (the message
        ends with `advice`).
    """
    from flax import serialization

    try:
        raw = serialization.msgpack_restore(Path(path).read_bytes())
    except Exception as exc:  # msgpack raises many types on damaged input
        raise error(f"{path}: corrupt or truncated {kind} ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != format_name:
        raise error(f"{path}: not a {kind} file of this jaxstyle's format ({format_name}); "
                    f"{advice}")
    versions = version if isinstance(version, tuple) else (version,)
    found = raw.get("version")
    if not isinstance(found, int) or isinstance(found, bool) or found not in versions:
        shown = f"{found!r:.40}" if isinstance(found, (int, str)) else type(found).__name__
        raise error(
            f"{path}: {kind} format version {shown} is not this jaxstyle's "
            f"({versions[-1]}); {advice}"
        )
    return raw
