"""``jaxstyle stylize`` and ``jaxstyle resume``: one image from files to files, checkpointed.

The pipeline (`jaxstyle.pipeline`) does what every command does; what is this command's own is
here: resuming a checkpoint, the checkpoint policy (`Checkpointing`), what a stop request or a
diverging loss leaves behind (the partial picture and the checkpoint), ``save_every``. Files
are only ever replaced by rename, so an interrupted run leaves the previous state of every
file intact.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Sequence
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
from jaxstyle.choices import AUTO_CHECKPOINT_SECONDS, DEFAULT_MAX_PIXELS
from jaxstyle.errors import ImageError, JaxstyleError, OptimizationError, RunDivergedError
from jaxstyle.files import sha256_of
from jaxstyle.images import save_image
from jaxstyle.inputs import Inputs, load_inputs
from jaxstyle.options import StyleOptions
from jaxstyle.outputs import (
    check_outputs,
    check_unfinished,
    checkpoint_path,
    intermediate_path,
    partial_path,
)
from jaxstyle.pipeline import (
    Command,
    Interrupted,
    Network,
    Outcome,
    Transport,
    Watch,
    exit_code,
    finish_image,
    run_command,
    scoring_ahead,
    stylize_watched,
)
from jaxstyle.reports import write_report
from jaxstyle.stages import Stage, total_iterations
from jaxstyle.weights import VGGWeights


class StylizeRequest(NamedTuple):
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
        `jaxstyle.choices.AUTO_CHECKPOINT_SECONDS` of running; 0: never.
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


def stylize_files(request: StylizeRequest, options: StyleOptions, transport: Transport) -> int:
    """Runs `jaxstyle.stylize` from files to files; returns the exit code (0, or 128 + the
    signal that stopped it).

    Everything is checked before any expensive work. While running, a checkpoint is written
    when due; a stop request or a diverging loss leaves ``OUTPUT.partial`` and the checkpoint,
    and says how to continue. A finished run removes both and writes the output, then logs
    the final losses and a `jaxstyle.quality` line.

    Raises:
      JaxstyleError: bad input, or a checkpoint that does not match the run.
    """
    return exit_code(run_command(StylizeCommand.prepare(request, options), transport))


def describe_inputs(request: StylizeRequest, weights: VGGWeights, weights_path: str) -> dict:
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


def resume_request(checkpoint: str, **overrides) -> tuple[StylizeRequest, StyleOptions]:
    """The request and options of the run saved in `checkpoint` (its inputs, options and
    output), with `overrides` (run control such as ``output`` or ``report``) applied."""
    saved = load_checkpoint(checkpoint)
    recorded = saved.inputs
    if not (recorded.get("content") and recorded.get("styles")):
        raise CheckpointError(f"{checkpoint}: records no content or style image files (a run "
                              "from Python, not from files); resume it from Python")

    def path(key):
        return recorded[key]["path"] if recorded.get(key) else None

    request = StylizeRequest(
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


def smaller_step(options: StyleOptions) -> str:
    """What to resume a run whose loss became NaN with: a searched step where it took fixed
    ones, else a quarter of its step (resuming as it was would meet the same NaN)."""
    optimization = options.optimization
    if optimization.optimizer == "lbfgs" and optimization.lbfgs_linesearch == "none":
        return " --lbfgs-linesearch zoom (a searched step; the same step would fail again)"
    config = options.optimizer_config(1.0, pixel_units=True)
    return (f" --learning-rate {config.learning_rate / 4:g} (a smaller step; the same step "
            "would fail again)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StylizeCommand(Command):
    """``jaxstyle stylize`` (or ``resume``) checked and loaded (`prepare`).

    Attributes:
      request: what was asked.
      inputs: its images.
      output: the output image.
      stages: its plan.
      saved: the checkpoint it resumes, or None.
      named: whether `output` was named by ``-o`` rather than by the checkpoint.
      checkpoints: where it keeps its checkpoint (`start`).
    """

    request: StylizeRequest
    inputs: Inputs
    output: Path
    stages: tuple[Stage, ...]
    saved: Checkpoint | None = None
    named: bool = True
    checkpoints: _Checkpoints | None = None

    @classmethod
    def prepare(cls, request: StylizeRequest, options: StyleOptions) -> StylizeCommand:
        """Loads the checkpoint and the images and checks the output, the options and every
        size of the plan, before any work.

        Raises:
          JaxstyleError: naming what is wrong.
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
        stages = check_inputs(inputs.content.shape, [s.shape for s in inputs.styles], options)
        return cls(options=options, outputs=(output,), weights=request.weights, request=request,
                   inputs=inputs, output=output, stages=tuple(stages), saved=saved, named=named)

    def progress(self) -> tuple[int | None, str, int]:
        return total_iterations(self.stages), "it", self.saved.run.iteration if self.saved else 0

    def claim(self, transport: Transport) -> StylizeCommand:
        """Refuses another run's unfinished work on the output (`check_unfinished`), or, on
        the checkpoint's own output, what that run did not write."""
        request = self.request
        if self.named:
            check_unfinished(self.output, request.overwrite, request.resume)
        else:  # its own output: what is there is checked against the checkpoint's record
            _check_replaceable(self.output, self.saved, request.resume, request.overwrite)
        return self

    def start(self, network: Network, transport: Transport) -> StylizeCommand:
        """Checks that a resumed checkpoint was made from these inputs and options."""
        described = describe_inputs(self.request, network.weights, network.path)
        if self.saved is not None and (found := differences(self.saved, self.options,
                                                             described)):
            raise CheckpointError(f"cannot resume {self.request.resume}: " + "; ".join(found))
        return dataclasses.replace(self, network=network,
                                   checkpoints=_Checkpoints(self, described))

    def run(self, watch: Watch):
        request, output, total = self.request, self.output, total_iterations(self.stages)
        policy = self.checkpoints.policy

        def own(p, stopping: bool) -> None:
            finished = p.iteration >= total
            if request.save_every and p.iteration % request.save_every == 0 and not finished:
                save_image(intermediate_path(output, p.iteration), p.image(), self.inputs.paths,
                           self.network.label)
            if not stopping and not finished and policy.due(p.iteration):
                self.checkpoints.write(p.run_state())

        def ends(i: int) -> bool:
            return bool(request.save_every and i % request.save_every == 0) or policy.stops_at(i)

        scoring = scoring_ahead(self.inputs, self.network, self.options)
        try:
            result = stylize_watched(self.inputs, self.network, self.options, watch, own=own,
                                     ends=ends, resume=self.saved.run if self.saved else None,
                                     scoring=scoring)
        except RunDivergedError as exc:
            watch.close()
            self._raise_keeping(exc)
        return result, scoring

    def stopped(self, stop: Interrupted, transport: Transport) -> Outcome:
        """Keeps the newest picture and the checkpoint (`_keep_partial`) and says where they
        went, even when quiet: the user must learn where the work went."""
        why = f"interrupted by {signal.Signals(stop.signum).name}"
        transport.say(self._keep_partial(stop.reached, why))
        return Outcome("stopped", stop.signum, iteration=stop.reached.iteration)

    def finish(self, result, transport: Transport) -> Outcome:
        """Writes the finished image, its summary and report (`finish_image`), and removes
        the checkpoint and the partial picture."""
        saved, output = self.saved, self.output
        result, scoring = result
        earlier = len(saved.run.history.get("total", ())) if saved else 0
        _, report = finish_image(
            output, result, self.inputs.content, self.inputs, self.options, self.network,
            transport.log, ran=len(result.history.get("total", ())) - earlier, fields={
                **{k: v for k, v in self.request._asdict().items() if k in (
                    "content", "styles", "init_image", "style_masks", "content_mask")},
                "resumed_from_iteration": saved.run.iteration if saved else None},
            scoring=scoring)
        if self.request.report:
            write_report(self.request.report, report)
        ckpt = checkpoint_path(output)
        ckpt.unlink(missing_ok=True)
        partial_path(output).unlink(missing_ok=True)  # an interrupted run's image, superseded
        self.checkpoints.leave()
        return Outcome("done", image=result.image, report=report,
                       iteration=len(result.history.get("total", ())))

    def _keep_partial(self, progress, why: str, advice: str = "") -> str:
        """Writes the partial picture and the checkpoint (which records the picture as the
        run's own) of an interrupted run; says where, and how to continue (with `advice`: flags
        for ``jaxstyle resume``)."""
        partial = save_image(partial_path(self.output), progress.image(), self.inputs.paths,
                             self.network.label)
        ckpt = self.checkpoints.write(progress.run_state(), partial)
        return (f"{why}; wrote {partial} (iteration {progress.iteration}) and the checkpoint "
                f"{ckpt}; continue with: jaxstyle resume {ckpt}{advice}")

    def _raise_keeping(self, exc: RunDivergedError) -> NoReturn:
        """Raises `exc` again, its message saying where its last good iterate was kept (image
        and checkpoint, `_keep_partial`) when there is one past the start."""
        if exc.run.iteration > 0:
            raise OptimizationError(self._keep_partial(
                exc.run, str(exc), smaller_step(self.options))) from None
        raise exc


class _Checkpoints:
    """Where a run keeps its checkpoint (``OUTPUT.ckpt``): written when `policy` says and when
    the run stops, recording the run's inputs and the files it may replace (what was at the
    output when it started, and the partial pictures it wrote)."""

    def __init__(self, command: StylizeCommand, described: dict):
        output, request, saved = command.output, command.request, command.saved
        self.path, self.command, self.described = checkpoint_path(output), command, described
        self.policy = Checkpointing(request.checkpoint_every)
        # What is at the output now was checked (or named by -o): the run may replace it.
        self.replaceable = _current([output, partial_path(output)])
        # Resumed to another output (-o): the checkpoint goes with it (a copy of it resumed
        # onto its own output stays where the user keeps it).
        self.moved_from = request.resume if saved is not None and output.absolute() != \
            recorded_output(request.resume, saved) else None

    def write(self, run_state, partial: Path | None = None) -> Path:
        command = self.command
        self.replaceable.update(_current([partial] if partial else []))
        save_checkpoint(self.path, Checkpoint(run_state, command.options, self.described,
                                              str(command.output.absolute()), self.replaceable))
        self.policy.written()
        self.leave()
        return self.path

    def leave(self) -> None:
        """Once a run resumed to another output has written its own checkpoint or finished:
        removes the checkpoint it resumed and that run's partial picture if it is still the
        one recorded, so that neither stands in the way of a later run on the old output."""
        resumed, saved = self.moved_from, self.command.saved
        if resumed is None or not Path(resumed).exists() or Path(resumed).resolve() == \
                self.path.resolve():
            return
        partial = partial_path(recorded_output(resumed, saved))
        if partial.is_file() and saved.replaceable.get(str(partial.absolute())) == \
                sha256_of(partial):
            partial.unlink()
        Path(resumed).unlink(missing_ok=True)


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
