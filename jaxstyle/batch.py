"""Many content images from files to files: what ``jaxstyle batch`` does.

Content folders are expanded and outputs named and checked before any work; several hosts split
the images between them (`jax.distributed`); `jaxstyle.stylize_batch` runs each group of
equally sized images as one batch sharded over the local devices, and each group's outputs are
written as soon as it finishes. A content image that cannot be read is reported and skipped; an
output a run with the same inputs and options already finished is skipped on a rerun (the
record beside each output, ``.NAME.jaxstyle.json``, says what made it), and one made otherwise
is kept unless ``overwrite`` is given. Each output is locked while its process works on it, so
hosts sharing a folder never write one file at once. The rest is the pipeline every command
goes through (`jaxstyle.pipeline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from jaxstyle.checks import check_inputs
from jaxstyle.choices import COORDINATOR_TIMEOUT, DEFAULT_MAX_PIXELS
from jaxstyle.driver import stylize_batch
from jaxstyle.errors import ImageError, JaxstyleError, count
from jaxstyle.files import atomic_write, sha256_of
from jaxstyle.flags import error_line
from jaxstyle.images import IMAGE_SUFFIXES, load_image
from jaxstyle.inputs import Inputs, load_inputs
from jaxstyle.options import StyleOptions
from jaxstyle.outputs import check_outputs
from jaxstyle.pipeline import (
    Command,
    Interrupted,
    Network,
    Outcome,
    Transport,
    Watch,
    chunk_callback,
    exit_code,
    finish_image,
    run_command,
)
from jaxstyle.stages import plan


def record_path(output: Path) -> Path:
    """The record beside a batch output of what made it (inputs' checksums and options)."""
    return output.with_name(f".{output.name}.jaxstyle.json")


class Hosts(NamedTuple):
    """Several hosts running the same command (`jax.distributed`); each process takes every
    `num_processes`-th image. ``coordinator`` None: this process alone."""

    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0
    timeout: int = COORDINATOR_TIMEOUT


class BatchRequest(NamedTuple):
    """A batch's files and run control (the options are separate: `StyleOptions`).

    Attributes:
      contents: content images and folders of them.
      styles: the style images' paths.
      output_dir: the folder outputs go to, as ``<name>.<format>`` (created if missing).
      format: the outputs' extension.
      weights: a weights file, 'random', or None to look for converted weights.
      max_pixels: refuse input images larger than this.
      hosts: the hosts sharing the work.
      overwrite: replace outputs another run (other inputs or options) made.
    """

    contents: list[str]
    styles: list[str]
    output_dir: str
    format: str = "png"
    weights: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    hosts: Hosts = Hosts()
    overwrite: bool = False


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


def batch_files(request: BatchRequest, options: StyleOptions, transport: Transport) -> int:
    """Stylizes every content image into ``output_dir/<name>.<format>``; returns the exit
    code: 0, `jaxstyle.pipeline.EXIT_SOME_FAILED` when some content images were skipped as
    unreadable, or 128 + the signal that stopped it (the groups finished by then are kept).

    Raises:
      JaxstyleError: bad styles or options, an unusable output folder, colliding output names,
        or outputs made by another run (without ``overwrite``), all before any work.
    """
    command = BatchCommand.prepare(request, options, transport)
    return 0 if command is None else exit_code(run_command(command, transport))


class _Item(NamedTuple):
    """A content image to stylize: its output, its picture, and the record of what made it."""

    output: Path
    image: np.ndarray
    stamp: dict


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchCommand(Command):
    """``jaxstyle batch`` checked and loaded (`prepare`), its outputs locked as it runs.

    Attributes:
      request: what was asked.
      paths: this process's content images; outputs (`Command.outputs`): theirs, in order.
      inputs: the style images (and every input file).
      todo: the images to stylize, once the outputs are locked (`claim`); skipped: how many
        could not be used.
    """

    request: BatchRequest
    paths: tuple[Path, ...]
    inputs: Inputs
    todo: tuple[_Item, ...] = ()
    skipped: int = 0

    @classmethod
    def prepare(cls, request: BatchRequest, options: StyleOptions, transport: Transport
                ) -> BatchCommand | None:
        """Expands the contents, takes this host's share, names the outputs and checks them,
        and loads the styles, before any work; None: no images are left for this host.

        Raises:
          JaxstyleError: as `batch_files` says.
        """
        paths, hosts = content_paths(request.contents), request.hosts
        if hosts.coordinator:
            if not 0 <= hosts.process_id < hosts.num_processes:
                raise JaxstyleError("--process-id must be in [0, --num-processes)")
            jax.distributed.initialize(hosts.coordinator, hosts.num_processes,
                                       hosts.process_id, initialization_timeout=hosts.timeout)
            paths = paths[hosts.process_id::hosts.num_processes]
            if not paths:
                transport.log(f"process {hosts.process_id}: no images left for this process")
                return None
        folder = Path(request.output_dir)
        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JaxstyleError(f"--output-dir {folder}: cannot create it "
                                f"({exc.strerror or exc})") from None
        try:
            inputs = load_inputs(request.styles, others=[str(p) for p in paths],
                                 max_pixels=request.max_pixels)
            outputs = _outputs(paths, folder, request.format)
            check_outputs(outputs, inputs.paths)
        except JaxstyleError:
            if created:  # refused before any work: leave no empty folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        return cls(options=options, outputs=tuple(outputs), weights=request.weights,
                   request=request, paths=tuple(paths), inputs=inputs)

    def claim(self, transport: Transport) -> BatchCommand:
        """Loads and checks each content image (one that cannot be used is skipped, and said),
        and keeps an output made from the same inputs and options; refuses one made otherwise
        unless ``overwrite``.

        Raises:
          JaxstyleError: an output another run made, or no content image usable.
        """
        common = {"styles": [sha256_of(p) for p in self.request.styles],
                  "options": self.options.to_dict()}
        todo, skipped = [], 0
        for path, output in zip(self.paths, self.outputs):
            try:
                image = load_image(path, self.request.max_pixels)
                stamp = {"content": sha256_of(path), **common}
                check_inputs(image.shape, [s.shape for s in self.inputs.styles], self.options)
            except (OSError, JaxstyleError) as exc:
                reason = exc if isinstance(exc, JaxstyleError) else ImageError(f"{path}: {exc}")
                # Said even when quiet: the user must learn what was not done.
                transport.say(f"jaxstyle: skipped {path}: {error_line(reason)}")
                skipped += 1
                continue
            if output.exists():
                if json.loads(json.dumps(stamp)) == _made_by(output):
                    transport.log(f"kept {output}: already made from these inputs and options")
                    continue
                if not self.request.overwrite:
                    raise JaxstyleError(f"{output}: exists and was not made by this batch's "
                                        "inputs and options; use --overwrite to replace it")
            todo.append(_Item(output, image, stamp))
        if skipped == len(self.paths):
            raise JaxstyleError(f"no content image could be used ({count(skipped, 'image')} "
                                "skipped, each said why above)")
        return dataclasses.replace(self, todo=tuple(todo), skipped=skipped)

    def start(self, network: Network, transport: Transport) -> BatchCommand:
        transport.log(f"{count(len(self.todo), 'image')} on "
                      f"{count(jax.local_device_count(), 'device')}"
                      + (f" ({count(self.skipped, 'image')} skipped)" if self.skipped else ""))
        return dataclasses.replace(self, network=network)

    def run(self, watch: Watch) -> None:
        """Runs each group of images of one plan as one batch, and writes each group's
        outputs (and their records) as soon as it finishes."""
        groups: dict[tuple, list[_Item]] = {}
        for item in self.todo:
            signature = tuple(stage.size for stage in plan(item.image.shape, self.options))
            groups.setdefault(signature, []).append(item)
        callback = chunk_callback(watch, what="summed loss")
        for group in groups.values():
            results = stylize_batch([item.image for item in group], self.inputs.styles,
                                    self.network.weights, self.options, callback=callback,
                                    devices=jax.local_devices())
            for item, result in zip(group, results):
                finish_image(item.output, result, item.image, self.inputs, self.options,
                             self.network, watch.log)
                _record(item.output, item.stamp)

    def stopped(self, stop: Interrupted, transport: Transport) -> Outcome:
        folder = Path(self.request.output_dir)
        transport.say(f"interrupted; the finished images are in {folder}; run the same command "
                      "again to do the rest")
        return Outcome("stopped", stop.signum, skipped=self.skipped)

    def finish(self, result, transport: Transport) -> Outcome:
        return Outcome("done", skipped=self.skipped)


def _outputs(paths: Sequence[Path], folder: Path, fmt: str) -> list[Path]:
    """Each content image's output, ``folder/<name>.<fmt>``.

    Raises:
      JaxstyleError: two content images of one name.
    """
    outputs = [folder / f"{p.stem}.{fmt.removeprefix('.')}" for p in paths]
    named: dict[Path, Path] = {}
    for path, output in zip(paths, outputs):
        if output in named:
            raise JaxstyleError(f"{named[output]} and {path}: content images with one name; "
                                f"both would be written to {output}")
        named[output] = path
    return outputs
