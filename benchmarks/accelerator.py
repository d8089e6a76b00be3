"""The GPU (or TPU) run, ready before an accelerator is at hand: one script, under 8 minutes on
one H100/H200, that prints what a user with an accelerator wants to know.

    python benchmarks/accelerator.py                      # 512 px, 500 iterations, real VGG16
    python benchmarks/accelerator.py --wheels wheels/     # first installs what the machine lacks

For 512 px it times 500 iterations of neural-style's route (`--preset neural-style`), of
`--preset fast` in float32 and bfloat16 and of the default (`balanced`, which stops by itself),
each with its compilation apart; the largest square image that fits in one pass (from XLA's
memory analysis, then confirmed by two real iterations); and images per second for batches of
1, 4 and 16 (`jaxstyle.stylize_batch`). neural-style's README quotes 22-79 s for 500 iterations
at 512 px on Titan X cards; the goal here is at most 2 s on one H200.

A machine lent for this may have JAX with CUDA, Flax, Optax and PyTorch but no package index
and no jaxopt: ``--wheels FOLDER`` installs whatever jaxstyle needs and the machine lacks from
wheels fetched beforehand with

    pip download jaxopt==0.8.5 platformdirs tqdm --no-deps -d wheels/

The CPU test suite runs it at a tiny size (tests/test_benchmarks.py) so that it cannot rot.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("jax", "flax", "optax", "jaxopt", "numpy", "PIL", "tqdm", "platformdirs")
"""What ``import jaxstyle`` needs (PIL is Pillow's import name)."""


def install_missing(wheels: Path | None) -> list[str]:
    """Installs the missing ones of `NEEDED` from the wheel folder, offline; returns them."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing and wheels is None:
        sys.exit(f"missing {', '.join(missing)}: pass --wheels FOLDER (see this file's docstring)")
    if missing:
        found = sorted(str(p) for p in Path(wheels).glob("*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                        "--quiet", *found], check=True)
    return missing


def _timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def run_route(name: str, content, style, weights, options) -> str:
    """One stylization; its wall time, compilation and per-iteration figures as a row."""
    import jaxstyle

    result, wall = _timed(lambda: jaxstyle.stylize(content, [style], weights, options))
    t = result.timings
    iterations = len(result.history["total"])
    return (f"{name:<28} {iterations:>5} it  {t['optimize']:8.2f} s optimizing  "
            f"{t['optimize'] / max(1, iterations) * 1000:7.2f} ms/it  compile "
            f"{t['compile']:6.2f} s  targets {t['targets']:5.2f} s  wall {wall:7.2f} s  loss "
            f"{result.losses['total']:.5g}")


def largest_single_pass(content, style, weights, options, low: int, high: int) -> int:
    """The largest output side (a multiple of 32 in [low, high]) whose estimated peak fits in
    the device's free memory, by bisection over XLA's memory analysis (nothing is allocated)."""
    from jaxstyle.errors import OutOfMemoryError
    from jaxstyle.plan_memory import check_plan_memory
    from jaxstyle.stages import plan

    def fits(side: int) -> bool:
        trial = options.replace(size=side, memory_limit_gb=None)
        try:
            check_plan_memory(plan(content.shape, trial), content.shape, [style.shape], weights,
                              trial)
            return True
        except OutOfMemoryError:
            return False

    low, high = low // 32, high // 32
    if not fits(low * 32):
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle * 32) else (low, middle - 1)
    return low * 32


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--batch-iterations", type=int, default=100)
    parser.add_argument("--largest", default="512,16384", help="bounds of the largest-size search")
    parser.add_argument("--weights", default=None, help="default: the converted VGG16/VGG19 found")
    parser.add_argument("--wheels", type=Path, default=None)
    args = parser.parse_args(argv)
    installed = install_missing(args.wheels)
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    import jaxstyle
    from jaxstyle.compilation_cache import enable_compilation_cache

    cache = enable_compilation_cache()
    weights = jaxstyle.load_weights(jaxstyle.find_weights(args.weights))
    print(f"jax {jax.__version__} on {jax.default_backend()}: "
          f"{', '.join(d.device_kind for d in jax.devices())}; {weights.label()}; "
          f"compilation cache {cache}; installed from wheels: {', '.join(installed) or 'nothing'}")
    print(f"command: python benchmarks/accelerator.py {' '.join(argv or sys.argv[1:])}")
    content = jaxstyle.load_image(ROOT / "examples" / "chelsea.jpg")
    style = jaxstyle.load_image(ROOT / "examples" / "marbled.jpg")
    base = dict(size=args.size, iterations=args.iterations, memory_limit_gb=0)
    routes = [
        ("neural-style (unit steps)", jaxstyle.StyleOptions(preset="neural-style", **base)),
        ("fast, float32", jaxstyle.StyleOptions(preset="fast", stop_tolerance=0.0, **base)),
        ("fast, bfloat16", jaxstyle.StyleOptions(preset="fast", stop_tolerance=0.0,
                                                 precision="bfloat16", **base)),
        ("balanced (stops by itself)", jaxstyle.StyleOptions(**base)),
    ]
    print(f"\n{args.iterations} iterations at {args.size} px (fast runs all of them):")
    for name, options in routes:
        print(run_route(name, content, style, weights, options), flush=True)
    low, high = (int(v) for v in args.largest.split(","))
    side = largest_single_pass(content, style, weights, routes[0][1], low, high)
    print(f"\nlargest single-pass output (longest side, neural-style's route): {side} px",
          flush=True)
    if side:
        confirm = routes[0][1].replace(size=side, iterations=2)
        print("  confirmed by 2 iterations: " + run_route(f"{side} px", content, style, weights,
                                                          confirm), flush=True)
    print(f"\nbatches at {args.size} px, {args.batch_iterations} iterations each "
          f"(neural-style's route, {jax.local_device_count()} device(s)):")
    options = routes[0][1].replace(iterations=args.batch_iterations)
    for count in (int(v) for v in args.batches.split(",")):
        contents = [np.roll(content, 7 * i, axis=1) for i in range(count)]
        jaxstyle.stylize_batch(contents, [style], weights, options.replace(iterations=1))  # compile
        started = time.perf_counter()
        results = jaxstyle.stylize_batch(contents, [style], weights, options)
        wall = time.perf_counter() - started
        optimizing = results[0].timings["optimize"]
        print(f"  batch {count:>3}: {count / optimizing:8.3f} images/s optimizing "
              f"({optimizing:.2f} s), wall {wall:.2f} s", flush=True)


if __name__ == "__main__":
    main()
