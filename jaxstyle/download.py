"""Downloading published VGG19 weights: resumable, verified, converted, then moved into place.

The raw file is fetched into ``<folder>/<published name>.part`` (resumed with an HTTP Range
request after a dropped connection), verified against the SHA-256 prefix its published name
carries (and the full checksum where recorded), converted, and only then written atomically as
the converted file. A failed or mismatched download leaves nothing that could pass for weights.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from jaxstyle.errors import WeightsError
from jaxstyle.files import sha256_of
from jaxstyle.weights import SOURCES, convert, default_weights_dir, save_converted

_CHUNK = 1 << 20
_ATTEMPTS = 4  # one try plus three resumptions after dropped connections


def _hash_prefix_in_name(url: str) -> str | None:
    """torchvision's convention: ``name-<first hex digits of the SHA-256>.pth``."""
    match = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$", url.rsplit("/", 1)[-1])
    return match.group(1) if match else None


def _offline_help(url: str, reason: str, source_name: str) -> str:
    return (
        f"could not download {url} ({reason}). Download it by hand on a machine with internet, "
        f"then run 'jaxstyle weights convert FILE' (add --preprocessing {source_name} if the "
        "file was renamed and is not recognised), or try the tool with --weights random"
    )


def _fetch(url: str, part: Path, timeout: float, quiet: bool) -> None:
    """Appends the rest of `url` to `part`, resuming from its current size."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "jaxstyle"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the file is complete
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=quiet, leave=False,
        ) as bar:
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download_source(
    name: str,
    folder: str | os.PathLike | None = None,
    url: str | None = None,
    quiet: bool = False,
    timeout: float = 10.0,
) -> Path:
    """Downloads, verifies and converts a published weights file.

    Args:
      name: a key of `jaxstyle.weights.SOURCES` ("caffe" or "torchvision").
      folder: where the converted file goes (default: the checkout's weights/, else the cache).
      url: fetch from here instead of the published address (a mirror); its file name must
        carry the same SHA-256 prefix convention for verification.
      quiet: no progress bar.
      timeout: seconds to wait on the network before giving up.

    Returns:
      The path of the converted ``.msgpack`` file.

    Raises:
      WeightsError: offline, HTTP error, checksum mismatch or unconvertible file; nothing is left
        that could be taken for good weights.
    """
    if name not in SOURCES:
        raise WeightsError(f"unknown source {name!r}; choose from {sorted(SOURCES)}")
    source = SOURCES[name]
    url = url or source.url
    folder = Path(folder) if folder else default_weights_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create {folder}: {exc.strerror or exc}") from None
    part = folder / f"{source.filename}.part"
    for attempt in range(_ATTEMPTS):
        try:
            _fetch(url, part, timeout, quiet)
            break
        except urllib.error.HTTPError as exc:
            raise WeightsError(_offline_help(url, f"HTTP {exc.code} {exc.reason}", name)) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeightsError(_offline_help(url, str(reason), name)) from None
        except (http.client.HTTPException, ConnectionError) as exc:
            if attempt == _ATTEMPTS - 1:
                raise WeightsError(
                    f"download of {url} kept breaking off ({type(exc).__name__}); run the same "
                    f"command again to resume from {part}"
                ) from None
    checksum = sha256_of(part)
    expected = source.sha256 or _hash_prefix_in_name(url) or source.sha256_prefix
    if not checksum.startswith(expected):
        part.unlink()
        raise WeightsError(
            f"checksum mismatch for {url}: expected SHA-256 starting {expected}, got "
            f"{checksum[:16]}...; the download was deleted"
        )
    try:
        weights = convert(part, source.preprocessing)
    except WeightsError:
        part.unlink()
        raise
    weights = type(weights)(weights.params, weights.preprocessing, source.name, checksum)
    target = save_converted(weights, folder / source.converted_filename)
    part.unlink()
    return target
