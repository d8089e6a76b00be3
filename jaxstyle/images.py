"""Reading the images people actually have, and writing results without ever losing a file.

Reading accepts the raster formats of `IMAGE_FORMATS` only: JPEG (EXIF rotation applied), PNG
with alpha (composited on white), grayscale, palette, 16-bit, float and CMYK files; it refuses every
other format before a plugin sees the file, decompression bombs before decoding them, and float
pixels that are not finite. Writing picks the format from the extension and replaces the target
atomically, never an input image.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import jax
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.errors import ImageError
from jaxstyle.files import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
"""What a folder of images (batch contents, video frames) is taken to hold."""

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "PPM")
"""The formats (Pillow's names) every reader accepts: the pictures people stylize, and Netpbm's
PPM/PGM, which video and research tools dump frames as (a plain header and pixels). Pillow's
other plugins are never reached: EPS runs Ghostscript, and the rest are documents, icons or
niche formats whose parsers a crafted file would exercise for nothing."""

_JPEG_QUALITY = 95


def _to_float_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> float32 [H, W, 3] in [0, 1]."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        gray = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in ("I", "F"):
        gray = np.asarray(image, dtype=np.float32)
        top = 65535.0 if mode == "I" and gray.max(initial=0) > 255 else 255.0
        gray = np.clip(gray / (1.0 if mode == "F" and gray.max(initial=0) <= 1 else top), 0, 1)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image file as RGB.

    Args:
      path: a file in one of `IMAGE_FORMATS` (the format is told from the contents, not the
        name).
      max_pixels: refuse images with more pixels than this (checked from the header, before
        anything is decoded).

    Returns:
      float32 [H, W, 3] in [0, 1], upright according to its EXIF orientation.

    Raises:
      ImageError: missing or unreadable file, not an image, another format (named), truncated,
        too large, or float pixels that are NaN or infinite.
    """
    return _read(path, max_pixels, _to_float_rgb)


def load_mask(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads a mask image: white (1) where something applies, black (0) where it does not, and
    transparent pixels count as 0 (not as the white an image is composited on).

    Returns:
      float32 [H, W] in [0, 1]: the grey level times the alpha, upright as `load_image`.

    Raises:
      ImageError: as `load_image`.
    """
    return _read(path, max_pixels, _to_mask)


def _to_mask(image: Image.Image) -> np.ndarray:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0
        return rgba[..., :3].mean(-1) * rgba[..., 3]
    return _to_float_rgb(image).mean(-1)


def _read(path: str | os.PathLike, max_pixels: int, convert) -> np.ndarray:
    """Opens, checks and decodes an image file; `convert` turns the Pillow image into the
    array."""
    with opened(path, max_pixels) as image:
        image.load()
        if image.mode == "F" and not np.isfinite(np.asarray(image)).all():
            raise ImageError(f"{path}: has NaN or infinite pixel values (a float image whose "
                             "numbers are not all finite)")
        return convert(ImageOps.exif_transpose(image))


@contextlib.contextmanager
def opened(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
           ) -> Iterator[Image.Image]:
    """An image file opened by Pillow as one of `IMAGE_FORMATS`, its header read and checked,
    nothing decoded yet; Pillow's errors in the block (decoding included) become `ImageError`s
    naming the file, and its warnings about odd metadata are not shown.

    Raises:
      ImageError: missing file, a folder, another format (named), more than `max_pixels`
        pixels, unreadable, truncated or corrupt (a header whose fields make decoding ask for
        more memory than there is included).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a folder, not an image")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        # Our `max_pixels` governs (the user can raise it); Pillow's fixed check is off meanwhile.
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{path}: {width}x{height} pixels is over the limit of {max_pixels} "
                        "(raise it with --max-pixels if the file is genuine)"
                    )
                yield image
    except ImageError:
        raise
    except UnidentifiedImageError:
        found = _detected_format(path)
        if found is not None:
            raise ImageError(f"{path}: is {_article(found)} {found} file, which jaxstyle does not "
                             f"read (it reads {', '.join(IMAGE_FORMATS)})") from None
        raise ImageError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused as a decompression bomb ({exc})") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except MemoryError:  # Pillow reads a chunk's stated length at once, however large
        raise ImageError(f"{path}: cannot decode image (it asks for more memory than there is; "
                         "a corrupt file or one too large for this machine)") from None
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        # TypeError: a crafted TIFF's strip offsets that are not integers (Pillow seeks to them).
        raise ImageError(f"{path}: cannot decode image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _detected_format(path: str) -> str | None:
    """The format Pillow would have taken a refused file for, from its first bytes alone (each
    plugin's signature test; no plugin opens the file), or None."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(16)  # what Image.open gives the signature tests
    except OSError:
        return None
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            matches = accept is not None and accept(prefix)
        except Exception:  # a signature test that chokes on short input says nothing
            continue
        if matches and not isinstance(matches, str):  # a str is a warning, not a match
            return name
    return None


def _article(name: str) -> str:
    return "an" if name[0] in "AEFHILMNORSX" else "a"


def output_format(path: str | os.PathLike) -> str:
    """Pillow's format name for an output path's extension.

    Raises:
      ImageError: the extension is missing or no writable image format.
    """
    extension = Path(path).suffix.lower()
    formats = Image.registered_extensions()
    fmt = formats.get(extension)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(
            f"{path}: cannot tell the image format from the extension {extension or '(none)'!r}; "
            "use .png, .jpg, .webp, .tif, ..."
        )
    if not _writes_rgb(fmt):
        raise ImageError(f"{path}: Pillow cannot write a colour picture as {fmt} ({extension}); "
                         "use .png, .jpg, .webp, .tif, ...")
    return fmt


@functools.cache
def _writes_rgb(fmt: str) -> bool:
    """Whether `fmt` takes an RGB picture with `save_image`'s options: Pillow has writers that
    refuse RGB (BLP, XBM, ...) or need a plugin, found otherwise only after a whole run."""
    try:
        Image.new("RGB", (2, 2)).save(io.BytesIO(), format=fmt, **_save_options(fmt, "jaxstyle"))
    except Exception:  # each writer raises its own kind (OSError, ValueError, KeyError, ...)
        return False
    return True


def _save_options(fmt: str, description: str | None) -> dict:
    """Pillow save arguments for `fmt`: quality and `description` (see `_metadata`)."""
    return {**({"quality": _JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}),
            **_metadata(fmt, description)}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def input_at(path: str | os.PathLike,
             inputs: Iterable[str | os.PathLike]) -> str | os.PathLike | None:
    """The first of `inputs` that `path` names (the same path, or the same file through a link),
    or None."""
    path = Path(path)
    for other in inputs:
        if _same_file(path, Path(other)) or path.resolve() == Path(other).resolve():
            return other
    return None


def can_write_in(folder: str | os.PathLike) -> bool:
    """Whether a file can be created in `folder`, by creating one: permission bits say nothing
    to root, nor about read-only mounts."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_output_path(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Checks, before any work, that an image can be written to `path`.

    Raises:
      ImageError: unknown format, missing or unwritable folder, a folder in the way, or `path`
        is one of `inputs`.
    """
    path = Path(path)
    output_format(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a folder; give a file name such as {path / 'out.png'}")
    if (other := input_at(path, inputs)) is not None:
        raise ImageError(f"{path}: refusing to overwrite the input image {other}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ImageError(f"{path}: folder {folder} {what}")
    if not can_write_in(folder):
        raise ImageError(f"{path}: folder {folder} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise ImageError(f"{path}: file is not writable")
    return path


def to_uint8(image: np.ndarray | jax.Array) -> np.ndarray:
    """float [H, W, 3] in [0, 1] (clipped) -> uint8 [H, W, 3], rounding to nearest."""
    return np.asarray(np.clip(np.asarray(image, np.float32), 0, 1) * 255 + 0.5, dtype=np.uint8)


def _metadata(fmt: str, description: str | None) -> dict:
    """Pillow save arguments that embed `description` (PNG text chunk, else EXIF)."""
    if not description:
        return {}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", "jaxstyle")
        info.add_text("Description", description)
        return {"pnginfo": info}
    if fmt in ("JPEG", "WEBP", "TIFF"):
        exif = Image.Exif()
        exif[0x010E] = description  # ImageDescription
        exif[0x0131] = "jaxstyle"  # Software
        return {"exif": exif}
    return {}


def save_image(
    path: str | os.PathLike,
    image: np.ndarray | jax.Array,
    inputs: Iterable[str | os.PathLike] = (),
    description: str | None = None,
) -> Path:
    """Writes an RGB image atomically: a temporary file in the same folder, then a rename.

    Args:
      path: the output file; its extension picks the format.
      image: float [H, W, 3] in [0, 1] (clipped).
      inputs: paths that must not be overwritten.
      description: text embedded in the file (PNG text chunk or EXIF ImageDescription), e.g.
        which weights made it.

    Raises:
      ImageError: the path is not writable or is an input; the previous file, if any, is intact.
    """
    path = check_output_path(path, inputs)
    fmt = output_format(path)
    try:
        with atomic_write(path) as f:
            Image.fromarray(to_uint8(image), "RGB").save(f, format=fmt,
                                                         **_save_options(fmt, description))
    except (OSError, ValueError) as exc:
        raise ImageError(f"{path}: could not write the image ({exc.strerror or exc})") from None
    return path
