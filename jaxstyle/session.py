"""A stylization run from files to files: what ``jaxstyle stylize`` and ``jaxstyle resume`` do.

What is shared with the other commands (checks, loading, the network, progress, the checkpoint
policy, the report) comes from `jaxstyle.runner`; what is this command's own is here: resuming
a checkpoint, what a stop request or a diverging loss leaves behind, ``save_every``. Files are
only ever replaced by rename, so an interrupted run leaves the previous state of every file
intact.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn

from jaxstyle.checkpoint import (
    Checkpoint,
    CheckpointError,
    differences,
    load_checkpoint,
    save_checkpoint,
)
from jaxstyle.checks import check_inputs
from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.driver import stylize
from jaxstyle.errors import ImageError, OptimizationError, RunDivergedError
from jaxstyle.files import sha256_of
from jaxstyle.images import save_image
from jaxstyle.options import StyleOptions
from jaxstyle.runner import (
    Checkpointing,
    Interrupted,
    Network,
    ProgressDisplay,
    check_outputs,
    check_unfinished,
    checkpoint_path,
    finish_image,
    intermediate_path,
    load_inputs,
    locked,
    open_network,
    partial_path,
    stop_requests,
)
from jaxstyle.stages import total_iterations
from jaxstyle.weights import VGGWeights


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
      checkpoint_every: iterations between checkpoints; None: every
        `jaxstyle.runner.AUTO_CHECKPOINT_SECONDS` of running; 0: never.
      report: write a JSON report here, or None.
      max_pixels: refuse input images larger than this.
      overwrite: replace another run's unfinished work (checkpoint, partial image) on the
        output instead of refusing.
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
    overwrite: bool = False


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
    if not (recorded.get("content") and recorded.get("styles")):
        raise CheckpointError(f"{checkpoint}: records no content or style image files (a run "
                              "from Python, not from files); resume it from Python")

    def path(key):
        return recorded[key]["path"] if recorded.get(key) else None

    request = Request(
        content=path("content"), styles=[e["path"] for e in recorded["styles"]],
        output=str(recorded_output(checkpoint, saved)), weights=path("weights"),
        init_image=path("init_image"),
        style_masks=[e["path"] for e in recorded["style_masks"]] if recorded.get("style_masks")
        else None,
        content_mask=path("content_mask"), resume=checkpoint,
    )
    return request._replace(**{k: v for k, v in overrides.items() if v is not None}), saved.options


def recorded_output(checkpoint: str | os.PathLike, saved: Checkpoint) -> Path:
    """The output a checkpoint's run writes: absolute as recorded, or, for a relative one (an
    earlier jaxstyle's), the one next to the checkpoint, where that run left it."""
    output = Path(saved.output)
    return output if output.is_absolute() else Path(checkpoint).absolute().parent / output.name


def _check_replaceable(output: Path, saved: Checkpoint, resumed: str, overwrite: bool) -> None:
    """Refuses to resume onto the checkpoint's own output, or its partial picture, where a
    file is that the run was not told to replace and did not write (its checksum is not the
    recorded one), or where another checkpoint of that output is than `resumed`, unless
    `overwrite`."""
    ckpt = checkpoint_path(output)
    if not overwrite and ckpt.exists() and ckpt.resolve() != Path(resumed).resolve():
        raise CheckpointError(f"{ckpt}: another checkpoint of this output is there; resume that "
                              "one, or use --overwrite to replace it")
    for path in (output, partial_path(output)):
        if overwrite or not path.exists():
            continue
        if saved.replaceable.get(str(path.absolute())) != sha256_of(path):
            raise CheckpointError(f"{path}: is there and is not this run's to replace; use "
                                  "--overwrite to replace it, or -o to write elsewhere")


def _current(paths: Sequence[Path]) -> dict[str, str]:
    """The checksums of those of `paths` that exist, by absolute path."""
    return {str(p.absolute()): sha256_of(p) for p in paths if p.is_file()}


def _keep_partial(progress, why: str, output: Path, write_checkpoint: Callable,
                  network: Network, inputs: Sequence[str], advice: str = "") -> str:
    """Writes the partial picture and the checkpoint (which records the picture as the run's
    own) of an interrupted run; says where, and how to continue (with `advice`: flags for
    ``jaxstyle resume``)."""
    partial = save_image(partial_path(output), progress.image(), inputs, network.label)
    ckpt = write_checkpoint(progress.run_state(), partial)
    return (f"{why}; wrote {partial} (iteration {progress.iteration}) and the checkpoint "
            f"{ckpt}; continue with: jaxstyle resume {ckpt}{advice}")


def smaller_step(options: StyleOptions) -> str:
    """What to resume a run whose loss became NaN with: a searched step where it took fixed
    ones, else a quarter of its step (resuming as it was would meet the same NaN)."""
    optimization = options.optimization
    if optimization.optimizer == "lbfgs" and optimization.lbfgs_linesearch == "none":
        return " --lbfgs-linesearch zoom (a searched step; the same step would fail again)"
    config = options.optimizer_config(1.0, pixel_units=True)
    return (f" --learning-rate {config.learning_rate / 4:g} (a smaller step; the same step "
            "would fail again)")


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
    saved = load_checkpoint(request.resume) if request.resume else None
    own = recorded_output(request.resume, saved) if saved else None
    named = own is None or Path(request.output).absolute() != own  # by -o, not the checkpoint
    inputs = load_inputs(request.styles, request.content, init_image=request.init_image,
                         style_masks=request.style_masks, content_mask=request.content_mask,
                         max_pixels=request.max_pixels)
    try:
        (output,) = check_outputs([request.output], inputs.paths, request.report,
                                  request.save_every)
    except ImageError as exc:
        raise ImageError(f"{'-o' if named else 'the checkpoint names'} {exc}") from None
    with locked(output):
        if named:
            check_unfinished(output, request.overwrite, request.resume)
        else:  # its own output: what is there is checked against the checkpoint's record
            _check_replaceable(output, saved, request.resume, request.overwrite)
        return _run(request, options, log, progress_bar, saved, inputs, output)


def _run(request: Request, options: StyleOptions, log: Callable[[str], None],
         progress_bar: bool, saved, inputs, output: Path) -> int:
    """`stylize_files` once its inputs are loaded and its output locked."""
    stages = check_inputs(inputs.content.shape, [s.shape for s in inputs.styles], options)
    network = open_network(request.weights, options.seed, log)
    described = describe_inputs(request, network.weights, network.path)
    _check_resumable(request, saved, options, described)
    ckpt = checkpoint_path(output)
    policy = Checkpointing(request.checkpoint_every)
    # What is at the output now was checked (or named by -o): the run may replace it.
    replaceable = _current([output, partial_path(output)])
    moved_from = _moved_from(request, saved, output)

    def write_checkpoint(run_state, partial: Path | None = None) -> Path:
        replaceable.update(_current([partial] if partial else []))
        save_checkpoint(ckpt, Checkpoint(run_state, options, described, str(output.absolute()),
                                         replaceable))
        policy.written()
        _leave(moved_from, saved, ckpt)
        return ckpt

    start = saved.run.iteration if saved else 0
    total = total_iterations(stages)
    latest = []  # only the newest progress: each one holds a whole optimizer state
    with ProgressDisplay(total, initial=start, enabled=progress_bar) as display, \
            stop_requests(log) as stop:

        def on_progress(p) -> None:
            latest[:] = [p]
            display.show(p)
            finished = p.iteration >= total
            if request.save_every and p.iteration % request.save_every == 0 and not finished:
                save_image(intermediate_path(output, p.iteration), p.image(), inputs.paths,
                           network.label)
            if stop:
                raise Interrupted(stop[0])
            if not finished and policy.due(p.iteration):
                write_checkpoint(p.run_state())

        def report_at(i: int) -> bool:
            return bool(request.save_every and i % request.save_every == 0) or policy.stops_at(i)

        try:
            result = stylize(inputs.content, inputs.styles, network.weights, options,
                             init_image=inputs.init_image, style_masks=inputs.style_masks,
                             content_mask=inputs.content_mask, callback=on_progress,
                             report_at=report_at, resume=saved.run if saved else None)
        except Interrupted as interrupt:
            display.close()
            return _interrupted(interrupt, latest[0], output, write_checkpoint, network,
                                inputs.paths)
        except RunDivergedError as exc:
            display.close()
            _raise_keeping(exc, output, write_checkpoint, network, inputs.paths, options)
    _finish(request, options, saved, result, inputs, network, output, log)
    ckpt.unlink(missing_ok=True)
    partial_path(output).unlink(missing_ok=True)  # an interrupted run's image, now superseded
    _leave(moved_from, saved, ckpt)
    return 0


def _interrupted(interrupt: Interrupted, latest, output: Path, write_checkpoint: Callable,
                 network: Network, paths: Sequence[str]) -> int:
    """Keeps an interrupted run's newest image and checkpoint (`_keep_partial`), says where
    they went, and returns the exit status: 128 + the signal's number."""
    # Said even when quiet: the user must learn where the work went.
    why = f"interrupted by {signal.Signals(interrupt.signum).name}"
    print(_keep_partial(latest, why, output, write_checkpoint, network, paths),
          file=sys.stderr, flush=True)
    return 128 + interrupt.signum


def _raise_keeping(exc: RunDivergedError, output: Path, write_checkpoint: Callable,
                   network: Network, paths: Sequence[str], options: StyleOptions) -> NoReturn:
    """Raises `exc` again, its message saying where its last good iterate was kept (image and
    checkpoint, `_keep_partial`) when there is one past the start."""
    if exc.run.iteration > 0:
        raise OptimizationError(_keep_partial(
            exc.run, str(exc), output, write_checkpoint, network, paths,
            smaller_step(options))) from None
    raise exc


def _check_resumable(request: Request, saved: Checkpoint | None, options: StyleOptions,
                     described: dict) -> None:
    """Raises `CheckpointError` if `saved` (None: not resuming) was made from other inputs or
    options than these, naming every difference."""
    if saved is not None:
        found = differences(saved, options, described)
        if found:
            raise CheckpointError(f"cannot resume {request.resume}: " + "; ".join(found))


def _moved_from(request: Request, saved: Checkpoint | None, output: Path) -> str | None:
    """The checkpoint resumed from when the run goes to another output (-o): the checkpoint
    goes with it (a copy of it resumed onto its own output stays where the user keeps it)."""
    if saved is not None and output.absolute() != recorded_output(request.resume, saved):
        return request.resume
    return None


def _finish(request: Request, options: StyleOptions, saved: Checkpoint | None, result,
            inputs, network: Network, output: Path, log: Callable[[str], None]) -> None:
    """Writes the finished image, its summary and report (`finish_image`)."""
    earlier = len(saved.run.history.get("total", ())) if saved else 0
    start = saved.run.iteration if saved else 0
    finish_image(output, result, inputs.content, inputs.styles, options, network, inputs.paths,
                 log, ran=len(result.history.get("total", ())) - earlier, report=request.report,
                 report_fields={
                     **{k: v for k, v in request._asdict().items() if k in (
                         "content", "styles", "init_image", "style_masks", "content_mask")},
                     "resumed_from_iteration": start if saved else None})


def _leave(resumed: str | None, saved: Checkpoint | None, ckpt: Path) -> None:
    """Once a run resumed to another output has written its own checkpoint or finished:
    removes the checkpoint `resumed` (None: nothing to do) and that run's partial picture if it
    is still the one recorded, so that neither stands in the way of a later run on the old
    output."""
    if resumed is None or not Path(resumed).exists() or Path(resumed).resolve() == \
            ckpt.resolve():
        return
    partial = partial_path(recorded_output(resumed, saved))
    if partial.is_file() and saved.replaceable.get(str(partial.absolute())) == sha256_of(partial):
        partial.unlink()
    Path(resumed).unlink(missing_ok=True)

