"""The studio's run folder: the only place its files live, and the only names the page sees.

Images are known to the page by an opaque id (an upload's is the start of its SHA-256, an
example's its file name's stem) and runs by a number; a request never carries a path. Uploads
are checked before they are kept: a byte limit, a short list of raster formats (Pillow's other
plugins, some of which run external programs, are never reached), then `jaxstyle.load_image`
with its pixel limit, decompression-bomb and truncation checks. What is kept in memory (decoded
images, previews) is bounded in bytes: a 100-megapixel image is 1.2 GB decoded. Mask images
(the regions painted on the page, or uploaded) are uploads too, checked the same way and read
by `jaxstyle.images.load_mask`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

import jaxstyle
from jaxstyle.errors import ImageError
from jaxstyle.images import IMAGE_FORMATS, IMAGE_SUFFIXES, load_image, load_mask, to_uint8

PREVIEW_SIDE = 768
"""Longest side of the pictures the page shows of inputs and results (full-size files are
downloaded, not shown)."""

DECODED_CACHE_BYTES = 256 * 2**20
"""Decoded input images kept in memory, in bytes (float32 RGB: 12 bytes a pixel, so a run's
inputs of up to about 20 megapixels in all); a larger image is decoded again for each run."""

PREVIEW_CACHE_BYTES = 64 * 2**20
"""Previews (PNGs of at most `PREVIEW_SIDE` px, up to about 1.7 MB each) kept in memory."""

_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class ImageEntry(NamedTuple):
    """An input image the server holds.

    Attributes:
      id: how the page names it.
      name: the name it came with (an upload's file name), for display.
      path: where it is; never sent to the page.
      width, height: its size in pixels.
      sha256: of the file's bytes (as checkpoints and reports record inputs).
      example: whether it is one of the bundled examples.
    """

    id: str
    name: str
    path: Path
    width: int
    height: int
    sha256: str
    example: bool

    def public(self) -> dict:
        """What the page is told about it."""
        return {"id": self.id, "name": self.name, "width": self.width, "height": self.height,
                "example": self.example}


class MaskEntry(NamedTuple):
    """A mask image the server holds (white: applies; `jaxstyle.images.load_mask`).

    Attributes:
      id: how the page names it (the start of its SHA-256).
      path: where it is; never sent to the page.
      width, height: its size in pixels.
    """

    id: str
    path: Path
    width: int
    height: int


def examples_dir() -> Path | None:
    """The checkout's ``examples/`` folder, or None when jaxstyle runs from an installed wheel."""
    folder = Path(jaxstyle.__file__).resolve().parent.parent / "examples"
    return folder if folder.is_dir() else None


def display_name(filename: str) -> str:
    """A client's file name made safe to show: its last part, printable, at most 80 characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:80] or "upload"


class ByteCache:
    """The most recently used values whose sizes add up to at most `limit` bytes (a value
    larger than `limit` is not kept). Not thread-safe: its owner locks.

    Args:
      limit: bytes.
      size: a value's size in bytes.
    """

    def __init__(self, limit: int, size: Callable[[object], int]):
        self.limit, self.size = limit, size
        self._items: OrderedDict[str, object] = OrderedDict()
        self.bytes = 0

    def get(self, key: str):
        """The value kept for `key` (now the most recently used), or None."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: str, value) -> None:
        """Keeps `value`, dropping the least recently used values until all fit."""
        if key in self._items:
            self.bytes -= self.size(self._items.pop(key))
        if self.size(value) > self.limit:
            return
        self._items[key] = value
        self.bytes += self.size(value)
        while self.bytes > self.limit:
            self.bytes -= self.size(self._items.popitem(last=False)[1])


def preview_png(image: np.ndarray, side: int = PREVIEW_SIDE) -> bytes:
    """float [H, W, 3] in [0, 1] -> PNG bytes, shrunk to `side` px on its longest side."""
    picture = Image.fromarray(to_uint8(image), "RGB")
    if max(picture.size) > side:
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """float [H, W] in [0, 1] -> an 8-bit grey PNG (what `jaxstyle.images.load_mask` reads back
    as the same values, to 1/255)."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(mask, 0.0, 1.0) * 255).astype(np.uint8), "L").save(
        buffer, format="PNG")
    return buffer.getvalue()


class RunFolder:
    """The folder a studio server owns: ``uploads/`` and ``runs/<n>/``, and the examples.

    Thread-safe: the server's request threads add uploads while the worker reads them.

    Args:
      root: the folder (created if missing).
      max_pixels, max_bytes: the limits on an upload.
      run_budget: bytes the run folders may take (`evict` removes the oldest beyond it).
    """

    def __init__(self, root: str | os.PathLike, max_pixels: int, max_bytes: int,
                 run_budget: int = 2**62):
        self.root = Path(root)
        self.max_pixels, self.max_bytes, self.run_budget = max_pixels, max_bytes, run_budget
        self.uploads = self.root / "uploads"
        self.masks = self.uploads / "masks"
        self.runs = self.root / "runs"
        for folder in (self.uploads, self.masks, self.runs):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._images: dict[str, ImageEntry] = {}
        self._masks: dict[str, MaskEntry] = {}
        self._decoded = ByteCache(DECODED_CACHE_BYTES, lambda image: image.nbytes)
        self._previews = ByteCache(PREVIEW_CACHE_BYTES, len)
        for path in sorted((examples_dir() or Path("/nonexistent")).glob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and _ID.fullmatch(path.stem):
                with Image.open(path) as image:
                    width, height = image.size
                self._images[path.stem] = ImageEntry(path.stem, path.name, path, width, height,
                                                     _sha256(path.read_bytes()), True)

    def images(self) -> list[ImageEntry]:
        """The examples, then this session's uploads in the order they came."""
        with self._lock:
            return list(self._images.values())

    def image(self, image_id: str) -> ImageEntry:
        """The image with this id.

        Raises:
          ImageError: no such image (the id is not looked up as a path).
        """
        return self._look_up(self._images, image_id, "image", "upload it again")

    def add_upload(self, data: bytes, filename: str) -> ImageEntry:
        """Checks and keeps an uploaded image.

        Raises:
          ImageError: too many bytes or pixels, not one of `IMAGE_FORMATS` (what every
            reader takes: an upload is refused before it is decoded), truncated or
            undecodable; the message names the upload by its file name.
        """
        name = display_name(filename)
        path, digest, image = self._keep(data, name, self.uploads, load_image)
        entry = ImageEntry(digest[:16], name, path, image.shape[1], image.shape[0], digest, False)
        with self._lock:
            self._images[entry.id] = entry
            self._decoded.put(entry.id, image)
        return entry

    def add_mask(self, data: bytes, filename: str) -> MaskEntry:
        """Checks and keeps an uploaded mask image (of any size: a run resizes it to the
        content, as the command line does).

        Raises:
          ImageError: as `add_upload`.
        """
        name = display_name(filename)
        path, digest, mask = self._keep(data, name, self.masks, load_mask)
        entry = MaskEntry(digest[:16], path, mask.shape[1], mask.shape[0])
        with self._lock:
            self._masks[entry.id] = entry
        return entry

    def mask(self, mask_id: str) -> MaskEntry:
        """The mask with this id.

        Raises:
          ImageError: no such mask (the id is not looked up as a path).
        """
        return self._look_up(self._masks, mask_id, "mask", "paint it again")

    def _look_up(self, table: dict, key: str, what: str, advice: str):
        # An entry by the id the page sent: only ever a key of `table`, never a path.
        with self._lock:
            entry = table.get(key) if isinstance(key, str) else None
        if entry is None:
            raise ImageError(f"no {what} {str(key)[:64]!r} on this server: {advice}")
        return entry

    def load_mask(self, mask_id: str) -> np.ndarray:
        """The mask as float32 [H, W] in [0, 1] (`jaxstyle.images.load_mask`).

        Raises:
          ImageError: no such mask, or it can no longer be read.
        """
        return load_mask(self.mask(mask_id).path, self.max_pixels)

    def _keep(self, data: bytes, name: str, folder: Path,
              reader: Callable[[Path, int], np.ndarray]) -> tuple[Path, str, np.ndarray]:
        """Checks an upload's bytes, format and pixels, decodes it with `reader` and keeps it
        in `folder` named by its SHA-256; returns ``(path, sha256, decoded)``.

        Raises:
          ImageError: as `add_upload`.
        """
        if len(data) > self.max_bytes:
            raise ImageError(f"{name}: {len(data):,} bytes is over the upload limit of "
                             f"{self.max_bytes:,}")
        if not data:
            raise ImageError(f"{name}: the file is empty")
        digest = _sha256(data)
        fd, incoming = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        incoming = Path(incoming)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                with warnings.catch_warnings():  # the limit is ours: `load_image` checks it
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(incoming, formats=IMAGE_FORMATS) as probe:
                        kind = probe.format
            except UnidentifiedImageError:
                raise ImageError(f"{name}: not an image (the studio takes "
                                 f"{', '.join(IMAGE_FORMATS)})") from None
            except Image.DecompressionBombError:  # Pillow's own check, from the header
                pillow = 2 * (Image.MAX_IMAGE_PIXELS or self.max_pixels)
                raise ImageError(f"{name}: its header claims more than {pillow:,} pixels, over "
                                 f"the limit of {min(pillow, self.max_pixels):,} pixels") from None
            try:
                decoded = reader(incoming, self.max_pixels)
            except ImageError as exc:  # its message starts with our path: name the upload
                raise ImageError(str(exc).replace(str(incoming), name)) from None
            path = folder / f"{digest[:16]}.{kind.lower()}"
            os.replace(incoming, path)
        finally:
            incoming.unlink(missing_ok=True)
        return path, digest, decoded

    def load(self, image_id: str) -> np.ndarray:
        """The image as float32 [H, W, 3] in [0, 1].

        Raises:
          ImageError: no such image, or it can no longer be read.
        """
        entry = self.image(image_id)
        with self._lock:
            image = self._decoded.get(image_id)
        if image is None:
            image = load_image(entry.path, self.max_pixels)
            with self._lock:
                self._decoded.put(image_id, image)
        return image

    def preview(self, image_id: str) -> bytes:
        """A PNG of the image at most `PREVIEW_SIDE` px on its longest side."""
        with self._lock:
            found = self._previews.get(image_id)
        if found is None:
            found = preview_png(self.load(image_id))
            with self._lock:
                self._previews.put(image_id, found)
        return found

    def run_dir(self, run_id: int) -> Path:
        """``runs/<run_id>``, created."""
        folder = self.runs / f"{int(run_id):04d}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def evict(self, keep: Collection[int]) -> list[int]:
        """Removes the oldest run folders (by number), except those in `keep`, until the run
        folders take at most `run_budget` bytes; returns the numbers removed, oldest first."""
        sizes = {}
        for folder in self.runs.iterdir():
            if folder.is_dir() and folder.name.isdigit():
                sizes[int(folder.name)] = folder, sum(f.stat().st_size for f in folder.rglob("*")
                                                      if f.is_file())
        total, removed = sum(size for _, size in sizes.values()), []
        for run_id in sorted(sizes):
            if total <= self.run_budget:
                break
            if run_id not in keep:
                folder, size = sizes[run_id]
                shutil.rmtree(folder, ignore_errors=True)
                total -= size
                removed.append(run_id)
        return removed

    def run_bytes(self) -> int:
        """Bytes the run folders take."""
        return sum(f.stat().st_size for f in self.runs.rglob("*") if f.is_file())

    def relative(self, path: Path) -> str:
        """`path` as written in reports: relative to the run folder, or an example's file name."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
