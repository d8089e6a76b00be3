"""A command's output files: where a run keeps its unfinished work next to its output, and the
checks, before any work, that no output overwrites an input, another output or another run's
unfinished work."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from jaxstyle.errors import JaxstyleError
from jaxstyle.images import can_write_in, check_output_path, input_at


def partial_path(output: Path) -> Path:
    """Where an interrupted run leaves its current picture."""
    return output.with_name(f"{output.stem}.partial{output.suffix}")


def checkpoint_path(output: Path) -> Path:
    """Where a run keeps its checkpoint (removed when it finishes)."""
    return output.with_name(output.name + ".ckpt")


def intermediate_path(output: Path, iteration: int) -> Path:
    """Where ``save_every`` puts the picture at `iteration`."""
    return output.with_name(f"{output.stem}_{iteration:05d}{output.suffix}")


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
        _check_report(Path(report), inputs, seen)
    return paths


def _check_report(target: Path, inputs: Sequence[str], outputs: dict[Path, Path]) -> None:
    """Refuses a report that would replace an input or an output, or cannot be written."""
    if any(target.resolve() == Path(p).resolve() for p in inputs):
        raise JaxstyleError(f"--report {target}: refusing to overwrite an input file")
    if target.resolve() in outputs:
        raise JaxstyleError(f"--report {target}: is also this run's output "
                            f"{outputs[target.resolve()]}")
    folder = target.parent
    if target.is_dir() or not folder.is_dir() or not can_write_in(folder):
        raise JaxstyleError(f"--report {target}: cannot write there")


def _saved_every(output: Path, other: Path) -> bool:
    """Whether `other` is where ``--save-every`` could put one of `output`'s pictures."""
    pattern = re.escape(output.stem) + r"_\d{5,}" + re.escape(output.suffix)
    return (re.fullmatch(pattern, other.name) is not None
            and input_at(output.parent / other.name, [other]) is not None)


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
