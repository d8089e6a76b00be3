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

import contextlib
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
from jaxstyle.choices import DEFAULT_MAX_PIXELS, VIDEO_SUFFIXES
from jaxstyle.driver import stylize, stylize_batch
from jaxstyle.errors import JaxstyleError, count
from jaxstyle.files import sha256_of
from jaxstyle.images import IMAGE_SUFFIXES, can_write_in, load_image, opened, save_image
from jaxstyle.options import StyleOptions
from jaxstyle.problem import check_inputs
from jaxstyle.runner import (
    ProgressDisplay,
    load_inputs,
    locked,
    open_network,
    stop_requests,
)
from jaxstyle.stages import output_shape

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


def work_folder(output: Path) -> Path:
    """Where finished frames wait: the output folder itself, or ``OUTPUT.frames`` next to a
    video output."""
    return output if not is_video_path(output) else output.with_name(output.name + ".frames")


WORK_RECORD = "jaxstyle-video.json"
"""The file in a work folder that says which run its frames belong to."""


def check_video_output(output: Path, source: Path, inputs: list[str]) -> None:
    """Checks, before any work, that a video file can be written at `output` and that its work
    folder (`work_folder`) is this command's to fill and remove: missing, empty, or holding an
    earlier run's frames and record, and neither the input nor inside it.

    Raises:
      VideoError: naming the path in the way.
    """
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise VideoError(f"{output}: folder {folder} does not exist")
    if not can_write_in(folder):
        raise VideoError(f"{output}: folder {folder} is not writable")
    if output.exists() and not output.is_file():
        raise VideoError(f"{output}: is a folder")
    for other in inputs:
        if output.resolve() == Path(other).resolve():
            raise VideoError(f"{output}: refusing to overwrite the input {other}")
    work = work_folder(output)
    if work.resolve() == source.resolve() or work.resolve() in source.resolve().parents:
        raise VideoError(f"{output}: its work folder {work} is the input {source}; choose "
                         "another output name")
    if work.exists() and not work.is_dir():
        raise VideoError(f"{output}: its work folder {work} is a file; move it away")
    if work.is_dir() and any(work.iterdir()) and not (work / WORK_RECORD).is_file():
        raise VideoError(f"{output}: its work folder {work} holds files that are not a jaxstyle "
                         "run's (they would be deleted with it); move them away")


def _remove_work(work: Path) -> None:
    """Removes a finished video's work folder: what `stylize_video` put there, then the folder
    if nothing else is left in it."""
    for path in work.iterdir():
        if path.is_dir() and (path.name == "content" or path.name.startswith("pass_")):
            shutil.rmtree(path)
        elif path.name == WORK_RECORD or path.name.startswith("frame_"):
            path.unlink()
    with contextlib.suppress(OSError):
        work.rmdir()


def frame_path(folder: Path, index: int) -> Path:
    return folder / f"frame_{index + 1:05d}.png"


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


def fingerprint(source: FrameSource, styles: list[str], options: StyleOptions, weights) -> dict:
    """What a run's finished frames were made from; a resumed run must match it."""
    inputs = [source.path] if not source.files else list(source.files)
    return {"input": [sha256_of(p) for p in inputs], "styles": [sha256_of(p) for p in styles],
            "weights": weights.source_sha256 or weights.source, "options": options.to_dict()}


def previous_frames(index: int, content: np.ndarray, contents: dict, stylized: dict,
                    options: StyleOptions) -> tuple[list, np.ndarray | None]:
    """The temporal targets of frame `index` and its start image: for each earlier frame j in
    ``options.video.temporal_frames`` (nearest first), its stylized frame warped to this one along
    the backward flow, with Ruder et al.'s consistency weights (long-term: each keeps only what
    nearer frames do not cover); the start is the nearest warp, with the content frame shifted
    by its stylized neighbourhood where that warp is not trusted (`temporal.start_image`)."""
    pairs, weights = [], []
    for step in options.video.temporal_frames:
        if index - step < 0:
            break
        warped, c = temporal.warp_to(content, contents[index - step], stylized[index - step],
                                     options.video.flow)
        pairs.append(warped)
        weights.append(c)
    if not pairs:
        return [], None
    weights = temporal.long_term_weights(weights)
    return list(zip(pairs, weights)), temporal.start_image(content, pairs[0], weights[0])


def stylize_video(input_path: str, styles: list[str], output: str, options: StyleOptions,
                  log: Callable[[str], None], weights_spec: str | None = None,
                  progress_bar: bool = True,
                  on_frame: Callable[[int, float], None] | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """``jaxstyle video``: stylizes every frame of `input_path` into `output` (a video file or
    a folder of frames); returns the exit code (0, or 128 + the signal that stopped it).
    `on_frame` is called with (frame index, seconds it took) after each frame stylized; input
    frames and style images larger than `max_pixels` are refused.

    Raises:
      JaxstyleError: bad input or output (checked before any work), or finished frames from a
        run with other inputs or options.
    """
    try:
        import av  # noqa: F401
        import cv2  # noqa: F401
    except ImportError:
        raise VideoError("video needs PyAV and OpenCV: pip install 'jaxstyle[video]'") from None
    source = open_source(input_path, max_pixels, log)
    output = Path(output)
    inside = source.path.resolve() in output.resolve().parents
    if output.resolve() == source.path.resolve() or inside:
        raise VideoError(f"{output}: refusing to write over the input {source.path}")
    inputs = load_inputs(styles, others=[input_path, *map(str, source.files)],
                         max_pixels=max_pixels)
    if is_video_path(output):
        check_video_output(output, source.path, inputs.paths)
    elif output.suffix:
        raise VideoError(f"{output}: unknown video extension; use one of "
                         f"{', '.join(VIDEO_SUFFIXES)}, or a folder name for frames")
    elif not output.parent.is_dir():
        raise VideoError(f"{output}: folder {output.parent} does not exist")
    check_inputs((*source.size, 3), [s.shape for s in inputs.styles], options)
    with locked(output):
        return _run(source, input_path, styles, output, inputs, options, log, weights_spec,
                    progress_bar, on_frame)


def _run(source: FrameSource, input_path: str, styles: list[str], output: Path, inputs,
         options: StyleOptions, log: Callable[[str], None], weights_spec: str | None,
         progress_bar: bool, on_frame) -> int:
    """`stylize_video` once its inputs are checked and its output locked."""
    network = open_network(weights_spec, options.seed, log)
    work = work_folder(output)
    stamp = fingerprint(source, styles, options, network.weights)
    record = work / WORK_RECORD
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
    shape = output_shape(source.size, options.plan.size)
    run = _Run(source, work, shape, inputs.styles, network.weights, options, network.label,
               inputs.paths, on_frame, {})
    total = (source.frames or None) if options.video.passes == 1 else None
    with ProgressDisplay(total, unit="frame", enabled=progress_bar) as display, \
            stop_requests(log) as stop:
        walk = _single_pass if options.video.passes == 1 else _multi_pass
        stopped, done = walk(run, display, stop)
    if stopped:
        print(f"interrupted; the finished frames are in {work}; run the same command again to "
              "continue", file=sys.stderr, flush=True)
        return 128 + stopped
    frames = sorted(work.glob("frame_*.png"))
    if is_video_path(output):
        encode(frames, output, source.fps, None if source.files else source.path, log)
        _remove_work(work)
    else:
        record.unlink()
    log(f"wrote {output}: {count(len(frames), 'frame')} at {shape[1]}x{shape[0]}, "
        f"{float(source.fps):g} fps, {count(done, 'frame')} stylized in this run")
    return 0


class _Run(NamedTuple):
    """What every frame of a video run shares."""

    source: FrameSource
    work: Path
    shape: tuple[int, int]
    styles: list
    weights: object
    options: StyleOptions
    label: str
    inputs: list
    on_frame: Callable[[int, float], None] | None
    style_cache: dict


def _content(run: _Run, frame: np.ndarray) -> np.ndarray:
    return np.asarray(frame) if frame.shape[:2] == run.shape else _resized(frame, run.shape)


def _single_pass(run: _Run, display: ProgressDisplay, stop: list[int]) -> tuple[int, int]:
    """Frame after frame, each from the previous stylized frames (the paper's single pass).
    Returns (the signal that stopped it or 0, frames stylized)."""
    options = run.options
    first_iterations = options.video.first_frame_iterations or 2 * options.optimization.iterations
    keep = max(options.video.temporal_frames)
    contents, stylized, done = {}, {}, 0
    for index, frame in enumerate(read_frames(run.source)):
        content = contents[index] = _content(run, frame)
        path = frame_path(run.work, index)
        if path.is_file():  # finished by an earlier, interrupted run
            stylized[index] = load_image(path)
        else:
            previous, start = ([], None) if not options.video.temporal_weight or index == 0 else \
                previous_frames(index, content, contents, stylized, options)
            # A frame that starts from the previous one warped starts from a picture already
            # at the full size: a coarse-to-fine schedule would throw it away.
            settings = options.replace(
                iterations=first_iterations if index == 0 else options.optimization.iterations,
                **({} if start is None else {"coarsest": 0}))
            frame_started = time.perf_counter()
            result = stylize(content, run.styles, run.weights, settings, init_image=start,
                             previous=previous or None, style_cache=run.style_cache)
            save_image(path, result.image, run.inputs, run.label)
            stylized[index] = load_image(path)  # what a resumed run would read back
            done += 1
            if run.on_frame is not None:
                run.on_frame(index, time.perf_counter() - frame_started)
        for old in [k for k in contents if k <= index - keep]:
            del contents[old], stylized[old]
        display.step()  # the bar shows the rate and the time left
        if stop:
            return stop[0], done
    return 0, done


MULTI_PASS_BLEND = 0.5
"""Ruder et al.'s delta: how much of the warped neighbour a multi-pass frame starts from."""


def _multi_pass(run: _Run, display: ProgressDisplay, stop: list[int]) -> tuple[int, int]:
    """``options.video.passes`` passes over all frames, alternating direction; within a pass every
    frame depends only on the pass before, so ``options.video.pass_batch`` frames at a time run as
    one batch sharded over all local devices. Pass 1 stylizes the frames independently; pass
    p starts each frame from a blend of its own previous-pass result and its neighbour's
    (the previous frame on forward passes, the next on backward ones) warped to it, and holds
    it to that warp by the temporal loss. Returns (the stopping signal or 0, frames stylized).
    """
    options, work = run.options, run.work
    folder = work / "content"
    folder.mkdir(exist_ok=True)
    count_frames = 0
    for index, frame in enumerate(read_frames(run.source)):  # once: frames at the output size
        count_frames += 1
        if not frame_path(folder, index).is_file():
            save_image(frame_path(folder, index), _content(run, frame), run.inputs)
    done = 0
    for number in range(options.video.passes):
        here = work / f"pass_{number + 1}"
        here.mkdir(exist_ok=True)
        before = work / f"pass_{number}"
        step = -1 if number % 2 else 1  # the neighbour: previous frame, then the next, ...
        display.step(0, f"pass {number + 1}/{options.video.passes}")
        for first in range(0, count_frames, options.video.pass_batch):
            indices = range(first, min(count_frames, first + options.video.pass_batch))
            if all(frame_path(here, i).is_file() for i in indices):
                display.step(len(indices))
                continue
            contents = [load_image(frame_path(folder, i)) for i in indices]
            inits, previous = None, None
            if number > 0:
                inits, previous = zip(*[_pass_targets(i, i - step, count_frames, folder, before,
                                                      options) for i in indices])
            started = time.perf_counter()
            # Later passes start from the pass before, at the full size: one scale (see above).
            settings = options if number == 0 else options.replace(coarsest=0)
            results = stylize_batch(contents, run.styles, run.weights, settings,
                                    init_images=inits,
                                    previous=None if previous is None else list(previous),
                                    style_cache=run.style_cache)
            for i, result in zip(indices, results):
                save_image(frame_path(here, i), result.image, run.inputs, run.label)
                if run.on_frame is not None:
                    run.on_frame(i, (time.perf_counter() - started) / len(indices))
            done += len(indices)
            display.step(len(indices))
            if stop:
                return stop[0], done
    for index in range(count_frames):
        shutil.copyfile(frame_path(here, index), frame_path(work, index))
    for number in range(options.video.passes):
        shutil.rmtree(work / f"pass_{number + 1}")
    shutil.rmtree(folder)
    return 0, done


def _pass_targets(index: int, neighbour: int, count_frames: int, contents: Path, before: Path,
                  options: StyleOptions) -> tuple[np.ndarray, list]:
    """A multi-pass frame's start image and temporal targets from the pass before."""
    own = load_image(frame_path(before, index))
    if not 0 <= neighbour < count_frames or not options.video.temporal_weight:
        return own, [(own, np.zeros(own.shape[:2], np.float32))]  # nothing to hold it to
    warped, c = temporal.warp_to(load_image(frame_path(contents, index)),
                                 load_image(frame_path(contents, neighbour)),
                                 load_image(frame_path(before, neighbour)), options.video.flow)
    warped, c = np.asarray(warped), np.asarray(c)
    blend = MULTI_PASS_BLEND * c[..., None]
    return blend * warped + (1 - blend) * own, [(warped, c)]


def _resized(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from jaxstyle.images import resize

    return np.asarray(resize(jnp.asarray(frame), *shape))
