"""Checkpoints: the whole state of a run, so that a resumed run ends bit for bit where an
uninterrupted one would.

A checkpoint holds the image, every leaf of the optimizer state (the L-BFGS history included),
the iteration, the loss history, the options and the SHA-256 of every input file. It is written
atomically (flax msgpack) with the SHA-256 of its own contents, which loading verifies, and is
refused on resume when an input or an option differs (`RESUMABLE_OPTIONS` may change).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from jaxstyle.choices import RESUMABLE_OPTIONS
from jaxstyle.errors import CheckpointError
from jaxstyle.files import atomic_write, read_tagged_msgpack
from jaxstyle.option_fields import OptionsError
from jaxstyle.options import StyleOptions
from jaxstyle.run_state import RunState

FORMAT_NAME = "jaxstyle-checkpoint"
# 4: the options in groups (`StyleOptions.to_dict`); 5: coarse scales in shape buckets.
FORMAT_VERSION = 5


@dataclass
class Checkpoint:
    """A saved run: its state plus what it was computed from.

    Attributes:
      run: the run's state; ``run.state`` holds the optimizer state's leaves as a list until
        `jaxstyle.run_state.restore_state` gives them their structure back.
      options: the run's options.
      inputs: ``{"content": {"path", "sha256"}, "styles": [...], "init_image": ... | None,
        "weights": {"source", "sha256"}}``.
      output: the output path the run was writing to (absolute; an earlier jaxstyle wrote it
        as given).
      replaceable: the files the run may replace, by absolute path, each with the SHA-256 it
        had when the run last saw it: the output it was told to replace, the partial picture
        it wrote. Anything else at those paths is not the run's to replace.
    """

    run: RunState
    options: StyleOptions
    inputs: dict
    output: str
    replaceable: dict[str, str] = field(default_factory=dict)


def options_from_dict(d: dict) -> StyleOptions:
    """The options a checkpoint's JSON holds (`StyleOptions.to_dict`'s form).

    Raises:
      CheckpointError: an option is missing or unknown (a checkpoint holds every one), or
        invalid.
    """
    try:
        return StyleOptions.from_dict(d)
    except OptionsError as exc:
        raise CheckpointError(f"options: {exc} (written by another jaxstyle); finish the run "
                              "with the version that wrote it") from None


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Writes a checkpoint atomically; the previous checkpoint survives any failure."""
    leaves = jax.tree_util.tree_leaves(checkpoint.run.state)
    payload = serialization.msgpack_serialize(
        {
            "iteration": checkpoint.run.iteration,
            "x": np.asarray(checkpoint.run.x),
            "state": {str(i): np.asarray(leaf) for i, leaf in enumerate(leaves)},
            "history": {k: np.asarray(v, np.float64) for k, v in checkpoint.run.history.items()},
            "stage": checkpoint.run.stage,
            "canvas": {} if checkpoint.run.canvas is None else np.asarray(checkpoint.run.canvas),
            "options": json.dumps(checkpoint.options.to_dict()),
            "inputs": json.dumps(checkpoint.inputs),
            "output": checkpoint.output,
            "replaceable": json.dumps(checkpoint.replaceable),
        }
    )
    data = serialization.msgpack_serialize({
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload})
    path = Path(path)
    had_one = path.is_file()
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as exc:
        kept = "the previous one is intact" if had_one else "none was kept"
        raise CheckpointError(
            f"{path}: could not write the checkpoint ({exc.strerror or exc}); {kept}"
        ) from None
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads a checkpoint written by `save_checkpoint`.

    Raises:
      CheckpointError: missing, truncated or corrupt file, or another format version.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint (a run leaves "
                              "OUTPUT.ckpt next to its output)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    raw = read_tagged_msgpack(path, FORMAT_NAME, FORMAT_VERSION, CheckpointError,
                              "checkpoint", "finish the run with the version that wrote it")
    payload = raw.get("payload")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != raw.get("sha256"):
        raise CheckpointError(f"{path}: corrupt checkpoint (its checksum does not match its "
                              "contents); resume from an earlier copy or start again")
    try:
        raw = serialization.msgpack_restore(payload)
    except Exception as exc:  # msgpack raises many types on damaged input
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(exc).__name__})") from None
    try:
        leaves, history = _mapping(raw["state"], "state"), _mapping(raw["history"], "history")
        run = RunState(
            iteration=int(raw["iteration"]),
            x=np.asarray(raw["x"]),
            state=[np.asarray(leaves[str(i)]) for i in range(len(leaves))],
            history={k: [float(v) for v in vals] for k, vals in history.items()},
            stage=int(raw["stage"]),
            canvas=None if isinstance(raw["canvas"], dict) else np.asarray(raw["canvas"]),
        )
        options = options_from_dict(_mapping(_json(raw["options"], "options"), "options"))
        checkpoint = Checkpoint(run=run, options=options,
                                inputs=_check_inputs(_json(raw["inputs"], "inputs")),
                                output=str(raw["output"]),
                                replaceable=_check_replaceable(
                                    _json(raw["replaceable"], "replaceable")))
    except _Malformed as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(inf): OverflowError
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(exc).__name__}: {exc})") from None
    return checkpoint


class _Malformed(Exception):
    """A field of a checksummed payload that is not what `save_checkpoint` writes."""


_ONE_INPUT = ("content", "init_image", "content_mask", "weights")
_LIST_INPUTS = ("styles", "style_masks")


def _json(text, name: str):
    """A JSON field of the payload, parsed (Python's parser recurses per level of nesting)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise _Malformed(f"{name}: nested too deeply") from None


def _mapping(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise _Malformed(f"{name}: expected a mapping, found {_kind(value)}")
    return value


def _kind(value) -> str:
    return {list: "a list", str: "a string", type(None): "nothing"}.get(type(value),
                                                                      type(value).__name__)


def _check_inputs(inputs) -> dict:
    """A checkpoint's record of its inputs, each entry present checked (the checksum guards
    against corruption, not against a crafted file): ``{"content": {"path", "sha256"},
    "styles": [...], "init_image": ... | None, ...}``; a run from Python records none (``{}``).
    """
    _mapping(inputs, "inputs")
    for key in inputs:
        if key not in _ONE_INPUT + _LIST_INPUTS:
            raise _Malformed(f"inputs.{str(key)[:40]}: not an input a run records")

    def entry(value, name: str) -> None:
        if not isinstance(_mapping(value, name).get("path"), str):
            raise _Malformed(f"{name}: no path")

    for key in _ONE_INPUT:
        if inputs.get(key) is not None:
            entry(inputs[key], f"inputs.{key}")
    for key in _LIST_INPUTS:
        entries = inputs.get(key)
        if entries is not None and not isinstance(entries, list):
            raise _Malformed(f"inputs.{key}: expected a list of entries, found {_kind(entries)}")
        for i, value in enumerate(entries or ()):
            entry(value, f"inputs.{key}[{i}]")
    return inputs


def _check_replaceable(files) -> dict[str, str]:
    if any(not (isinstance(k, str) and isinstance(v, str)) for k, v in
           _mapping(files, "replaceable").items()):
        raise _Malformed("replaceable: expected paths and checksums")
    return files


def differences(saved: Checkpoint, options: StyleOptions, inputs: dict) -> list[str]:
    """What differs between a checkpoint and a run about to resume it (empty: nothing);
    `RESUMABLE_OPTIONS` may differ."""
    found = []
    theirs, ours = saved.options.by_name(), options.by_name()
    for key in ours:
        if key not in RESUMABLE_OPTIONS and theirs.get(key) != ours[key]:
            found.append(f"option {key}: checkpoint has {theirs.get(key)!r}, now {ours[key]!r}")

    names = {"content": "content image", "styles": "style image", "init_image": "init image",
             "style_masks": "style mask", "content_mask": "content mask", "weights": "weights"}

    def checksums(recorded: dict) -> dict[str, tuple[str | None, str]]:
        found = {}
        for key, value in recorded.items():
            entries = value if isinstance(value, list) else [value]
            for i, entry in enumerate(entries):
                label = names.get(key, key) + (f" {i + 1}" if isinstance(value, list) else "")
                found[label] = (entry or {}).get("sha256"), (entry or {}).get("path", "")
        return found

    old, new = checksums(saved.inputs), checksums(inputs)
    for label in dict.fromkeys([*old, *new]):
        before, path_before = old.get(label, (None, ""))
        now, path_now = new.get(label, (None, ""))
        if before == now:
            continue
        if not (before and now):
            found.append(f"{label}: {'added' if now else 'removed'} since the checkpoint")
        elif path_before and path_now and Path(path_before).resolve() != Path(path_now).resolve():
            found.append(f"{label}: {path_now} is another file than the checkpoint's "
                         f"{path_before}")
        else:
            found.append(f"{label} {path_now or path_before} has changed since the checkpoint")
    return found
