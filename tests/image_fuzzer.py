"""Feeds `load_image` and `load_mask` mutated files of every format of `IMAGE_FORMATS`, in a child
process with bounded memory (`fuzzing.bounded_memory`).

    python tests/image_fuzzer.py SEEDS CASES SEED KEEP  # CASES mutants of the files in SEEDS

Mutants are drawn from a `random.Random(SEED)`, so a run is reproduced by its seed and count:
byte-level mutations (bit flips, interesting integers, cuts, insertions), truncation, edits of
a header's fields (a PNG chunk's bytes with its CRC recomputed, a TIFF directory's entries, a
BMP's, GIF's, JPEG's, WebP's or PPM's sizes, depths and offsets), and huge dimensions written
into the header, each possibly followed by byte-level ones. Every file is read with
`MAX_PIXELS` as the limit, which bounds what a header may make the reader allocate.
"""

from __future__ import annotations

import random
import re
import struct
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np
from fuzzing import bounded_memory, integer, main, mutate_bytes, run_script, summary

MAX_PIXELS = 1_000_000
"""The pixel limit the files are read with (``--max-pixels``; a 1000 x 1000 picture decodes to
12 MB of float32 RGB): what a header may claim and still be decoded."""

# Sizes that a header may claim: empty, at and past the pixel limit, past 16, 31 and 32 bits.
SIZES = (0, 1, 2, 999, 1000, 1001, 0x3FFF, 0x4000, 0xFFFF, 0x10000, 100_000, 0xFFFFFF,
         2**31 - 1, 2**31, 2**32 - 1)


def run_child(*args: str, timeout: float = 600) -> dict:
    """Runs this file as a child process with `args` and returns its report."""
    return run_script(__file__, *args, timeout=timeout)


def seed_files(folder: Path) -> dict[str, Path]:
    """Small valid files of every format of `IMAGE_FORMATS`, in the modes people have: RGB,
    alpha, grayscale, palette (with transparency), 16-bit, float, CMYK, EXIF-rotated JPEG,
    two-frame GIF and WebP, Netpbm's PPM and PGM. Named ``FORMAT-MODE.ext``."""
    from PIL import Image

    from jaxstyle.images import IMAGE_FORMATS

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 8, 3), np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (6, 8, 4), np.uint8))
    gray = rgb.convert("L")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    wide = Image.fromarray(rng.integers(0, 65536, (6, 8), np.uint16))
    float32 = Image.fromarray(rng.random((6, 8), np.float32))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    seeds = {
        "PNG": {"rgb": (rgb, {}), "rgba": (rgba, {}), "l": (gray, {}), "p": (palette, {}),
                "i16": (wide, {})},
        "JPEG": {"rgb": (rgb, {}), "l": (gray, {}), "cmyk": (rgb.convert("CMYK"), {}),
                 "exif": (rgb, {"exif": exif.tobytes()}),
                 "progressive": (rgb, {"progressive": True})},
        "WEBP": {"rgb": (rgb, {}), "rgba": (rgba, {}), "lossless": (rgb, {"lossless": True}),
                 "anim": (rgb, {"save_all": True, "append_images": [gray.convert("RGB")]})},
        "TIFF": {"rgb": (rgb, {}), "f": (float32, {}), "i16": (wide, {}),
                 "cmyk": (rgb.convert("CMYK"), {}), "lzw": (rgb, {"compression": "tiff_lzw"}),
                 "pages": (rgb, {"save_all": True, "append_images": [rgb]})},
        "BMP": {"rgb": (rgb, {}), "p": (palette, {}), "l": (gray, {}), "rgba": (rgba, {})},
        "GIF": {"p": (palette, {}), "anim": (palette, {"save_all": True,
                                                       "append_images": [gray.convert("P")]})},
        "PPM": {"rgb": (rgb, {}), "l": (gray, {})},
    }
    assert set(seeds) == set(IMAGE_FORMATS), "a format of IMAGE_FORMATS without seeds"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt, modes in seeds.items():
        for mode, (image, extra) in modes.items():
            path = folder / f"{fmt}-{mode}.{fmt.lower()}"
            image.save(path, format=fmt, **extra)
            files[path.stem] = path
    return files


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, length) of each chunk of a PNG (start: its length field)."""
    found, pos = [], 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        found.append((pos, length))
        pos += 12 + length
    return found


def _png_edit(data: bytes, rng: random.Random, size: tuple[int, int] | None) -> bytes:
    """A PNG with a chunk's data changed (IHDR's size or fields, or any chunk's bytes) and its
    length and CRC recomputed, so that the change reaches the decoder."""
    chunks = _png_chunks(data)
    if not chunks:
        return mutate_bytes(data, rng)
    start, length = chunks[0] if size or rng.random() < 0.4 else rng.choice(chunks)
    kind, body = data[start + 4:start + 8], bytearray(data[start + 8:start + 8 + length])
    if kind == b"IHDR" and len(body) == 13:
        if size:
            body[0:8] = struct.pack(">II", size[0] % 2**32, size[1] % 2**32)
        else:
            at = rng.choice((0, 4, 8, 9, 10, 11, 12))  # size, depth, colour type, methods
            if at < 8:
                body[at:at + 4] = struct.pack(">I", integer(rng) % 2**32)
            else:
                body[at] = rng.choice((0, 1, 2, 3, 4, 6, 7, 8, 16, 255))
    else:
        body = bytearray(mutate_bytes(bytes(body), rng))
    chunk = (struct.pack(">I", len(body)) + kind + bytes(body)
             + struct.pack(">I", zlib.crc32(kind + bytes(body))))
    return data[:start] + chunk + data[start + 12 + length:]


def _tiff_edit(data: bytes, rng: random.Random, size: tuple[int, int] | None) -> bytes:
    """A TIFF with an entry of its first directory changed: the width and height (tags 256
    and 257), or any entry's type, count or value."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return mutate_bytes(data, rng)
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return mutate_bytes(data, rng)
    count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
    entries = [ifd + 2 + 12 * i for i in range(count) if ifd + 14 + 12 * i <= len(data)]
    b = bytearray(data)
    for at in entries:
        tag, kind = struct.unpack(order + "HH", b[at:at + 4])
        if size and tag in (256, 257):
            value = size[tag - 256] % 2**32
            b[at + 2:at + 12] = struct.pack(order + "HII", 4, 1, value)  # as a LONG
    if not size and entries:
        at = rng.choice(entries)
        field = rng.randrange(3)
        if field == 0:
            b[at + 2:at + 4] = struct.pack(order + "H", rng.choice((0, 1, 2, 3, 4, 5, 11, 12, 16,
                                                                    99)))
        else:
            offset = at + 4 if field == 1 else at + 8
            b[offset:offset + 4] = struct.pack(order + "I", integer(rng) % 2**32)
    return bytes(b)


def _size_fields(fmt: str, data: bytes) -> list[tuple[int, str, str]]:
    """(offset, struct format, which: "w" or "h" or "") of a format's header fields."""
    if fmt == "BMP":  # width, height (signed: negative is top-down), planes, depth,
        # compression, image size, palette colours, the pixels' offset
        return [(18, "<i", "w"), (22, "<i", "h"), (26, "<H", ""), (28, "<H", ""),
                (30, "<I", ""), (34, "<I", ""), (46, "<I", ""), (10, "<I", "")]
    if fmt == "GIF":
        found = [(6, "<H", "w"), (8, "<H", "h"), (10, "<B", "")]
        descriptor = data.find(b"\x2c\x00\x00\x00\x00", 13)
        if descriptor > 0:
            found += [(descriptor + 5, "<H", "w"), (descriptor + 7, "<H", "h"),
                      (descriptor + 9, "<B", "")]
        return found
    if fmt == "JPEG":
        match = re.search(rb"\xff[\xc0-\xc2]", data)
        if match is None:
            return []
        p = match.start()  # precision, height, width, components
        return [(p + 4, ">B", ""), (p + 5, ">H", "h"), (p + 7, ">H", "w"), (p + 9, ">B", "")]
    if fmt == "WEBP":
        chunk = data[12:16]
        if chunk == b"VP8X":
            return [(24, "<3s", "w"), (27, "<3s", "h"), (20, "<B", "")]
        if chunk == b"VP8 ":
            return [(26, "<H", "w"), (28, "<H", "h")]
        if chunk == b"VP8L":
            return [(21, "<I", "wh")]
        return []
    return []


def _header_edit(fmt: str, data: bytes, rng: random.Random,
                 size: tuple[int, int] | None) -> bytes:
    """A file of `fmt` with header fields changed: its width and height set to `size`, or
    one field set to an interesting integer."""
    if fmt == "PNG":
        return _png_edit(data, rng, size)
    if fmt == "TIFF":
        return _tiff_edit(data, rng, size)
    if fmt == "PPM":
        match = re.match(rb"(P[1-6])(\s+)(\d+)(\s+)(\d+)(\s+)(\d+)", data)
        if match is None:
            return mutate_bytes(data, rng)
        numbers = [match.group(3), match.group(5), match.group(7)]
        if size:
            numbers[:2] = [str(size[0]).encode(), str(size[1]).encode()]
        else:
            numbers[rng.randrange(3)] = str(integer(rng)).encode()
        head = (match.group(1) + match.group(2) + numbers[0] + match.group(4) + numbers[1]
                + match.group(6) + numbers[2])
        return head + data[match.end():]
    fields = [f for f in _size_fields(fmt, data) if f[0] + struct.calcsize(f[1]) <= len(data)]
    if not fields:
        return mutate_bytes(data, rng)
    b = bytearray(data)
    chosen = [f for f in fields if f[2]] if size else [rng.choice(fields)]
    for offset, layout, which in chosen:
        width = struct.calcsize(layout)
        if which == "wh":  # VP8L: 14 bits each of width - 1 and height - 1, after each other
            w, h = ((size[0] - 1) % 2**14, (size[1] - 1) % 2**14) if size else (
                integer(rng) % 2**14, integer(rng) % 2**14)
            value = w | h << 14 | (b[offset + 3] >> 4) << 28
        elif size:
            value = size[0] if which == "w" else size[1]
            value -= layout == "<3s"  # VP8X stores the size minus one
        else:
            value = integer(rng)
        if layout == "<3s":
            b[offset:offset + 3] = (value % 2**24).to_bytes(3, "little")
        elif layout.endswith("i"):
            b[offset:offset + width] = struct.pack(layout, (value + 2**31) % 2**32 - 2**31)
        else:
            b[offset:offset + width] = struct.pack(layout, value % 2 ** (8 * width))
    return bytes(b)


def mutants(seeds: dict[str, bytes], rng: random.Random):
    """Endless (format, seed name, bytes) mutants of `seeds` (named ``FORMAT-MODE``)."""
    names = sorted(seeds)
    while True:
        name = rng.choice(names)
        fmt, data = name.split("-")[0], seeds[name]
        action = rng.randrange(5)
        if action == 0:
            data = mutate_bytes(data, rng)
        elif action == 1:
            data = data[:rng.randrange(len(data))]
        elif action == 2:
            data = _header_edit(fmt, data, rng, None)
        elif action == 3:
            size = (rng.choice(SIZES), rng.choice(SIZES))
            data = _header_edit(fmt, data, rng, size)
        else:
            data = _header_edit(fmt, data, rng, None)
            data = mutate_bytes(data, rng)
        if rng.random() < 0.2:
            data = mutate_bytes(data, rng)
        yield fmt, name, data


def _check(result: np.ndarray, mask: bool) -> str | None:
    """What is wrong with a loaded image (None: nothing)."""
    if not isinstance(result, np.ndarray) or result.dtype != np.float32:
        return f"not a float32 array: {type(result).__name__} {getattr(result, 'dtype', '')}"
    if result.ndim != (2 if mask else 3) or (not mask and result.shape[-1] != 3):
        return f"shape {result.shape}"
    if result.shape[0] * result.shape[1] > MAX_PIXELS:
        return f"shape {result.shape} is over the pixel limit"
    if not np.isfinite(result).all() or result.min(initial=0) < 0 or result.max(initial=0) > 1:
        return "values not finite or outside [0, 1]"
    return None


def _fuzz(seed_dir: str, cases: int, seed: int, keep: str) -> dict:
    from jaxstyle.errors import JaxstyleError
    from jaxstyle.images import IMAGE_FORMATS, load_image, load_mask

    seeds = {p.stem: p.read_bytes() for p in sorted(Path(seed_dir).iterdir())}
    rng = random.Random(seed)
    outcomes = {fmt: {"ok": 0, "refused": 0, "failed": 0} for fmt in IMAGE_FORMATS}
    failures, slowest, started = [], (0.0, ""), time.perf_counter()
    work = Path(keep)
    work.mkdir(parents=True, exist_ok=True)
    load_image(Path(seed_dir) / "PNG-rgb.png")  # imports what decoding imports lazily
    i = -1
    with bounded_memory() as growth:
        for i, (fmt, name, data) in zip(range(cases), mutants(seeds, rng)):
            path = work / f"case.{fmt.lower()}"
            path.write_bytes(data)  # left behind if the reader kills the process
            mask = rng.random() < 0.3
            start = time.perf_counter()
            problem = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = (load_mask if mask else load_image)(path, MAX_PIXELS)
                    problem = _check(result, mask)
                    outcomes[fmt]["ok" if problem is None else "failed"] += 1
                except JaxstyleError as exc:
                    message = str(exc)
                    if "\n" in message or str(path) not in message:
                        problem = f"bad message: {message[:300]}"
                    outcomes[fmt]["refused" if problem is None else "failed"] += 1
                except Exception as exc:  # noqa: BLE001 - what the test is for
                    outcomes[fmt]["failed"] += 1
                    problem = (traceback.format_exception_only(exc)[-1].strip()[:300] + " at "
                               + traceback.format_tb(exc.__traceback__)[-1][:300])
            if caught and problem is None:
                problem = f"a warning leaked: {caught[0].category.__name__}: {caught[0].message}"
                outcomes[fmt]["failed"] += 1
            if problem is not None:
                kept = work / f"failure{i}-{name}.{fmt.lower()}"
                kept.write_bytes(data)
                failures.append({"case": i, "seed": name, "mask": mask, "file": str(kept),
                                 "problem": problem})
            slowest = max(slowest, (time.perf_counter() - start, f"case {i} ({name})"))
        path.unlink(missing_ok=True)
        return summary(i + 1, failures, growth(), started, slowest, outcomes=outcomes)


if __name__ == "__main__":
    main(_fuzz)
