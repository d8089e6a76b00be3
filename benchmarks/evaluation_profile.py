"""Where one evaluation's time goes inside the optimizer's loop, layer by layer.

Runs a short stylization once to compile, then again under `jax.profiler`, and sums XLA:CPU's
per-kernel trace events of the optimizer's compiled loop by what they compute: each VGG
convolution forward and backward (its matrix products apart from Winograd's transforms and the
other elementwise work), the losses, and the optimizer's own work.

    python benchmarks/evaluation_profile.py                  # fast preset, 384 px, real VGG16
    python benchmarks/evaluation_profile.py --size 512 --options '{"convolution": "direct"}'

Times are thread time per evaluation: XLA runs independent kernels side by side and its
matrix-product library (YNNPACK) splits one product over the cores, so the rows add up to more
than the wall time per evaluation, which the last line prints. Compare rows of one run.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from jaxstyle import StyleOptions, load_image, load_weights, stylize  # noqa: E402
from jaxstyle.compilation_cache import enable_compilation_cache  # noqa: E402
from jaxstyle.compiled import COMPILED  # noqa: E402

SHARED = ROOT.parent / "shared" / "images"


def _kind(op_name: str) -> tuple[str, str]:
    """(row, column) of an HLO instruction, from its op_name metadata."""
    layer = re.search(r"/VGG/(conv\d+_\d+)/", op_name)
    if layer:
        direction = "backward" if "transpose(" in op_name else "forward"
        product = re.search(r"/(conv_general_dilated|dot_general)$", op_name)
        return layer.group(1), f"{direction} {'products' if product else 'other'}"
    if "/VGG/" in op_name:
        return "pooling and ReLU", "other"
    if "_network" in op_name or "branch_0_fun" in op_name:
        return "losses (Gram matrices, content, TV)", "other"
    return "optimizer (L-BFGS direction, line search, stop rule)", "other"


def _labels(hlo: str) -> dict[str, str]:
    """Each instruction's op_name; a fusion that contains a convolution or a matrix product
    takes that one's (XLA fuses, say, a max-pool's gradient into the next layer's), else its
    root's."""
    names = dict(re.findall(r"^\s+(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]+)\"", hlo, re.M))
    products = {}
    for computation, body in re.findall(r"^%?([\w.\-]+) .*?\{\n(.*?)^\}", hlo, re.M | re.S):
        found = re.search(r"op_name=\"([^\"]+/(?:conv_general_dilated|dot_general))\"", body)
        if found:
            products[computation] = found.group(1)
    for name, called in re.findall(r"^\s+(?:ROOT )?%([\w.\-]+) = .*?calls=%([\w.\-]+)", hlo,
                                   re.M):
        if called in products:
            names[name] = products[called]
    return names


def profile(content, style, weights, options: StyleOptions, trace_dir: str) -> dict:
    """Per-evaluation thread time (ms) by `_kind`, and the run's wall time per evaluation."""
    run = lambda: stylize(content, [style], weights, options)  # noqa: E731
    run()  # compiles; the profiled run reuses the executables
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        result = run()
    loop = [c for key, c in COMPILED.executables.items() if "run_chunk" in str(key[0])]
    metadata = {}
    for executable in loop:
        metadata.update(_labels(executable.as_text()))
    path = sorted(glob.glob(f"{trace_dir}/plugins/profile/*/perfetto_trace.json.gz"))[-1]
    trace = json.load(gzip.open(path))
    events = [e for e in (trace["traceEvents"] if isinstance(trace, dict) else trace)
              if e.get("ph") == "X"]
    # The optimizer's loop is the longest execution; the first evaluation runs before it.
    window = max((e for e in events if e["name"].startswith("ThunkExecutor::Execute (wait")),
                 key=lambda e: e["dur"])
    start, end = window["ts"], window["ts"] + window["dur"]
    evaluations = result.evaluations - 1
    times = collections.defaultdict(float)
    for e in events:
        if start <= e["ts"] <= end and e["name"] in metadata:
            times[_kind(metadata[e["name"]])] += e["dur"] / 1e3 / evaluations
    return {"times": dict(times), "evaluations": evaluations,
            "wall_per_evaluation_ms": window["dur"] / 1e3 / evaluations}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--content", default=str(SHARED / "tubingen.jpg"))
    parser.add_argument("--style", default=str(SHARED / "starry_night.jpg"))
    parser.add_argument("--weights", default=str(ROOT / "weights" / "vgg16-keras.msgpack"))
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--options", default="{}", help="more StyleOptions, as JSON")
    parser.add_argument("--json", help="also write the unrounded table to this file")
    args = parser.parse_args(argv)
    enable_compilation_cache()
    weights = load_weights(args.weights)
    options = StyleOptions(preset=args.preset, size=args.size, iterations=args.iterations,
                           stop_tolerance=0.0, progress_every=args.iterations,
                           **json.loads(args.options))
    with tempfile.TemporaryDirectory() as trace_dir:
        out = profile(load_image(args.content), load_image(args.style), weights, options,
                      trace_dir)
    times = out["times"]
    total = sum(times.values())
    columns = ("forward products", "forward other", "backward products", "backward other")
    print(f"{Path(args.content).name} / {Path(args.style).name}, {args.size} px, preset "
          f"{args.preset}, convolution {options.network_convolution()}, "
          f"{out['evaluations']} evaluations profiled; ms of thread time per evaluation")
    print(f"{'':54}" + "".join(f"{c:>19}" for c in columns) + f"{'all':>9}")
    rows = sorted({row for row, _ in times}, key=lambda r: (not r.startswith("conv"), r))
    for row in rows:
        cells = [times.get((row, c)) for c in columns]
        mine = sum(v for (r, _), v in times.items() if r == row)
        print(f"{row:54}" + "".join(f"{'' if v is None else f'{v:.1f}':>19}" for v in cells)
              + f"{mine:9.1f}")
    print(f"{'all':54}" + "".join(
        f"{sum(v for (_, c), v in times.items() if c == col):19.1f}" for col in columns)
        + f"{total:9.1f}")
    print(f"wall time {out['wall_per_evaluation_ms']:.1f} ms per evaluation")
    if args.json:
        table = collections.defaultdict(dict)
        for (row, column), ms in times.items():
            table[row][column] = ms
        Path(args.json).write_text(json.dumps(
            {"ms_per_evaluation": table, "evaluations": out["evaluations"],
             "wall_per_evaluation_ms": out["wall_per_evaluation_ms"]}, indent=1))

if __name__ == "__main__":
    main()
