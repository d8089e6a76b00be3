"""Video: temporally consistent stylization (Ruder, Dosovitskiy & Brox 2016), streamed and
resumable.

Frames are read one at a time (`jaxstyle.frames`: PyAV for video files, Pillow for folders of
numbered frames) and each is stylized by `jaxstyle.stylize`, starting from the previous stylized
frame warped along the optical flow (`jaxstyle.temporal`) and held to it by the temporal loss,
weighted per pixel by the consistency weights. Finished frames go, as lossless PNG, to a work
folder next to the output; a run that is interrupted and started again with the same command
continues at the first unfinished frame and ends with the same video as an uninterrupted run
(each frame is computed from the saved PNG of the frames before it, in both cases). A video
output is encoded at the end (`jaxstyle.frames.encode`: H.264, the input's frame rate, its audio
track copied untouched) and renamed into place, so nothing half-written ever carries the
output's name. The rest is the pipeline every command goes through (`jaxstyle.pipeline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxstyle import temporal
from jaxstyle.checks import check_inputs
from jaxstyle.choices import DEFAULT_MAX_PIXELS, VIDEO_SUFFIXES
from jaxstyle.driver import stylize, stylize_batch
from jaxstyle.errors import count
from jaxstyle.files import sha256_of
from jaxstyle.frames import (
    FrameSource,
    VideoError,
    encode,
    is_video_path,
    open_source,
    read_frames,
)
from jaxstyle.images import can_write_in, load_image, save_image
from jaxstyle.inputs import Inputs, load_inputs
from jaxstyle.options import StyleOptions
from jaxstyle.pipeline import (
    Command,
    Interrupted,
    Network,
    Outcome,
    Transport,
    Watch,
    exit_code,
    run_command,
)
from jaxstyle.stages import output_shape
from jaxstyle.terminal import Terminal


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


class VideoRequest(NamedTuple):
    """A video's files (the options are separate: `StyleOptions`).

    Attributes:
      input: a video file, or a folder of numbered frames.
      styles: the style images' paths.
      output: a video file (`jaxstyle.choices.VIDEO_SUFFIXES`) or a folder for PNG frames.
      weights: a weights file, 'random', or None to look for converted weights.
      max_pixels: refuse input frames and style images larger than this.
    """

    input: str
    styles: list[str]
    output: str
    weights: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


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
    request = VideoRequest(input_path, styles, output, weights_spec, max_pixels)
    return video_files(request, options, Terminal(log, progress_bar), on_frame)


def video_files(request: VideoRequest, options: StyleOptions, transport: Transport,
                on_frame: Callable[[int, float], None] | None = None) -> int:
    """`stylize_video` with the request and the transport given (the command line's)."""
    command = VideoCommand.prepare(request, options, transport.log)
    return exit_code(run_command(dataclasses.replace(command, on_frame=on_frame), transport))


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoCommand(Command):
    """``jaxstyle video`` checked and loaded (`prepare`).

    Attributes:
      source: the frames.
      inputs: the style images (and every input file).
      output: the video file or frame folder (locked while it runs: `Command.outputs`).
      styles: the style images' paths, as the work folder's record names them.
      on_frame: called with (frame index, seconds it took) after each frame stylized.
      work: where finished frames wait; shape: the output frames' (H, W) (`start`).
      style_cache: `stylize`'s cache of style targets, shared by every frame.
    """

    source: FrameSource
    inputs: Inputs
    output: Path
    styles: tuple[str, ...]
    on_frame: Callable[[int, float], None] | None = None
    work: Path | None = None
    shape: tuple[int, int] = (0, 0)
    style_cache: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def prepare(cls, request: VideoRequest, options: StyleOptions, log: Callable[[str], None]
                ) -> VideoCommand:
        """Opens the frames, loads the styles and checks the output, the options and the
        sizes, before any work.

        Raises:
          JaxstyleError: naming what is wrong.
        """
        try:
            import av  # noqa: F401
            import cv2  # noqa: F401
        except ImportError:
            raise VideoError("video needs PyAV and OpenCV: pip install 'jaxstyle[video]'"
                             ) from None
        source = open_source(request.input, request.max_pixels, log)
        output = Path(request.output)
        inside = source.path.resolve() in output.resolve().parents
        if output.resolve() == source.path.resolve() or inside:
            raise VideoError(f"{output}: refusing to write over the input {source.path}")
        inputs = load_inputs(request.styles, others=[request.input, *map(str, source.files)],
                             max_pixels=request.max_pixels)
        if is_video_path(output):
            check_video_output(output, source.path, inputs.paths)
        elif output.suffix:
            raise VideoError(f"{output}: unknown video extension; use one of "
                             f"{', '.join(VIDEO_SUFFIXES)}, or a folder name for frames")
        elif not output.parent.is_dir():
            raise VideoError(f"{output}: folder {output.parent} does not exist")
        check_inputs((*source.size, 3), [s.shape for s in inputs.styles], options)
        return cls(options=options, outputs=(output,), weights=request.weights, source=source,
                   inputs=inputs, output=output, styles=tuple(request.styles))

    def progress(self) -> tuple[int | None, str, int]:
        single = self.options.video.passes == 1
        return (self.source.frames or None) if single else None, "frame", 0

    def start(self, network: Network, transport: Transport) -> VideoCommand:
        """Takes the work folder: new, or an interrupted run's with the same inputs and
        options (its finished frames are kept).

        Raises:
          VideoError: the folder holds another run's frames, or cannot be written.
        """
        work = work_folder(self.output)
        stamp = fingerprint(self.source, list(self.styles), self.options, network.weights)
        record = work / WORK_RECORD
        if record.is_file() and json.loads(record.read_text()) != json.loads(json.dumps(stamp)):
            raise VideoError(f"{work}: holds frames of a run with other inputs or options; "
                             "delete it or run with the same ones")
        if not record.is_file() and any(work.glob("frame_*.png")):
            raise VideoError(f"{work}: already holds frames of a finished run; delete them or "
                             "choose another folder")
        try:
            work.mkdir(exist_ok=True)
            record.write_text(json.dumps(stamp))
        except OSError as exc:
            raise VideoError(f"{work}: cannot write there ({exc.strerror or exc})") from None
        return dataclasses.replace(self, network=network, work=work,
                                   shape=output_shape(self.source.size, self.options.plan.size))

    def run(self, watch: Watch) -> int:
        """Stylizes the frames not finished yet; returns how many. A stop request is heard
        after each frame (a batch of frames in a multi-pass run)."""
        return (_single_pass if self.options.video.passes == 1 else _multi_pass)(self, watch)

    def stopped(self, stop: Interrupted, transport: Transport) -> Outcome:
        transport.say(f"interrupted; the finished frames are in {self.work}; run the same "
                      "command again to continue")
        return Outcome("stopped", stop.signum)

    def finish(self, done: int, transport: Transport) -> Outcome:
        """Encodes a video output (and removes the work folder) or leaves the frames."""
        frames = sorted(self.work.glob("frame_*.png"))
        source = self.source
        if is_video_path(self.output):
            encode(frames, self.output, source.fps, None if source.files else source.path,
                   transport.log)
            _remove_work(self.work)
        else:
            (self.work / WORK_RECORD).unlink()
        transport.log(f"wrote {self.output}: {count(len(frames), 'frame')} at "
                      f"{self.shape[1]}x{self.shape[0]}, {float(source.fps):g} fps, "
                      f"{count(done, 'frame')} stylized in this run")
        return Outcome("done", iteration=done)


def _content(run: VideoCommand, frame: np.ndarray) -> np.ndarray:
    return np.asarray(frame) if frame.shape[:2] == run.shape else _resized(frame, run.shape)


def _single_pass(run: VideoCommand, watch: Watch) -> int:
    """Frame after frame, each from the previous stylized frames (the paper's single pass).
    Returns the frames stylized."""
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
            result = stylize(content, run.inputs.styles, run.network.weights, settings,
                             init_image=start, previous=previous or None,
                             style_cache=run.style_cache)
            save_image(path, result.image, run.inputs.paths, run.network.label)
            stylized[index] = load_image(path)  # what a resumed run would read back
            done += 1
            if run.on_frame is not None:
                run.on_frame(index, time.perf_counter() - frame_started)
        for old in [k for k in contents if k <= index - keep]:
            del contents[old], stylized[old]
        watch.step()  # the bar shows the rate and the time left
        if (stop := watch.requested()) is not None:
            raise stop
    return done


MULTI_PASS_BLEND = 0.5
"""Ruder et al.'s delta: how much of the warped neighbour a multi-pass frame starts from."""


def _multi_pass(run: VideoCommand, watch: Watch) -> int:
    """``options.video.passes`` passes over all frames, alternating direction; within a pass every
    frame depends only on the pass before, so ``options.video.pass_batch`` frames at a time run as
    one batch sharded over all local devices. Pass 1 stylizes the frames independently; pass
    p starts each frame from a blend of its own previous-pass result and its neighbour's
    (the previous frame on forward passes, the next on backward ones) warped to it, and holds
    it to that warp by the temporal loss. Returns the frames stylized.
    """
    options, work = run.options, run.work
    folder = work / "content"
    folder.mkdir(exist_ok=True)
    count_frames = 0
    for index, frame in enumerate(read_frames(run.source)):  # once: frames at the output size
        count_frames += 1
        if not frame_path(folder, index).is_file():
            save_image(frame_path(folder, index), _content(run, frame), run.inputs.paths)
    done = 0
    for number in range(options.video.passes):
        here = work / f"pass_{number + 1}"
        here.mkdir(exist_ok=True)
        before = work / f"pass_{number}"
        step = -1 if number % 2 else 1  # the neighbour: previous frame, then the next, ...
        watch.step(0, f"pass {number + 1}/{options.video.passes}")
        for first in range(0, count_frames, options.video.pass_batch):
            indices = range(first, min(count_frames, first + options.video.pass_batch))
            if all(frame_path(here, i).is_file() for i in indices):
                watch.step(len(indices))
                continue
            contents = [load_image(frame_path(folder, i)) for i in indices]
            inits, previous = None, None
            if number > 0:
                inits, previous = zip(*[_pass_targets(i, i - step, count_frames, folder, before,
                                                      options) for i in indices])
            started = time.perf_counter()
            # Later passes start from the pass before, at the full size: one scale (see above).
            settings = options if number == 0 else options.replace(coarsest=0)
            results = stylize_batch(contents, run.inputs.styles, run.network.weights, settings,
                                    init_images=inits,
                                    previous=None if previous is None else list(previous),
                                    style_cache=run.style_cache)
            for i, result in zip(indices, results):
                save_image(frame_path(here, i), result.image, run.inputs.paths,
                           run.network.label)
                if run.on_frame is not None:
                    run.on_frame(i, (time.perf_counter() - started) / len(indices))
            done += len(indices)
            watch.step(len(indices))
            if (stop := watch.requested()) is not None:
                raise stop
    for index in range(count_frames):
        shutil.copyfile(frame_path(here, index), frame_path(work, index))
    for number in range(options.video.passes):
        shutil.rmtree(work / f"pass_{number + 1}")
    shutil.rmtree(folder)
    return done


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
    from jaxstyle.resampling import resize

    return np.asarray(resize(jnp.asarray(frame), *shape))
