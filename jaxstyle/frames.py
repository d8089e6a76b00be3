"""Video frames in and out: a video file (PyAV) or a folder of numbered frames (Pillow), read one
frame at a time and each checked against a pixel limit before it is decoded; PNG frames encoded
as H.264 at the input's frame rate, its audio track copied untouched, into a temporary file
renamed into place, so nothing half-written ever carries the output's name.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from jaxstyle.choices import DEFAULT_MAX_PIXELS, VIDEO_SUFFIXES
from jaxstyle.errors import JaxstyleError
from jaxstyle.images import IMAGE_SUFFIXES, load_image, opened

CRF = 18  # x264's constant rate factor: visually lossless for most material
FOLDER_FPS = Fraction(25)
"""Frame rate of a video made from a folder of frames."""


class VideoError(JaxstyleError):
    """A video input or output that cannot be used; the message says why."""


class FrameSource(NamedTuple):
    """Where frames come from.

    Attributes:
      path: a video file or a folder of numbered frames.
      frames: how many frames it holds (a video's container count, which may be 0 if unknown).
      size: (H, W) of its frames.
      fps: frames per second.
      files: the frame files of a folder, in order (empty for a video file).
      max_pixels: the most pixels a frame may have; each is checked before it is decoded.
    """

    path: Path
    frames: int
    size: tuple[int, int]
    fps: Fraction
    files: tuple[Path, ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS


def _number(path: Path) -> int | None:
    """The frame number in a file name (its last group of digits), or None."""
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None


def open_source(path: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                log: Callable[[str], None] = lambda message: None) -> FrameSource:
    """Checks a video file or a folder of numbered frames before any work (`log` hears about
    files in a folder that are not frames).

    Raises:
      VideoError: missing, not a video, no frames, gaps or repeats in a folder's numbering,
        frames of different sizes, or frames of more than `max_pixels` pixels.
    """
    source = _open_source(Path(path), log, max_pixels)
    h, w = source.size
    if h * w > max_pixels:
        raise VideoError(f"{path}: frames of {w}x{h} px exceed --max-pixels {max_pixels}")
    return source


def _frame_files(path: Path, log: Callable[[str], None]) -> tuple[Path, ...]:
    """A folder's frames: its images whose names carry a number, in that number's order."""
    images = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    numbered = sorted((p for p in images if _number(p) is not None), key=_number)
    unnumbered = sorted(p.name for p in images if _number(p) is None)
    if unnumbered:
        log(f"{path}: ignoring {', '.join(unnumbered)} (no frame number in the name)")
    if not numbered:
        raise VideoError(f"{path}: folder holds no numbered frames (e.g. frame_0001.png)")
    numbers = [_number(p) for p in numbered]
    for before, after, name in zip(numbers, numbers[1:], numbered[1:]):
        if after == before:
            raise VideoError(f"{path}: two frames are numbered {after} ({name.name} and another)")
        if after != before + 1:
            missing = (f"frame {before + 1} is" if after == before + 2
                       else f"frames {before + 1} to {after - 1} are")
            raise VideoError(f"{path}: {missing} missing (the numbering jumps from {before} to "
                             f"{after}); the temporal loss needs consecutive frames")
    return tuple(numbered)


def _open_source(path: Path, log: Callable[[str], None], max_pixels: int) -> FrameSource:
    if path.is_dir():
        files = _frame_files(path, log)
        sizes = {}
        for p in files:
            with opened(p, max_pixels) as image:  # the header only
                sizes.setdefault(image.size, p)
        if len(sizes) > 1:
            (a, pa), (b, pb) = list(sizes.items())[:2]
            raise VideoError(f"{path}: frames differ in size ({pa.name} is {a[0]}x{a[1]}, "
                             f"{pb.name} is {b[0]}x{b[1]})")
        w, h = next(iter(sizes))
        return FrameSource(path, len(files), (h, w), FOLDER_FPS, tuple(files), max_pixels)
    if not path.is_file():
        raise VideoError(f"{path}: no such file or folder")
    import av

    try:
        with av.open(str(path)) as container, _decoder_log():
            if not container.streams.video:
                raise VideoError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            first = next(_decode(container, max_pixels), None)
            if first is None:
                raise VideoError(f"{path}: has no video frames")
            return FrameSource(path, stream.frames, (first.height, first.width),
                          Fraction(stream.average_rate or FOLDER_FPS), (), max_pixels)
    except av.FFmpegError as exc:
        _refuse_large_frame(path, 1, exc, max_pixels)
        raise VideoError(f"{path}: not a readable video ({exc.strerror or exc})") from None


def _decode(container, max_pixels: int) -> Iterator:
    """The frames of `container`'s first video stream, each checked by the decoder against
    `max_pixels` from its header, before its picture is allocated (FFmpeg's ``max_pixels``)."""
    stream = container.streams.video[0]
    stream.codec_context.options = {"max_pixels": str(max_pixels)}
    return container.decode(stream)


@contextlib.contextmanager
def _decoder_log() -> Iterator[None]:
    """FFmpeg's error lines kept off stderr; PyAV then appends the last one to its exceptions,
    which is how a frame refused for its size is told from a corrupt one."""
    import av.logging

    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture():
            yield
    finally:
        av.logging.set_level(level)


def _refuse_large_frame(path: Path, index: int, exc: Exception, max_pixels: int) -> None:
    """Raises the `VideoError` for frame `index` (from 1) if the decoder refused it for its
    size; returns otherwise."""
    size = re.search(r"Picture size (\d+x\d+) exceeds specified max pixel count", str(exc))
    if size is not None:
        raise VideoError(f"{path}: frame {index} is {size[1]} px, over --max-pixels "
                         f"{max_pixels}") from None


def read_frames(source: FrameSource) -> Iterator[np.ndarray]:
    """The frames one at a time, float32 [H, W, 3] RGB in [0, 1] (never the whole video).

    Raises:
      VideoError: a corrupt stream or frame (naming the frame).
    """
    if source.files:
        for path in source.files:  # all of the size open_source checked against the limit
            yield load_image(path, source.size[0] * source.size[1])
        return
    import av

    index = 0
    try:
        with av.open(str(source.path)) as container:
            frames = _decode(container, source.max_pixels)
            while True:
                with _decoder_log():
                    frame = next(frames, None)
                if frame is None:
                    return
                index += 1
                yield frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
    except av.FFmpegError as exc:
        _refuse_large_frame(source.path, index + 1, exc, source.max_pixels)
        raise VideoError(f"{source.path}: corrupt video stream after frame {index} "
                         f"({exc.strerror or exc})") from None


def is_video_path(path: str | Path) -> bool:
    """Whether an output path names a video file (else a folder of frames)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def encode(frames: list[Path], output: Path, fps: Fraction, audio_from: Path | None,
           log: Callable[[str], None] = lambda message: None) -> None:
    """Encodes PNG frames as H.264 (yuv420p, which players and browsers decode) at `fps`,
    copying the audio of `audio_from` untouched, into a temporary file renamed to `output` at
    the end. yuv420p needs even sizes: an odd height or width is padded by repeating the last
    row or column (`log` says so)."""
    import av

    partial = output.with_name(f".{output.name}.partial{output.suffix}")
    try:
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(av.open(str(audio_from))) if audio_from else None
            audio = source.streams.audio[0] if source and source.streams.audio else None
            out = stack.enter_context(av.open(str(partial), "w",
                                              format=_FORMATS.get(output.suffix.lower())))
            h, w = np.asarray(Image.open(frames[0], formats=("PNG",))).shape[:2]
            pad = (h % 2, w % 2)
            if any(pad):
                log(f"{output}: padded {w}x{h} to {w + pad[1]}x{h + pad[0]} (H.264's yuv420p, "
                    "which players decode, needs even sizes)")
            stream = out.add_stream("libx264", rate=fps, options={"crf": str(CRF)})
            stream.width, stream.height, stream.pix_fmt = w + pad[1], h + pad[0], "yuv420p"
            copied = out.add_stream_from_template(audio) if audio is not None else None
            for path in frames:
                image = np.asarray(Image.open(path, formats=("PNG",)).convert("RGB"))
                image = np.pad(image, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(stream.encode(None))
            if copied is not None:
                for packet in source.demux(audio):
                    if packet.dts is not None:
                        packet.stream = copied
                        out.mux(packet)
        partial.replace(output)
    except (OSError, av.FFmpegError) as exc:
        partial.unlink(missing_ok=True)
        raise VideoError(f"{output}: could not write the video ({exc})") from None


_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi",
            ".webm": "webm"}
