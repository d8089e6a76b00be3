"""Time to a good picture: the default's wall time per pair, against neural-style-pt's 500
iterations at the same size on the same network, with the quality figures that say whether the
picture is good.

    python benchmarks/time_to_picture.py --size 512                  # every calibration pair
    python benchmarks/time_to_picture.py --size 384 --only chelsea/marbled,coffee/mosaic
    python benchmarks/time_to_picture.py --size 256 --reference 0 -- --preset fast
    python benchmarks/time_to_picture.py --per-scale 64,128,256,512   # one iteration's cost

Each pair runs ``jaxstyle stylize CONTENT STYLE -o OUT --size N --report R`` (plus the flags
after ``--``) as a fresh process, timed from its start to its exit. All pairs share one
compilation cache that starts empty (``XDG_CACHE_HOME`` in a new temporary folder), in order:
the first pair's run is a first run on a fresh machine ("cold"), and every later pair's is a
person's next picture, of another shape (the calibration images differ in shape, so what is
compiled per shape compiles again; what is shared comes from the cache). With ``--repeat``
each pair also runs a second time ("warm": the same shape again, everything from the cache).
The table gives the wall times, the iterations and seconds at each scale (from the report),
and the quality line's figures: the content distance (mean over the content layers; the
default's bound is 0.8), the Gram and sliced-Wasserstein distances as fractions of the
photo's (the Gram bound is 0.25).

With ``--reference K`` (default 20) neural-style-pt runs K iterations on the same pair, size
and network (benchmarks/neural_style_pt.py writes jaxstyle's VGG16 out as its torch model); its
seconds per iteration times 500, plus its start-up, is what its headline run of 500 iterations
costs here, and each route's wall time is also given as a share of that. neural-style-pt needs
``pip install torch torchvision neural-style==0.5.7`` (never a jaxstyle dependency).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibration import calibration_pairs, run  # noqa: E402

HEADLINE_ITERATIONS = 500  # neural-style's and neural-style-pt's quoted runs


def stylize(content: Path, style: Path, out: Path, size: int, extra: list[str],
            cache_home: Path) -> dict:
    """One ``jaxstyle stylize`` process with its compilation cache under `cache_home`: its
    report, with the process's wall time added."""
    return run(content, style, out, ["--size", str(size), "--overwrite", *extra],
               env={**os.environ, "XDG_CACHE_HOME": str(cache_home)})


def reference_seconds(content: Path, style: Path, size: int, iterations: int,
                      folder: Path) -> float | None:
    """neural-style-pt's time for `HEADLINE_ITERATIONS` at `size` on jaxstyle's VGG16,
    extrapolated from `iterations` of its own, timed between its progress lines at iterations
    10 and `iterations` (so at least 20), plus its start-up (None when it is not installed).
    Its time per iteration depends on the output's shape alone: `reference_for` reuses it."""
    try:
        import neural_style  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return None
    import neural_style_pt

    model = folder / "vgg16-keras.pth"
    if not model.exists():
        neural_style_pt.write_torch_model(ROOT / "weights" / "vgg16-keras.msgpack", model)
    run = neural_style_pt.run_neural_style(str(content), str(style), model, size, iterations,
                                           "random", folder / "neural_style_pt.png")
    startup = max(0.0, run["wall"] - run["per_iteration"] * iterations)
    return startup + run["per_iteration"] * HEADLINE_ITERATIONS


def per_scale_costs(content: Path, style: Path, sizes: list[int], iterations: int = 30) -> None:
    """Prints, per output size, the seconds of one optimizer iteration of the default (one
    scale, warm: the second of two runs in this process) against the arithmetic of one
    evaluation (XLA's FLOP count for the loss and its input gradient) at this machine's float32
    matrix-multiply rate."""
    import neural_style_pt

    from jaxstyle import StyleOptions, load_image, load_weights, stylize

    weights_path = ROOT / "weights" / "vgg16-keras.msgpack"
    weights = load_weights(weights_path)
    c, s = load_image(content), load_image(style)
    peak = neural_style_pt.matmul_gflops()
    print(f"float32 matrix multiply (4096x4096, XLA): {peak:.0f} GFLOP/s\n"
          "| size | per iteration | evaluations per iteration | GFLOP per evaluation | "
          "arithmetic at the matmul rate | ratio |\n|---|---|---|---|---|---|")
    for size in sizes:
        options = StyleOptions(size=size, coarsest=0, iterations=iterations, stop_change=0.0)
        for _ in range(2):  # the first compiles
            result = stylize(c, [s], weights, options)
        per = result.timings["optimize"] / iterations
        _, gflop, _ = neural_style_pt.neural_style_scorer(str(content), str(style), weights_path,
                                                          size)
        arithmetic = gflop / peak
        print(f"| {size} px | {per * 1000:.0f} ms | {result.evaluations / iterations:.2f} | "
              f"{gflop:.2f} | {arithmetic * 1000:.0f} ms | {per / arithmetic:.1f}x |", flush=True)


def reference_for(content: Path, style: Path, size: int, iterations: int, folder: Path,
                  known: dict) -> float | None:
    """`reference_seconds` once per output shape (`known`: shape -> seconds)."""
    from PIL import Image

    with Image.open(content) as image:
        width, height = image.size
    shape = (round(height * size / max(width, height)), round(width * size / max(width, height)))
    if shape not in known:
        known[shape] = reference_seconds(content, style, size, iterations, folder)
    return known[shape]


def scales_text(data: dict) -> str:
    """'200 at 128 px (9 s), 100 at 256 px (31 s), ...' from a report."""
    return ", ".join(f"{s['iterations']} at {max(s['size'])} px ({s['seconds']:.0f} s)"
                     for s in data.get("scales", ())) or f"{len(data['history']['total'])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--only", default=None, help="comma-separated pair names")
    parser.add_argument("--reference", type=int, default=20, metavar="K",
                        help="neural-style-pt iterations to time per output shape (at least "
                             "20; 0: none)")
    parser.add_argument("--repeat", action="store_true",
                        help="run each pair a second time (the same shape from the cache)")
    parser.add_argument("--out", type=Path, default=Path("time_to_picture"))
    parser.add_argument("--per-scale", default=None, metavar="SIZES",
                        help="instead: one iteration's time at each of these sizes (e.g. "
                             "64,128,256) against its arithmetic, on the first pair")
    parser.add_argument("extra", nargs="*", help="more stylize flags, after --")
    args = parser.parse_args()
    args.out.mkdir(exist_ok=True)
    pairs = calibration_pairs(args.out)
    if args.only:
        pairs = [p for p in pairs if p[0] in args.only.split(",")]
    print(f"command: python benchmarks/time_to_picture.py {' '.join(sys.argv[1:])}", flush=True)
    if args.per_scale:
        per_scale_costs(pairs[0][1], pairs[0][2], [int(v) for v in args.per_scale.split(",")])
        return
    rows, shares, known = [], [], {}
    cache = Path(tempfile.mkdtemp(prefix="jaxstyle-cache-"))
    for number, (name, content, style) in enumerate(pairs):
        tag = name.replace("/", "_")
        out = args.out / f"{tag}_{args.size}.png"
        first = stylize(content, style, out, args.size, args.extra, cache)
        again = stylize(content, style, out, args.size, args.extra, cache) if args.repeat \
            else None
        reference = (reference_for(content, style, args.size, args.reference, args.out, known)
                     if args.reference else None)
        q = first["quality"]
        content_distance = float(np.mean(list(q["content"].values())))
        share = f"{first['wall'] / reference:.3f} (1/{reference / first['wall']:.1f})" \
            if reference else "-"
        if reference:
            shares.append(first["wall"] / reference)
        kind = "cold" if number == 0 else "next"
        repeat = "-" if again is None else f"{again['wall']:.0f} s"
        rows.append(f"| {name} | {scales_text(first)} | {first['wall']:.0f} s ({kind}) | "
                    f"{first['timings_seconds']['compile']:.0f} s | {repeat} | "
                    f"{content_distance:.2f} | {q['style_gram_ratio']:.3f} | "
                    f"{q['style_sliced_wasserstein_ratio']:.3f} | "
                    f"{'-' if reference is None else f'{reference:.0f} s'} | {share} |")
        print(rows[-1], flush=True)
    print(f"\nthe default at {args.size} px ({' '.join(args.extra) or 'no other flags'})\n"
          "| pair | iterations per scale (seconds) | wall | of it compiling | again (warm) | "
          "content distance | Gram / photo's | SW / photo's | neural-style-pt, 500 iterations "
          "| share |\n|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    if shares:
        print(f"\nshare of neural-style-pt's 500 iterations: {min(shares):.3f}-{max(shares):.3f}"
              f" (median {float(np.median(shares)):.3f})")


if __name__ == "__main__":
    main()
