"""Many content images from files to files: what ``jaxstyle batch`` does.

Content folders are expanded and outputs named and checked before any work; several hosts split
the images between them (`jax.distributed`); `jaxstyle.stylize_batch` runs each group of
equally sized images as one batch sharded over the local devices, and each group's outputs are
written as soon as it finishes. A content image that cannot be read is reported and skipped; an
output a run with the same inputs and options already finished is skipped on a rerun (the
record beside each output, ``.NAME.jaxstyle.json``, says what made it), and one made otherwise
is kept unless ``overwrite`` is given. Each output is locked while its process works on it, so
hosts sharing a folder never write one file at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax

from jaxstyle.checks import check_inputs
from jaxstyle.choices import COORDINATOR_TIMEOUT, DEFAULT_MAX_PIXELS
from jaxstyle.driver import stylize_batch
from jaxstyle.errors import ImageError, JaxstyleError, count
from jaxstyle.files import atomic_write, sha256_of
from jaxstyle.flags import error_line
from jaxstyle.images import IMAGE_SUFFIXES, load_image
from jaxstyle.options import StyleOptions
from jaxstyle.runner import (
    Interrupted,
    ProgressDisplay,
    check_outputs,
    finish_image,
    load_inputs,
    locked,
    open_network,
    stop_requests,
)
from jaxstyle.stages import plan


def record_path(output: Path) -> Path:
    """The record beside a batch output of what made it (inputs' checksums and options)."""
    return output.with_name(f".{output.name}.jaxstyle.json")

EXIT_SOME_FAILED = 1
"""``jaxstyle batch``'s exit code when some content images could not be used (the rest were)."""


class Hosts(NamedTuple):
    """Several hosts running the same command (`jax.distributed`); each process takes every
    `num_processes`-th image. ``coordinator`` None: this process alone."""

    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0
    timeout: int = COORDINATOR_TIMEOUT


def content_paths(items: Sequence[str]) -> list[Path]:
    """Files as given, folders expanded to their images in name order.

    Raises:
      JaxstyleError: a folder without images.
    """
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise JaxstyleError(f"{path}: folder holds no images")
            paths += found
        else:
            paths.append(path)
    return paths


def _made_by(output: Path) -> dict | None:
    try:
        return json.loads(record_path(output).read_text())
    except (OSError, ValueError):
        return None


def _record(output: Path, stamp: dict) -> None:
    with atomic_write(record_path(output)) as f:
        f.write(json.dumps(stamp, indent=1).encode())


def batch_files(contents: Sequence[str], styles: Sequence[str], output_dir: str, fmt: str,
                options: StyleOptions, log: Callable[[str], None], weights: str | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, hosts: Hosts = Hosts(),
                progress_bar: bool = True, overwrite: bool = False) -> int:
    """Stylizes every content image into ``output_dir/<name>.<fmt>``; returns the exit code:
    0, `EXIT_SOME_FAILED` when some content images were skipped as unreadable, or 128 + the
    signal that stopped it (the groups finished by then are kept).

    Raises:
      JaxstyleError: bad styles or options, an unusable output folder, colliding output names,
        or outputs made by another run (without `overwrite`), all before any work.
    """
    paths = content_paths(contents)
    if hosts.coordinator:
        if not 0 <= hosts.process_id < hosts.num_processes:
            raise JaxstyleError("--process-id must be in [0, --num-processes)")
        jax.distributed.initialize(hosts.coordinator, hosts.num_processes, hosts.process_id,
                                   initialization_timeout=hosts.timeout)
        paths = paths[hosts.process_id::hosts.num_processes]
        if not paths:
            log(f"process {hosts.process_id}: no images left for this process")
            return 0
    folder = Path(output_dir)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JaxstyleError(f"--output-dir {folder}: cannot create it ({exc.strerror or exc})"
                            ) from None
    try:
        inputs = load_inputs(styles, others=[str(p) for p in paths], max_pixels=max_pixels)
        outputs = [folder / f"{p.stem}.{fmt.removeprefix('.')}" for p in paths]
        named: dict[Path, Path] = {}
        for path, output in zip(paths, outputs):
            if output in named:
                raise JaxstyleError(f"{named[output]} and {path}: content images with one name; "
                                    f"both would be written to {output}")
            named[output] = path
        check_outputs(outputs, inputs.paths)
    except JaxstyleError:
        if created:  # refused before any work: leave no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    with contextlib.ExitStack() as held:
        for output in outputs:
            held.enter_context(locked(output))
        return _run(paths, outputs, inputs, styles, folder, options, log, weights, max_pixels,
                    progress_bar, overwrite)


def _run(paths: list[Path], outputs: list[Path], inputs, styles: Sequence[str], folder: Path,
         options: StyleOptions, log: Callable[[str], None], weights: str | None,
         max_pixels: int, progress_bar: bool, overwrite: bool) -> int:
    """`batch_files` once its outputs are checked and locked."""
    common = {"styles": [sha256_of(p) for p in styles], "options": options.to_dict()}
    todo, failed = [], 0
    for path, output in zip(paths, outputs):
        try:
            image = load_image(path, max_pixels)
            stamp = {"content": sha256_of(path), **common}
            check_inputs(image.shape, [s.shape for s in inputs.styles], options)
        except (OSError, JaxstyleError) as exc:
            reason = exc if isinstance(exc, JaxstyleError) else ImageError(f"{path}: {exc}")
            # Said even when quiet: the user must learn what was not done.
            print(f"jaxstyle: skipped {path}: {error_line(reason)}", file=sys.stderr, flush=True)
            failed += 1
            continue
        if output.exists():
            if json.loads(json.dumps(stamp)) == _made_by(output):
                log(f"kept {output}: already made from these inputs and options")
                continue
            if not overwrite:
                raise JaxstyleError(f"{output}: exists and was not made by this batch's inputs "
                                    "and options; use --overwrite to replace it")
        todo.append((output, image, stamp))
    if failed == len(paths):
        raise JaxstyleError(f"no content image could be used ({count(failed, 'image')} "
                            "skipped, each said why above)")
    network = open_network(weights, options.seed, log)
    log(f"{count(len(todo), 'image')} on {count(jax.local_device_count(), 'device')}"
        + (f" ({count(failed, 'image')} skipped)" if failed else ""))
    groups: dict[tuple, list] = {}  # images of one plan run as one batch
    for item in todo:
        signature = tuple(stage.size for stage in plan(item[1].shape, options))
        groups.setdefault(signature, []).append(item)
    with ProgressDisplay(None, enabled=progress_bar) as display, stop_requests(log) as stop:

        def on_progress(p) -> None:
            display.show(p, what="summed loss")
            if stop:
                raise Interrupted(stop[0])

        for group in groups.values():
            try:
                results = stylize_batch([image for _, image, _ in group], inputs.styles,
                                        network.weights, options, callback=on_progress,
                                        devices=jax.local_devices())
            except Interrupted as interrupt:
                display.close()
                print(f"interrupted; the finished images are in {folder}; run the same command "
                      "again to do the rest", file=sys.stderr, flush=True)
                return 128 + interrupt.signum
            for (output, image, stamp), result in zip(group, results):
                finish_image(output, result, image, inputs.styles, options, network,
                             inputs.paths, log)
                _record(output, stamp)
    return EXIT_SOME_FAILED if failed else 0
