"""Video: temporally consistent stylization (Ruder, Dosovitskiy & Brox 2016), streamed and
resumable.

Frames are read one at a time (PyAV for video files, Pillow for folders of numbered frames) and
each is stylized by `jaxstyle.stylize`, starting from the previous stylized frame warped along
the optical flow (`jaxstyle.temporal`) and held to it by the temporal loss, weighted per pixel
by the consistency weights. Finished frames go, as lossless PNG, to a work folder next to the
output; a run that is interrupted and started again with the same command continues at the
first unfinished frame and ends with the same video as an uninterrupted run (each frame is
computed from the saved PNG of the frames before it, in both cases). A video output is encoded
at the end (H.264, the input's frame rate, its audio track copied untouched) and renamed into
place, so nothing half-written ever carries the output's name.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxstyle import temporal
from jaxstyle.errors import JaxstyleError, count
from jaxstyle.files import sha256_of
from jaxstyle.images import IMAGE_SUFFIXES, check_output_path, load_image, save_image
from jaxstyle.options import StyleOptions
from jaxstyle.plan import output_shape
from jaxstyle.session import describe_weights, load_weights_named, stop_requests, weights_label
from jaxstyle.stylize import check_inputs, stylize

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
FOLDER_FPS = Fraction(25)
"""Frame rate of a video made from a folder of frames."""


class VideoError(JaxstyleError):
    """A video input or output that cannot be used; the message says why."""


class Source(NamedTuple):
    """Where frames come from.

    Attributes:
      path: a video file or a folder of numbered frames.
      frames: how many frames it holds (a video's container count, which may be 0 if unknown).
      size: (H, W) of its frames.
      fps: frames per second.
      files: the frame files of a folder, in order (empty for a video file).
    """

    path: Path
    frames: int
    size: tuple[int, int]
    fps: Fraction
    files: tuple[Path, ...] = ()


def _number(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else -1


def open_source(path: str) -> Source:
    """Checks a video file or a folder of numbered frames before any work.

    Raises:
      VideoError: missing, not a video, no frames, or frames of different sizes.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: (_number(p), p.name))
        if not files:
            raise VideoError(f"{path}: folder holds no frames (images)")
        sizes = {}
        for p in files:
            try:
                with Image.open(p) as image:
                    sizes.setdefault(image.size, p)
            except OSError:
                raise VideoError(f"{p}: not an image") from None
        if len(sizes) > 1:
            (a, pa), (b, pb) = list(sizes.items())[:2]
            raise VideoError(f"{path}: frames differ in size ({pa.name} is {a[0]}x{a[1]}, "
                             f"{pb.name} is {b[0]}x{b[1]})")
        w, h = next(iter(sizes))
        return Source(path, len(files), (h, w), FOLDER_FPS, tuple(files))
    if not path.is_file():
        raise VideoError(f"{path}: no such file or folder")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise VideoError(f"{path}: has no video frames")
            return Source(path, stream.frames, (first.height, first.width),
                          Fraction(stream.average_rate or FOLDER_FPS))
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({exc.strerror or exc})") from None


def read_frames(source: Source) -> Iterator[np.ndarray]:
    """The frames one at a time, float32 [H, W, 3] RGB in [0, 1] (never the whole video).

    Raises:
      VideoError: a corrupt stream or frame (naming the frame).
    """
    if source.files:
        for path in source.files:
            yield load_image(path)
        return
    import av

    index = 0
    try:
        with av.open(str(source.path)) as container:
            for frame in container.decode(container.streams.video[0]):
                index += 1
                yield frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
    except av.FFmpegError as exc:
        raise VideoError(f"{source.path}: corrupt video stream after frame {index} "
                         f"({exc.strerror or exc})") from None


def is_video_path(path: str | Path) -> bool:
    """Whether an output path names a video file (else a folder of frames)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def work_folder(output: Path) -> Path:
    """Where finished frames wait: the output folder itself, or ``OUTPUT.frames`` next to a
    video output."""
    return output if not is_video_path(output) else output.with_name(output.name + ".frames")


def frame_path(folder: Path, index: int) -> Path:
    return folder / f"frame_{index + 1:05d}.png"


def encode(frames: list[Path], output: Path, fps: Fraction, audio_from: Path | None) -> None:
    """Encodes PNG frames as H.264 at `fps`, copying the audio of `audio_from` untouched, into
    a temporary file renamed to `output` at the end."""
    import av

    partial = output.with_name(f".{output.name}.partial{output.suffix}")
    try:
        source = av.open(str(audio_from)) if audio_from else None
        audio = source.streams.audio[0] if source and source.streams.audio else None
        with av.open(str(partial), "w", format=_FORMATS.get(output.suffix.lower())) as out:
            first = np.asarray(Image.open(frames[0]).convert("RGB"))
            h, w = first.shape[:2]
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
            copied = out.add_stream_from_template(audio) if audio is not None else None
            for path in frames:
                image = np.asarray(Image.open(path).convert("RGB"))
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(stream.encode(None))
            if copied is not None:
                for packet in source.demux(audio):
                    if packet.dts is not None:
                        packet.stream = copied
                        out.mux(packet)
        if source:
            source.close()
        partial.replace(output)
    except (OSError, av.FFmpegError) as exc:
        partial.unlink(missing_ok=True)
        raise VideoError(f"{output}: could not write the video ({exc})") from None


_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi",
            ".webm": "webm"}


def fingerprint(source: Source, styles: list[str], options: StyleOptions, weights) -> dict:
    """What a run's finished frames were made from; a resumed run must match it."""
    inputs = [source.path] if not source.files else list(source.files)
    return {"input": [sha256_of(p) for p in inputs], "styles": [sha256_of(p) for p in styles],
            "weights": weights.source_sha256 or weights.source, "options": options.to_dict()}


def previous_frames(index: int, content: np.ndarray, contents: dict, stylized: dict,
                    options: StyleOptions) -> tuple[list, np.ndarray | None]:
    """The temporal targets of frame `index` and its start image: for each earlier frame j in
    ``options.temporal_frames`` (nearest first), its stylized frame warped to this one along the
    backward flow, with Ruder et al.'s consistency weights (long-term: each keeps only what
    nearer frames do not cover); the start is the nearest warp, with the content frame where
    that warp is not trusted (disocclusions)."""
    pairs, weights = [], []
    for step in options.temporal_frames:
        if index - step < 0:
            break
        before = contents[index - step]
        backward = temporal.optical_flow(content, before, options.flow)
        forward = temporal.optical_flow(before, content, options.flow)
        c = temporal.consistency_weights(jnp.asarray(forward), jnp.asarray(backward))
        pairs.append(temporal.warp(jnp.asarray(stylized[index - step]), jnp.asarray(backward)))
        weights.append(c)
    if not pairs:
        return [], None
    weights = temporal.long_term_weights(weights)
    c = np.asarray(weights[0])[..., None]
    start = c * np.asarray(pairs[0]) + (1 - c) * content
    return list(zip(pairs, weights)), start


def stylize_video(input_path: str, styles: list[str], output: str, options: StyleOptions,
                  log: Callable[[str], None], weights_spec: str | None = None,
                  progress_bar: bool = True,
                  on_frame: Callable[[int, float], None] | None = None) -> int:
    """``jaxstyle video``: stylizes every frame of `input_path` into `output` (a video file or
    a folder of frames); returns the exit code (0, or 128 + the signal that stopped it).
    `on_frame` is called with (frame index, seconds it took) after each frame stylized.

    Raises:
      JaxstyleError: bad input or output (checked before any work), or finished frames from a
        run with other inputs or options.
    """
    from tqdm import tqdm

    try:
        import av  # noqa: F401
        import cv2  # noqa: F401
    except ImportError:
        raise VideoError("video needs PyAV and OpenCV: pip install 'jaxstyle[video]'") from None
    source = open_source(input_path)
    output = Path(output)
    if output.resolve() == source.path.resolve() or source.path.resolve() in output.resolve().parents:
        raise VideoError(f"{output}: refusing to write over the input {source.path}")
    if is_video_path(output):
        check_output_path(output.with_suffix(".png"), [input_path, *styles])
        if output.exists() and not output.is_file():
            raise VideoError(f"{output}: is a folder")
    elif output.suffix:
        raise VideoError(f"{output}: unknown video extension; use one of "
                         f"{', '.join(VIDEO_SUFFIXES)}, or a folder name for frames")
    elif not output.parent.is_dir():
        raise VideoError(f"{output}: folder {output.parent} does not exist")
    style_images = [load_image(p) for p in styles]
    check_inputs((*source.size, 3), [s.shape for s in style_images], options)
    weights, _ = load_weights_named(weights_spec, options.seed)
    log(describe_weights(weights))
    work = work_folder(output)
    stamp = fingerprint(source, styles, options, weights)
    record = work / "jaxstyle-video.json"
    if record.is_file() and json.loads(record.read_text()) != json.loads(json.dumps(stamp)):
        raise VideoError(f"{work}: holds frames of a run with other inputs or options; delete "
                         "it or run with the same ones")
    if not record.is_file() and any(work.glob("frame_*.png")):
        raise VideoError(f"{work}: already holds frames of a finished run; delete them or choose "
                         "another folder")
    try:
        work.mkdir(exist_ok=True)
        record.write_text(json.dumps(stamp))
    except OSError as exc:
        raise VideoError(f"{work}: cannot write there ({exc.strerror or exc})") from None
    label = weights_label(weights)
    shape = output_shape(source.size, options.size)
    first_iterations = options.first_frame_iterations or 2 * options.iterations
    keep = max(options.temporal_frames)
    contents, stylized, cache = {}, {}, {}
    done = 0
    bar = tqdm(total=source.frames or None, unit="frame", disable=not progress_bar,
               file=sys.stderr, dynamic_ncols=True)
    started = time.perf_counter()
    with stop_requests(log) as stop:
        for index, frame in enumerate(read_frames(source)):
            content = np.asarray(jnp.asarray(frame) if frame.shape[:2] == shape else
                                 _resized(frame, shape))
            contents[index] = content
            path = frame_path(work, index)
            if path.is_file():  # finished by an earlier, interrupted run
                stylized[index] = load_image(path)
            else:
                previous, start = ([], None) if not options.temporal_weight or index == 0 else \
                    previous_frames(index, content, contents, stylized, options)
                run = options.replace(iterations=first_iterations if index == 0
                                      else options.iterations)
                frame_started = time.perf_counter()
                result = stylize(content, style_images, weights, run, init_image=start,
                                 previous=previous or None, style_cache=cache)
                save_image(path, result.image, [input_path, *styles], label)
                stylized[index] = load_image(path)  # what a resumed run would read back
                done += 1
                if on_frame is not None:
                    on_frame(index, time.perf_counter() - frame_started)
            for old in [k for k in contents if k <= index - keep]:
                del contents[old], stylized[old]
            bar.update(1)
            if done:
                bar.set_postfix_str(f"{(time.perf_counter() - started) / done:.1f} s/frame",
                                    refresh=False)
            if stop:
                bar.close()
                print(f"interrupted after {count(index + 1, 'frame')}; they are in {work}; run "
                      "the same command again to continue", file=sys.stderr, flush=True)
                return 128 + stop[0]
    bar.close()
    frames = sorted(work.glob("frame_*.png"))
    if is_video_path(output):
        encode(frames, output, source.fps, None if source.files else source.path)
        shutil.rmtree(work)
    else:
        record.unlink()
    log(f"wrote {output}: {count(len(frames), 'frame')} at {shape[1]}x{shape[0]}, "
        f"{float(source.fps):g} fps, {count(done, 'frame')} stylized in this run")
    return 0


def _resized(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from jaxstyle.images import resize

    return np.asarray(resize(jnp.asarray(frame), *shape))
