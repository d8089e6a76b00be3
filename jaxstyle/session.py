"""A stylization run from files to files: what ``jaxstyle stylize`` and ``jaxstyle resume`` do.

The policy around `jaxstyle.stylize` lives here, not in the command line: when to checkpoint,
what a stop request (SIGINT/SIGTERM) does, which files a run leaves behind, the progress bar and
the JSON report. Files are only ever replaced by rename, so an interrupted run leaves the
previous state of every file intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from jaxstyle import __version__
from jaxstyle.checkpoint import (
    Checkpoint,
    CheckpointError,
    differences,
    load_checkpoint,
    save_checkpoint,
)
from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.errors import JaxstyleError, OptimizationError, count
from jaxstyle.files import atomic_write, sha256_of
from jaxstyle.images import check_output_path, load_image, save_image
from jaxstyle.options import StyleOptions
from jaxstyle.plan import total_iterations
from jaxstyle.problem import check_inputs
from jaxstyle.quality import measure
from jaxstyle.stylize import stylize
from jaxstyle.weights import VGGWeights, find_weights, load_weights, random_weights

AUTO_CHECKPOINT_SECONDS = 120.0
"""With ``checkpoint_every=None``: write a checkpoint after this much running since the last."""


class Request(NamedTuple):
    """A run's files and run control (the options are separate: `StyleOptions`).

    Attributes:
      content: the content image's path.
      styles: the style images' paths.
      output: the output image's path.
      weights: a weights file, 'random', or None to look for converted weights.
      init_image: start from this image, or None.
      style_masks: one mask per style, or None.
      content_mask: the content loss's mask, or None.
      resume: the checkpoint to continue, or None.
      save_every: also save ``OUTPUT_<iteration>`` every this many iterations (0: never).
      checkpoint_every: iterations between checkpoints; None: every `AUTO_CHECKPOINT_SECONDS`;
        0: never.
      report: write a JSON report here, or None.
      max_pixels: refuse input images larger than this.
    """

    content: str
    styles: list[str]
    output: str
    weights: str | None = None
    init_image: str | None = None
    style_masks: list[str] | None = None
    content_mask: str | None = None
    resume: str | None = None
    save_every: int = 0
    checkpoint_every: int | None = None
    report: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


def load_weights_named(spec: str | None, seed: int) -> tuple[VGGWeights, str]:
    """``(weights, path)`` for a ``--weights`` value: 'random' (untrained, seeded), a file, or
    None (`jaxstyle.weights.find_weights`)."""
    if spec == "random":
        return random_weights(seed), "random"
    path = str(find_weights(spec))
    return load_weights(path), path


def describe_weights(weights: VGGWeights) -> str:
    """The log line that says which network a run uses."""
    if weights.is_random:
        return (f"weights: {weights.network}, {weights.source} -- NOT pretrained (a test aid): "
                "the result shows the pipeline working, not style transfer")
    return (f"weights: {weights.network} from {weights.source} (sha256 "
            f"{weights.source_sha256[:12]})")


def weights_label(weights: VGGWeights) -> str:
    """What the output files say about the network that made them."""
    return f"jaxstyle {__version__}; {weights.label()}"


def partial_path(output: Path) -> Path:
    """Where an interrupted run leaves its current picture."""
    return output.with_name(f"{output.stem}.partial{output.suffix}")


def checkpoint_path(output: Path) -> Path:
    """Where a run keeps its checkpoint (removed when it finishes)."""
    return output.with_name(output.name + ".ckpt")


def intermediate_path(output: Path, iteration: int) -> Path:
    """Where ``save_every`` puts the picture at `iteration`."""
    return output.with_name(f"{output.stem}_{iteration:05d}{output.suffix}")


class Interrupted(Exception):
    """A stop request (a signal) ended the run after a chunk."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_requests(log: Callable[[str], None]) -> Iterator[list[int]]:
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


def checkpoint_due(every: int | None, iteration: int, seconds_since_last: float) -> bool:
    """Whether a checkpoint is due after `iteration` (``every``: iterations, None: every
    `AUTO_CHECKPOINT_SECONDS`, 0: never)."""
    if every is None:
        return seconds_since_last > AUTO_CHECKPOINT_SECONDS
    return bool(every) and iteration % every == 0


def describe_inputs(request: Request, weights: VGGWeights, weights_path: str) -> dict:
    """Paths and SHA-256 of every input, as a checkpoint records them."""
    def entry(path):
        return None if path is None else {"path": str(Path(path).resolve()),
                                          "sha256": sha256_of(path)}

    return {
        "content": entry(request.content),
        "styles": [entry(p) for p in request.styles],
        "init_image": entry(request.init_image),
        "style_masks": [entry(p) for p in request.style_masks] if request.style_masks else None,
        "content_mask": entry(request.content_mask),
        "weights": {"path": weights_path, "source": weights.source,
                    "sha256": weights.source_sha256 or weights.source},
    }


def resume_request(checkpoint: str, **overrides) -> tuple[Request, StyleOptions]:
    """The request and options of the run saved in `checkpoint` (its inputs, options and
    output), with `overrides` (run control such as ``output`` or ``report``) applied."""
    saved = load_checkpoint(checkpoint)
    recorded = saved.inputs

    def path(key):
        return recorded[key]["path"] if recorded.get(key) else None

    request = Request(
        content=path("content"), styles=[e["path"] for e in recorded["styles"]],
        output=saved.output, weights=path("weights"), init_image=path("init_image"),
        style_masks=[e["path"] for e in recorded["style_masks"]] if recorded.get("style_masks")
        else None,
        content_mask=path("content_mask"), resume=checkpoint,
    )
    return request._replace(**{k: v for k, v in overrides.items() if v is not None}), saved.options


def _check_report_path(path: Path, protected: list[str]) -> None:
    if any(Path(p).resolve() == path.resolve() for p in protected):
        raise JaxstyleError(f"--report {path}: refusing to overwrite an input file")
    folder = path.parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise JaxstyleError(f"--report {path}: cannot write there")


def write_report(path: Path, report: dict) -> None:
    """Writes the JSON report atomically."""
    try:
        with atomic_write(path) as f:
            f.write(json.dumps(report, indent=2).encode())
    except OSError as exc:
        raise JaxstyleError(f"--report {path}: could not write ({exc.strerror or exc})") from None


def summary_line(output: Path, result, content_shape: tuple[int, ...], iterations: int,
                 per_iteration: float) -> str:
    """The line a finished run logs: size (and whether it upscaled the content), final losses,
    iterations, evaluations and timings."""
    h, w = result.image.shape[:2]
    upscaled = (f" (upscaled from the content's {content_shape[1]}x{content_shape[0]})"
                if h * w > content_shape[0] * content_shape[1] else "")
    parts = result.losses
    speed = (f", {per_iteration * 1000:.1f} ms/iteration" if iterations
             else " (nothing optimized: the output is the starting image)")
    return (f"wrote {output} ({w}x{h}){upscaled}: loss {parts['total']:.6g} (content "
            f"{parts['content']:.4g}, style {parts['style']:.4g}, tv {parts['tv']:.4g}) after "
            f"{count(iterations, 'iteration')}{speed}, {count(result.evaluations, 'evaluation')},"
            f" compile {result.timings['compile']:.1f} s")


def stylize_files(request: Request, options: StyleOptions, log: Callable[[str], None],
                  progress_bar: bool = True) -> int:
    """Runs `jaxstyle.stylize` from files to files; returns the exit code (0, or 128 + the
    signal that stopped it).

    Everything is checked before any expensive work. While running, a checkpoint is written
    when due; a stop request or a diverging loss leaves ``OUTPUT.partial`` and the checkpoint,
    and says how to continue. A finished run removes both and writes the output, then logs
    the final losses and a `jaxstyle.quality` line.

    Raises:
      JaxstyleError: bad input, or a checkpoint that does not match the run.
    """
    from tqdm import tqdm

    saved = load_checkpoint(request.resume) if request.resume else None
    masks = request.style_masks or []
    if masks and len(masks) != len(request.styles):
        raise JaxstyleError(f"--style-masks: {count(len(masks), 'mask')} for "
                            f"{count(len(request.styles), 'style image')}")
    inputs = [request.content, *request.styles, *masks,
              *[p for p in (request.init_image, request.content_mask) if p]]
    output = check_output_path(request.output, inputs)
    if request.report:
        _check_report_path(Path(request.report), inputs)
    def load(path):
        return load_image(path, request.max_pixels)

    content, styles = load(request.content), [load(p) for p in request.styles]
    init_image = load(request.init_image) if request.init_image else None
    style_masks = [load(p) for p in masks] or None
    content_mask = load(request.content_mask) if request.content_mask else None
    stages = check_inputs(content.shape, [s.shape for s in styles], options)
    weights, weights_path = load_weights_named(request.weights, options.seed)
    described = describe_inputs(request, weights, weights_path)
    if saved is not None:
        found = differences(saved, options, described)
        if found:
            raise CheckpointError(f"cannot resume {request.resume}: " + "; ".join(found))
    log(describe_weights(weights))
    label = weights_label(weights)
    ckpt = checkpoint_path(output)
    last_checkpoint = [time.monotonic()]

    def write_checkpoint(run_state) -> None:
        save_checkpoint(ckpt, Checkpoint(run_state, options, described, str(output)))
        last_checkpoint[0] = time.monotonic()

    def keep_partial(progress, why: str) -> str:
        write_checkpoint(progress.run_state())
        partial = save_image(partial_path(output), progress.image(), inputs, label)
        return (f"{why}; wrote {partial} (iteration {progress.iteration}) and the checkpoint "
                f"{ckpt}; continue with: jaxstyle resume {ckpt}")

    start = saved.run.iteration if saved else 0
    total = total_iterations(stages)
    bar = tqdm(total=total, initial=start, unit="it", disable=not progress_bar, file=sys.stderr,
               dynamic_ncols=True, delay=0.1)
    latest = []  # only the newest progress: each one holds a whole optimizer state
    with stop_requests(log) as stop:

        def on_progress(p) -> None:
            latest[:] = [p]
            where = (f" scale {p.scale + 1}/{stages[-1].scale + 1}" if stages[-1].scale else "") + (
                f" tile {p.tile + 1}/{p.tiles}" if p.tiles > 1 else "")
            bar.set_postfix_str(f"loss {p.value:.4g}{where}", refresh=False)
            bar.update(p.iteration - bar.n)
            finished = p.iteration >= total
            if request.save_every and p.iteration % request.save_every == 0 and not finished:
                save_image(intermediate_path(output, p.iteration), p.image(), inputs, label)
            if stop:
                raise Interrupted(stop[0])
            if not finished and checkpoint_due(request.checkpoint_every, p.iteration,
                                               time.monotonic() - last_checkpoint[0]):
                write_checkpoint(p.run_state())

        def report_at(i: int) -> bool:
            every = request.checkpoint_every
            return bool(request.save_every and i % request.save_every == 0
                        or every and i % every == 0)

        try:
            result = stylize(content, styles, weights, options, init_image=init_image,
                             style_masks=style_masks, content_mask=content_mask,
                             callback=on_progress, report_at=report_at,
                             resume=saved.run if saved else None)
        except Interrupted as interrupt:
            bar.close()
            # Said even when quiet: the user must learn where the work went.
            why = f"interrupted by {signal.Signals(interrupt.signum).name}"
            print(keep_partial(latest[0], why), file=sys.stderr, flush=True)
            return 128 + interrupt.signum
        except OptimizationError as exc:
            bar.close()
            if exc.last_good is not None and exc.last_good.iteration > 0:
                raise OptimizationError(keep_partial(exc.last_good, str(exc))) from None
            raise
        finally:
            bar.close()
    save_image(output, result.image, inputs, label)
    ckpt.unlink(missing_ok=True)
    partial_path(output).unlink(missing_ok=True)  # an interrupted run's image, now superseded
    quality = measure(weights, result.image, content, styles, options)
    # Counted from the history, not the plan: a scale that stalled ran fewer than planned.
    done = len(result.history.get("total", ()))
    ran = done - (len(saved.run.history.get("total", ())) if saved else 0)
    per_iteration = result.timings["optimize"] / max(1, ran)
    log(summary_line(output, result, content.shape, done, per_iteration))
    log(f"quality: {quality.summary()}")
    if request.report:
        write_report(Path(request.report), {
            "jaxstyle_version": __version__,
            **{k: v for k, v in request._asdict().items() if k in (
                "content", "styles", "init_image", "style_masks", "content_mask")},
            "output": str(output),
            "resumed_from_iteration": start if saved else None,
            "weights": {"source": weights.source, "sha256": weights.source_sha256,
                        "random": weights.is_random},
            "options": options.to_dict(),
            "final_losses": result.losses,
            "evaluations": result.evaluations,
            "timings_seconds": {**result.timings, "per_iteration": per_iteration},
            "quality": quality.to_dict(),
            "history": result.history,
        })
    return 0
