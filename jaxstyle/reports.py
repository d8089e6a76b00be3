"""What a command says about its results: the label output files carry, the line a finished
image logs, and the JSON report (the command line's ``--report``, the studio's report.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxstyle import __version__
from jaxstyle.errors import JaxstyleError, count
from jaxstyle.files import atomic_write
from jaxstyle.options import StyleOptions
from jaxstyle.quality import Quality
from jaxstyle.weights import VGGWeights


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


def write_json(path: Path, data: dict) -> None:
    """Writes `data` as indented JSON, atomically (NumPy scalars and arrays as numbers and
    lists).

    Raises:
      OSError: it could not be written; the previous file, if any, is intact.
    """
    with atomic_write(path) as f:
        f.write(json.dumps(data, indent=2, default=_plain).encode())


def write_report(path: str | os.PathLike, report: dict) -> None:
    """Writes the JSON report ``--report`` asked for (`write_json`).

    Raises:
      JaxstyleError: it could not be written.
    """
    try:
        write_json(Path(path), report)
    except OSError as exc:
        raise JaxstyleError(f"--report {path}: could not write ({exc.strerror or exc})") from None


def _plain(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


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
