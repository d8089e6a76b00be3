"""Process start to the end of the first L-BFGS iteration, with an empty and a warm compilation
cache.

Runs the command line twice on the bundled example (random weights) with ``--iterations 1`` in
a fresh process each time, the first with an empty XLA compilation cache (as on a new machine),
the second reusing it (a repeated run at the same size). Prints the wall time of each run and
where it went, from the run's ``--report``.

    python benchmarks/startup.py                      # 512 px
    python benchmarks/startup.py --size 256 --convolution winograd
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(cache: Path, out: Path, size: int, convolution: str) -> dict:
    report = out / "report.json"
    command = [sys.executable, str(ROOT / "cli.py"), "stylize",
               str(ROOT / "examples" / "chelsea.jpg"),
               str(ROOT / "examples" / "marbled.jpg"), "-o", str(out / "out.png"), "--weights",
               "random", "--size", str(size), "--iterations", "1", "--convolution", convolution,
               "--report", str(report), "-q"]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    wall = time.perf_counter() - start
    timings = json.loads(report.read_text())["timings_seconds"]
    return {"wall": wall, **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--convolution", default="direct", choices=("direct", "winograd"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp)
        runs = [("empty cache", run_once(cache, out, args.size, args.convolution)),
                ("warm cache", run_once(cache, out, args.size, args.convolution))]
    print(f"start-up at {args.size} px, --convolution {args.convolution}, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'run':>12} | {'to 1st iteration':>16} | {'import+load':>11} | {'targets':>8} | "
          f"{'compile':>8} | {'1st iteration':>13}")
    for name, r in runs:
        before = r["wall"] - r["total"]  # interpreter, imports, reading images and weights, saving
        print(f"{name:>12} | {r['wall']:>15.1f}s | {before:>10.1f}s | {r['targets']:>7.1f}s | "
              f"{r['compile']:>7.1f}s | {r['optimize']:>12.1f}s")
    print("to 1st iteration: wall time of the whole process (it stops after one iteration and "
          "saves the image); compile includes the memory estimate's compilation; targets: "
          "content and style features (their compilation included)")


if __name__ == "__main__":
    main()
