"""Running from files to files: what every command shares (stylize, resume, batch, sweep,
video and the studio).

Each command checks its outputs, loads and validates its inputs once (`load_inputs`), resolves
the network (`open_network`), shows one kind of progress (`ProgressDisplay`), keeps one
checkpoint policy (`Checkpointing`), honours stop requests (`stop_requests`) and finishes an
image the same way (`finish_image`: the file, the summary and quality lines, the JSON report).
What stays in each command is only what is its own: a checkpoint to resume, a batch's names,
a sweep's grid, a video's frames.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxstyle import __version__
from jaxstyle.choices import AUTO_CHECKPOINT_SECONDS, DEFAULT_MAX_PIXELS
from jaxstyle.errors import JaxstyleError, count
from jaxstyle.files import atomic_write
from jaxstyle.images import (
    can_write_in,
    check_output_path,
    input_at,
    load_image,
    load_mask,
    save_image,
)
from jaxstyle.options import StyleOptions
from jaxstyle.quality import Quality, measure
from jaxstyle.weights import VGGWeights, resolve_weights, usage_line

Log = Callable[[str], None]


class Inputs(NamedTuple):
    """A run's images, loaded and checked once, at the boundary.

    Attributes:
      styles: the style images, each float32 [H, W, 3] RGB in [0, 1].
      content: the content image, or None (a batch or a video brings its own).
      init_image: the start image, or None.
      style_masks: one mask image per style, or None.
      content_mask: the content loss's mask image, or None.
      paths: every input file, which no output may overwrite.
    """

    styles: list[np.ndarray]
    content: np.ndarray | None = None
    init_image: np.ndarray | None = None
    style_masks: list[np.ndarray] | None = None
    content_mask: np.ndarray | None = None
    paths: tuple[str, ...] = ()


def load_inputs(styles: Sequence[str], content: str | None = None, *,
                init_image: str | None = None, style_masks: Sequence[str] | None = None,
                content_mask: str | None = None, others: Sequence[str] = (),
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Inputs:
    """Loads a run's images; `others` are further input files (a batch's contents, a video)
    that outputs must not overwrite but that the command reads itself.

    Raises:
      JaxstyleError: masks that do not match the styles, or an image that cannot be read or
        is larger than `max_pixels` (`jaxstyle.ImageError`, naming the file).
    """
    if not styles:
        raise JaxstyleError("at least one style image is needed")
    masks = list(style_masks or [])
    if masks and len(masks) != len(styles):
        raise JaxstyleError(f"--style-masks: {count(len(masks), 'mask')} for "
                            f"{count(len(styles), 'style image')}")
    paths = [p for p in (content, *styles, *masks, init_image, content_mask) if p]

    def load(path, reader=load_image):
        return None if path is None else reader(path, max_pixels)

    content_image = load(content)  # the content first: its errors are the ones to see first
    return Inputs([load(p) for p in styles], content_image, load(init_image),
                  [load(p, load_mask) for p in masks] or None, load(content_mask, load_mask),
                  tuple(map(str, [*paths, *others])))


def check_outputs(outputs: Sequence[str | os.PathLike], inputs: Sequence[str],
                  report: str | None = None, save_every: int = 0) -> list[Path]:
    """Checks, before any work, that the outputs can be written, overwrite no input and no
    other output (a run's image, its report, its checkpoint and partial image all differ),
    nor do the pictures ``--save-every`` writes (``OUTPUT_<iteration>``) when `save_every`.

    Raises:
      JaxstyleError: an unwritable or missing folder, an unknown format, an input in the way,
        or two outputs (or the report and an output) that are the same file.
    """
    paths = [check_output_path(o, inputs) for o in outputs]
    seen: dict[Path, Path] = {}
    for path in paths:
        for kept in (path, checkpoint_path(path), partial_path(path)):
            resolved = kept.resolve()
            if resolved in seen:
                raise JaxstyleError(f"{kept}: two outputs of this run would be the same file")
            seen[resolved] = kept
            if kept != path and (other := input_at(kept, inputs)) is not None:
                raise JaxstyleError(f"{path}: its unfinished-work file {kept} would replace the "
                                    f"input {other}; choose another output")
        if save_every:
            for other in inputs:
                if _saved_every(path, Path(other)):
                    raise JaxstyleError(f"--save-every: would write over the input {other} "
                                        f"({path.stem}_<iteration>{path.suffix}); choose another "
                                        "output")
    if report:
        target = Path(report)
        if any(target.resolve() == Path(p).resolve() for p in inputs):
            raise JaxstyleError(f"--report {target}: refusing to overwrite an input file")
        if target.resolve() in seen:
            raise JaxstyleError(f"--report {target}: is also this run's output "
                                f"{seen[target.resolve()]}")
        folder = target.parent
        if target.is_dir() or not folder.is_dir() or not can_write_in(folder):
            raise JaxstyleError(f"--report {target}: cannot write there")
    return paths


def _saved_every(output: Path, other: Path) -> bool:
    """Whether `other` is where ``--save-every`` could put one of `output`'s pictures."""
    pattern = re.escape(output.stem) + r"_\d{5,}" + re.escape(output.suffix)
    return (re.fullmatch(pattern, other.name) is not None
            and input_at(output.parent / other.name, [other]) is not None)


class Network(NamedTuple):
    """The network a command runs, and how its outputs name it.

    Attributes:
      weights: the VGG weights.
      path: the file they came from ('random' for random weights).
      label: what output files say about the network that made them.
    """

    weights: VGGWeights
    path: str
    label: str


def open_network(spec: str | None, seed: int, log: Log) -> Network:
    """Resolves ``--weights`` (`jaxstyle.weights.resolve_weights`) and logs which network runs."""
    weights, path = resolve_weights(spec, seed)
    log(usage_line(weights))
    return Network(weights, path, output_label(weights))


def output_label(weights: VGGWeights) -> str:
    """What output files say about the network that made them."""
    return f"jaxstyle {__version__}; {weights.label()}"


def weights_record(weights: VGGWeights) -> dict:
    """How a report names the network: its source, the source's SHA-256, random or not."""
    return {"source": weights.source, "sha256": weights.source_sha256,
            "random": weights.is_random}


def run_report(weights: VGGWeights, options: StyleOptions, losses: dict, evaluations: int,
               timings: dict, quality: Quality, history: dict, **fields) -> dict:
    """The JSON report of a run (the CLI's ``--report``, the studio's report.json): `fields`
    (inputs, output, status, ...), then the weights, options, final losses, evaluations,
    timings, quality figures and loss history."""
    return {
        "jaxstyle_version": __version__,
        **fields,
        "weights": weights_record(weights),
        "options": options.to_dict(),
        "final_losses": losses,
        "evaluations": evaluations,
        "timings_seconds": timings,
        "quality": quality.to_dict(),
        "history": history,
    }


def partial_path(output: Path) -> Path:
    """Where an interrupted run leaves its current picture."""
    return output.with_name(f"{output.stem}.partial{output.suffix}")


def checkpoint_path(output: Path) -> Path:
    """Where a run keeps its checkpoint (removed when it finishes)."""
    return output.with_name(output.name + ".ckpt")


def intermediate_path(output: Path, iteration: int) -> Path:
    """Where ``save_every`` puts the picture at `iteration`."""
    return output.with_name(f"{output.stem}_{iteration:05d}{output.suffix}")


def lock_path(output: Path) -> Path:
    """The lock file a run holds while it writes `output` (hidden, next to it)."""
    return output.with_name(f".{output.name}.lock")


@contextlib.contextmanager
def locked(output: Path) -> Iterator[None]:
    """Holds `lock_path(output)` for the block (an advisory ``flock``: released by the system
    when the process ends however it ends), so two runs never write one output.

    Raises:
      JaxstyleError: another process holds it.
    """
    import fcntl

    path = lock_path(output)
    for _ in range(_LOCK_TRIES):
        try:
            handle = open(path, "a+")
        except OSError as exc:
            raise JaxstyleError(f"{output}: cannot lock it ({exc.strerror or exc})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()  # not ours: the file stays for the run that holds it
            raise JaxstyleError(f"{output}: another jaxstyle run ({holder}) is writing it; wait "
                                "for it to finish or choose another output") from None
        if _same_inode(handle, path):
            break
        handle.close()  # locked a file its holder removed as it finished: lock the new one
    else:
        raise JaxstyleError(f"{output}: cannot lock it (its lock file keeps changing)")
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held, so no one locks it in between
        handle.close()


_LOCK_TRIES = 5


def _same_inode(handle, path: Path) -> bool:
    """Whether the open `handle` is still the file at `path`."""
    try:
        here, there = os.fstat(handle.fileno()), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def check_unfinished(output: Path, overwrite: bool, resuming: Path | None = None) -> None:
    """Refuses to start a run over another run's unfinished work on `output` (its checkpoint
    and partial image), unless `overwrite` (or this run resumes that checkpoint).

    Raises:
      JaxstyleError: naming the files and the ways on.
    """
    ckpt, partial = checkpoint_path(output), partial_path(output)
    if resuming is not None and ckpt.resolve() == Path(resuming).resolve():
        return
    left = [p for p in (ckpt, partial) if p.exists()]
    if left and not overwrite:
        how = f"resume it (jaxstyle resume {ckpt}), " if ckpt.exists() else ""
        raise JaxstyleError(f"{' and '.join(map(str, left))}: an unfinished run's work is there; "
                            f"{how}choose another output, or use --overwrite to replace it")


class ProgressDisplay:
    """The one progress bar of every command (tqdm on stderr): iterations of the whole run
    with the loss, the scale and tile running and the time left, or frames of a video."""

    def __init__(self, total: int | None, *, initial: int = 0, unit: str = "it",
                 enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit=unit, disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True, delay=0.1)

    def show(self, progress, *, what: str = "loss") -> None:
        """Shows a `jaxstyle.StylizeProgress`; a run whose total changed (a batch's next size
        group) restarts the bar."""
        bar = self.bar
        if bar.total != progress.total_iterations or progress.iteration < bar.n:
            bar.reset(total=progress.total_iterations)
        stage = progress.stage
        where = (f" scale {stage.scale + 1}" if stage.scale else "") + (
            f" tile {stage.tile + 1}/{stage.tiles}" if stage.tiles > 1 else "")
        bar.set_postfix_str(f"{what} {progress.value:.4g}{where}", refresh=False)
        bar.update(progress.iteration - bar.n)

    def step(self, n: int = 1, description: str | None = None) -> None:
        """Counts `n` units done (a video's frames, a sweep's cells)."""
        if description is not None:
            self.bar.set_description(description, refresh=False)
        self.bar.update(n)

    def log(self, log: Log) -> Log:
        """`log` made to write its lines above the bar instead of through it."""
        def write(message: str) -> None:
            with self.bar.external_write_mode(file=sys.stderr):
                log(message)

        return write

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Checkpointing:
    """The checkpoint policy: every `every` iterations, or with ``every=None`` after
    `AUTO_CHECKPOINT_SECONDS` of running since the last one; 0: never."""

    def __init__(self, every: int | None):
        if every is not None and every < 0:
            raise JaxstyleError(f"--checkpoint-every: must be 'auto' or >= 0 (got {every})")
        self.every = every
        self.last = time.monotonic()

    def due(self, iteration: int) -> bool:
        """Whether a checkpoint is due after `iteration`."""
        if self.every is None:
            return time.monotonic() - self.last > AUTO_CHECKPOINT_SECONDS
        return bool(self.every) and iteration % self.every == 0

    def stops_at(self, iteration: int) -> bool:
        """Whether a chunk of iterations must end at `iteration` for this policy."""
        return bool(self.every) and iteration % self.every == 0

    def written(self) -> None:
        self.last = time.monotonic()


class Interrupted(Exception):
    """A stop request (a signal) ended the run after a chunk."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_requests(log: Log) -> Iterator[list[int]]:
    """The first SIGINT/SIGTERM asks the run to stop after the current chunk (the list it
    yields then holds the signal); a second one gets the default action and ends the process at
    once."""
    requested: list[int] = []

    def handler(signum, _frame):
        requested.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        log("\nstopping after the current chunk (press Ctrl-C again to quit at once)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def write_report(path: str | os.PathLike, report: dict) -> None:
    """Writes a JSON report atomically."""
    try:
        with atomic_write(path) as f:
            f.write(json.dumps(report, indent=2).encode())
    except OSError as exc:
        raise JaxstyleError(f"--report {path}: could not write ({exc.strerror or exc})") from None


def summary_line(output: Path, result, content_shape: tuple[int, ...], iterations: int,
                 per_iteration: float) -> str:
    """The line a finished image logs: size (and whether it upscaled the content), final
    losses, iterations, evaluations and timings."""
    h, w = result.image.shape[:2]
    upscaled = (f" (upscaled from the content's {content_shape[1]}x{content_shape[0]})"
                if h * w > content_shape[0] * content_shape[1] else "")
    parts = result.losses
    speed = (f", {per_iteration * 1000:.1f} ms/iteration" if iterations
             else " (nothing optimized: the output is the starting image)")
    if len(result.scales) > 1:  # a schedule: how many ran at which size, and how long each took
        speed = " (" + ", ".join(f"{n} at {max(size)} px in {seconds:.1f} s"
                                 for size, n, seconds in result.scales) + ")"
    return (f"wrote {output} ({w}x{h}){upscaled}: loss {parts['total']:.6g} (content "
            f"{parts['content']:.4g}, style {parts['style']:.4g}, tv {parts['tv']:.4g}) after "
            f"{count(iterations, 'iteration')}{speed}, {count(result.evaluations, 'evaluation')},"
            f" compile {result.timings['compile']:.1f} s")


def finish_image(output: Path, result, content: np.ndarray, styles: Sequence[np.ndarray],
                 options: StyleOptions, network: Network, inputs: Sequence[str], log: Log, *,
                 ran: int | None = None, report: str | None = None,
                 report_fields: dict | None = None) -> Quality:
    """Writes a finished `jaxstyle.StylizeResult` to `output`, logs its summary and quality
    lines and writes the JSON report if asked.

    Args:
      ran: iterations run by this process (default: all of the result's history); the time
        per iteration is the optimizer's time over these.
      report_fields: what the command adds to the report (its inputs, a resume point).

    Returns:
      The result's `Quality`.
    """
    save_image(output, result.image, inputs, network.label)
    quality = measure(network.weights, result.image, content, styles, options)
    done = len(result.history.get("total", ()))  # a scale that stopped early ran fewer
    per_iteration = result.timings["optimize"] / max(1, done if ran is None else ran)
    log(summary_line(output, result, content.shape, done, per_iteration))
    log(f"quality: {quality.summary()}")
    if report:
        write_report(report, run_report(
            network.weights, options, result.losses, result.evaluations,
            {**result.timings, "per_iteration": per_iteration}, quality, result.history,
            **(report_fields or {}), output=str(output),
            scales=[{"size": list(size), "iterations": n, "seconds": seconds}
                    for size, n, seconds in result.scales]))
    return quality
