"""Feeds `load_checkpoint` and the checks ``jaxstyle resume`` makes before it runs anything
mutated checkpoints whose checksum is valid, in a child process with bounded memory
(`fuzzing.bounded_memory`).

    python tests/checkpoint_fuzzer.py SEEDS CASES SEED KEEP  # CASES mutants of SEEDS/*.ckpt

The checksum guards against corruption, not against a crafted file: each mutant's payload is
changed and its SHA-256 computed again, so that the change reaches the fields' checks. Mutants
are drawn from a `random.Random(SEED)`: a payload field deleted, added or replaced by a value of
another type or an extreme one (huge integers, NaN, bytes, nested containers, arrays of other
dtypes and shapes), a field of the JSON it holds (options, inputs, the files it may replace)
changed the same way or replaced by text that is no JSON or nests deeply, the payload's bytes
mutated, and sometimes the envelope (format, version, checksum) itself. A checkpoint that
loads then goes through `resume_request` (what ``jaxstyle resume`` reads of it), `differences`
against the run it was saved from, and `restore_state` against that run's optimizer state.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
import traceback
from pathlib import Path

import numpy as np
from fuzzing import bounded_memory, integer, main, mutate_bytes, run_script, summary, tree_slots


def run_child(*args: str, timeout: float = 600) -> dict:
    """Runs this file as a child process with `args` and returns its report."""
    return run_script(__file__, *args, timeout=timeout)


def _state_leaves() -> list[np.ndarray]:
    """Leaves shaped like a small L-BFGS state's: the history pairs, scalars, counters."""
    rng = np.random.default_rng(0)
    return [rng.normal(size=(4, 8, 8, 3)).astype(np.float32),
            rng.normal(size=(4, 8, 8, 3)).astype(np.float32),
            rng.normal(size=4).astype(np.float32), np.float32(0.5), np.int32(3),
            np.zeros((8, 8, 3), np.float32), np.array(True)]


def seed_files(folder: Path) -> dict[str, Path]:
    """Two checkpoints as ``jaxstyle stylize`` writes them, with the input files they name: a
    one-style run in its first stage, and a two-style run with masks in a later stage (with its
    canvas). Returns them by name (``*.ckpt``)."""
    from PIL import Image

    from jaxstyle.checkpoint import Checkpoint, RunState, save_checkpoint
    from jaxstyle.files import sha256_of
    from jaxstyle.options import StyleOptions

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    files = {}
    for name in ("content", "style1", "style2", "mask1", "mask2"):
        files[name] = folder / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(files[name])
    weights = folder / "weights.msgpack"
    weights.write_bytes(b"weights")

    def entry(path: Path) -> dict:
        return {"path": str(path.resolve()), "sha256": sha256_of(path)}

    output = (folder / "out.png").resolve()
    x = rng.random((8, 8, 3)).astype(np.float32)
    history = {"total": [3.0, 2.0, 1.5], "content": [1.0, 0.9, 0.8], "style": [2.0, 1.1, 0.7]}
    one = Checkpoint(
        RunState(3, x, _state_leaves(), history),
        StyleOptions(size=8, iterations=10, progress_every=1),
        {"content": entry(files["content"]), "styles": [entry(files["style1"])],
         "init_image": None, "style_masks": None, "content_mask": None,
         "weights": {"path": str(weights), "source": "fuzz seed", "sha256": "ab" * 32}},
        str(output), {str(output): "cd" * 32})
    two = Checkpoint(
        RunState(7, x, _state_leaves(), history, stage=1, canvas=rng.random((8, 8, 3),
                                                                             np.float32)),
        StyleOptions(scales=(4, 8), scale_iterations=(5, 5), style_blend_weights=(0.3, 0.7)),
        {**one.inputs, "styles": [entry(files["style1"]), entry(files["style2"])],
         "style_masks": [entry(files["mask1"]), entry(files["mask2"])],
         "content_mask": entry(files["mask1"])},
        str(output), {})
    return {"one.ckpt": save_checkpoint(folder / "one.ckpt", one),
            "two.ckpt": save_checkpoint(folder / "two.ckpt", two)}


def _random_value(rng: random.Random, depth: int = 0):
    """A value of any type a msgpack payload or its JSON can hold, extreme ones often."""
    choices = [None, True, False, 0, -1, 2**31, 2**63 - 1, -2**63, 2**64 - 1, 3.5, -0.0,
               float("nan"), float("inf"), -float("inf"), 1e308, "", "x" * 5000, "١٢٣",
               "\u0000", "../../etc/passwd", "/", "content", integer(rng), [], {}]
    if depth < 3:
        choices += [[_random_value(rng, depth + 1) for _ in range(rng.randint(1, 3))],
                    {rng.choice(("path", "sha256", "x", "0", "")): _random_value(rng, depth + 1)}]
    return rng.choice(choices)


def _random_payload_value(rng: random.Random):
    """`_random_value`, or what only msgpack holds: bytes and arrays of odd dtypes and shapes."""
    arrays = (np.zeros(0, np.float32), np.zeros((0, 3), np.float32), np.ones((8, 8, 3)),
              np.ones((8, 8, 3), np.float16), np.ones((8, 8, 3), np.int8),
              np.full((8, 8, 3), np.nan, np.float32), np.ones((3, 8, 8), np.float32),
              np.ones((1, 1, 1, 1, 1), np.float32), np.array(3.0), np.array(["ab"]),
              np.ones(2, np.complex64), np.ones((2, 2), np.bool_))
    if rng.random() < 0.3:
        return rng.choice(arrays)
    if rng.random() < 0.1:
        return rng.choice((b"", b"\x00" * 8, b"not json", b"{}"))
    return _random_value(rng)


def _mutate_tree(tree, rng: random.Random, value) -> object:
    """Deletes, replaces (by `value()`) or adds one entry somewhere in `tree`."""
    slots = tree_slots(tree)
    if not slots:
        return value()
    node, key = rng.choice(slots)
    action = rng.randrange(3)
    if action == 0 and isinstance(node, dict):
        del node[key]
    elif action == 0 and node:
        node.pop(rng.randrange(len(node)))
    elif action == 1 or not isinstance(node, dict):
        node[key] = value()
    else:
        node[rng.choice(("extra", "path", "styles", "size", "iterations", "0", ""))] = value()
    return tree


def _json_text(rng: random.Random, text: str) -> str:
    """One of the payload's JSON texts mutated, or replaced by text that is no object."""
    if rng.random() < 0.2:
        return rng.choice(("", "{", "null", "[]", "3", '"x"', "NaN", "1" * 5000, "[" * 100_000,
                           '{"a": ' * 5000, "\udcff", '{"size": 1e400}', "{}" * 3))
    tree = json.loads(text)
    tree = _mutate_tree(tree, rng, lambda: _random_value(rng))
    return json.dumps(tree)


def mutate_payload(payload: dict, rng: random.Random) -> dict:
    """One to three changes to a checkpoint's payload (as `msgpack_restore` gives it)."""
    payload = copy.deepcopy(payload)
    for _ in range(rng.choice((1, 1, 2, 3))):
        key = rng.choice(sorted(payload))
        action = rng.randrange(6)
        if action == 0:
            del payload[key]
        elif action == 1:
            payload[key] = _random_payload_value(rng)
        elif action == 2:
            payload[rng.choice(("extra", "0", "versions"))] = _random_payload_value(rng)
        elif key in ("options", "inputs", "replaceable") and isinstance(payload[key], str):
            payload[key] = _json_text(rng, payload[key])
        elif isinstance(payload[key], dict):  # state leaves, history, an empty canvas
            payload[key] = _mutate_tree(payload[key], rng, lambda: _random_payload_value(rng))
        elif isinstance(payload[key], np.ndarray):
            a = payload[key]
            payload[key] = rng.choice((a.astype(np.float64), a[..., :1], a.reshape(-1),
                                       a[:0], np.swapaxes(a, 0, -1) if a.ndim else a, a * np.nan))
        else:
            payload[key] = rng.choice((integer(rng), str(payload[key]), float(integer(rng))))
    return payload


def envelope(payload: bytes, rng: random.Random | None = None) -> bytes:
    """A checkpoint file around `payload`, its checksum valid (with `rng`: now and then a
    field of the envelope changed instead)."""
    from flax import serialization

    from jaxstyle.checkpoint import FORMAT_NAME, FORMAT_VERSION

    outer = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
             "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}
    if rng is not None and rng.random() < 0.1:
        outer[rng.choice(sorted(outer))] = rng.choice(
            (None, 0, 1, 2, 4, -1, 2**64 - 1, 3.0, True, "3", "", b"", "jaxstyle-checkpoint",
             {"a": 1}, [3]))
    return serialization.msgpack_serialize(outer)


def mutants(seeds: dict[str, dict], rng: random.Random):
    """Endless (seed name, checkpoint bytes) mutants of `seeds` (their payloads)."""
    from flax import serialization

    while True:
        name = rng.choice(sorted(seeds))
        if rng.random() < 0.2:
            data = mutate_bytes(serialization.msgpack_serialize(seeds[name]), rng)
        else:
            try:
                data = serialization.msgpack_serialize(mutate_payload(seeds[name], rng))
            except Exception:  # a value msgpack cannot hold (an integer past 64 bits)
                continue
        yield name, envelope(data, rng)


def _fuzz(seed_dir: str, cases: int, seed: int, keep: str) -> dict:
    from flax import serialization

    from jaxstyle.checkpoint import differences, load_checkpoint
    from jaxstyle.errors import JaxstyleError
    from jaxstyle.run_state import restore_state
    from jaxstyle.stylize_command import resume_request

    originals = {p.name: load_checkpoint(p) for p in sorted(Path(seed_dir).glob("*.ckpt"))}
    seeds = {name: serialization.msgpack_restore(serialization.msgpack_restore(
        (Path(seed_dir) / name).read_bytes())["payload"]) for name in originals}
    rng = random.Random(seed)
    stages = ("loaded", "request", "differences", "state")
    outcomes = {"refused": {s: 0 for s in stages}, "ok": 0, "failed": 0}
    failures, slowest, started = [], (0.0, ""), time.perf_counter()
    work = Path(keep)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "case.ckpt"
    i = -1
    with bounded_memory() as growth:
        for i, (name, data) in zip(range(cases), mutants(seeds, rng)):
            path.write_bytes(data)  # left behind if the process dies
            original = originals[name]
            start, stage, problem = time.perf_counter(), "loaded", None
            try:
                saved = load_checkpoint(path)
                stage = "request"
                resume_request(str(path))
                stage = "differences"
                differences(saved, original.options, original.inputs)
                stage = "state"
                restore_state(saved.run.state, original.run.state)
                outcomes["ok"] += 1
            except JaxstyleError as exc:
                message = str(exc)
                if "\n" in message or not message.strip():
                    problem = f"bad message: {message[:300]}"
                outcomes["refused"][stage] += 1
            except Exception as exc:  # noqa: BLE001 - what the test is for
                outcomes["failed"] += 1
                problem = (f"{stage}: " + traceback.format_exception_only(exc)[-1].strip()[:300]
                           + " at " + traceback.format_tb(exc.__traceback__)[-1][:300])
            if problem is not None:
                kept = work / f"failure{i}-{name}"
                kept.write_bytes(data)
                failures.append({"case": i, "seed": name, "file": str(kept), "problem": problem})
            slowest = max(slowest, (time.perf_counter() - start, f"case {i} ({name})"))
        path.unlink(missing_ok=True)
        return summary(i + 1, failures, growth(), started, slowest, outcomes=outcomes)


if __name__ == "__main__":
    main(_fuzz)
