"""Where the time to a run's first picture goes: the studio's first preview, taken apart.

Runs the default at one size in this process, as the studio's worker does (the network on the
device, start-up's objects frozen out of the collector's way), until its first progress, and
prints how long each step of the driver took before it: the first scale's inputs and style
targets, its problem (the content targets and the photo's style reference), compiling (from
the persistent cache when it is warm), and the first chunk. Run it twice: the first run fills
the compilation cache, the second is a person's next session.

    python benchmarks/first_picture.py                 # 384 px, chelsea in marbled's style
    python benchmarks/first_picture.py --size 512
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("_stage_scales", "stage_problem", "_compile_first", "run_stage")


class FirstPicture(Exception):
    """Ends the run at its first progress."""


def timed(module, name: str, seconds: dict) -> None:
    """Replaces ``module.name`` by a wrapper that adds its first call's seconds to `seconds`."""
    inner = getattr(module, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds.setdefault(name, time.perf_counter() - start)

    setattr(module, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--content", type=Path, default=ROOT / "examples" / "chelsea.jpg")
    parser.add_argument("--style", type=Path, default=ROOT / "examples" / "marbled.jpg")
    parser.add_argument("--weights", default=None,
                        help="a weights file (default: the network jaxstyle finds)")
    args = parser.parse_args()

    from jaxstyle.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    import jax

    import jaxstyle.driver as driver
    from jaxstyle import stylize
    from jaxstyle.inputs import load_inputs
    from jaxstyle.studio import form
    from jaxstyle.weights import resolve_weights

    network, _ = resolve_weights(args.weights, 0)
    network = dataclasses.replace(network, params=jax.device_put(network.params))
    gc.freeze()
    options = form.options_from_values({"size": args.size, "iterations": 30})
    inputs = load_inputs([str(args.style)], str(args.content))
    seconds: dict[str, float] = {}
    for name in STEPS:
        timed(driver, name, seconds)

    def first(progress) -> None:
        raise FirstPicture

    start = time.perf_counter()
    try:
        stylize(inputs.content, inputs.styles, network, options, callback=first,
                report_at=lambda iteration: True)
    except FirstPicture:
        pass
    total = time.perf_counter() - start
    steps = ", ".join(f"{name.strip('_')} {seconds.get(name, 0.0):.2f} s" for name in STEPS)
    rest = total - sum(seconds.values())
    print(f"first picture at {args.size} px after {total:.2f} s: {steps}, "
          f"the rest (checks, memory, plan) {rest:.2f} s")


if __name__ == "__main__":
    main()
