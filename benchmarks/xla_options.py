"""XLA compiler options against the optimizer's default, on one evaluation.

    python benchmarks/xla_options.py [--size 384] [--convolution winograd|direct]
                                     [--rounds 16] [--weights FILE]
                                     [--options '{"name": {"xla_option": "value"}, ...}']

One evaluation as the optimizer's loop runs it (VGG forward to relu5_1 and the input gradient,
the wide layers by Winograd with their kernels transformed once, or every layer direct as
`auto` runs images under 384 px, a Gram-like loss) compiled once
with no options ("none"), once with YNNPACK for each convolution XLA does not fuse
("ynn_convolutions", the option measured in docs/benchmarks.md: 0.90x a lone evaluation at
384 px, but nothing in the optimizer's loop and 1.08x slower runs at 256 px, so jaxstyle does
not pass it) and once per entry of ``--options``, all in this process, then
timed interleaved (the order reversed every other round). Prints each variant's median and the
pairwise median of its time over "none"'s, and its gradient's largest difference from "none"'s
relative to the gradient's largest magnitude: float32 rounding is ~1e-6, more means the option
changed the arithmetic, not only its speed. Weights: ``--weights``, else the usual search, else
random ones (``--weights random``: a check that the script runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxstyle import vgg  # noqa: E402
from jaxstyle.errors import WeightsError  # noqa: E402
from jaxstyle.weights import load_weights, random_weights, resolve_weights  # noqa: E402

YNN_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="long side; short side is 3/4")
    parser.add_argument("--convolution", choices=("winograd", "direct"), default="winograd")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--options", default="{}", help="more variants, as JSON")
    args = parser.parse_args(argv)
    h, w = args.size * 3 // 4, args.size
    if args.weights == "random":
        weights = random_weights(0)
    elif args.weights:
        weights = load_weights(args.weights)
    else:
        try:
            weights, _ = resolve_weights(None)
        except WeightsError:
            weights = random_weights(0)
    print(f"{weights.network} from {weights.source}; {h}x{w}, {args.convolution}; "
          f"{args.rounds} rounds")
    params = weights.params
    if args.convolution == "winograd":
        params = vgg.transform_kernels(params, (h, w), LAYERS)

    def loss(p, x):
        features = vgg.vgg_features(p, x, LAYERS, convolution=args.convolution)
        return sum(jnp.sum(jnp.einsum("hwc,hwd->cd", f, f) ** 2) * 1e-12
                   for f in features.values())

    variants = {"none": None, "ynn_convolutions": YNN_CONVOLUTIONS, **json.loads(args.options)}
    lowered = jax.jit(jax.value_and_grad(loss, argnums=1)).lower(params, jnp.zeros((h, w, 3)))
    compiled = {}
    for name, options in variants.items():
        start = time.perf_counter()
        compiled[name] = lowered.compile(options or None)
        seconds = time.perf_counter() - start
        print(f"{name}: compiled in {seconds:.1f} s ({options or 'no options'})")
    x = jnp.asarray(np.random.default_rng(0).uniform(-100, 100, (h, w, 3)), jnp.float32)
    grads = {name: np.asarray(f(params, x)[1]) for name, f in compiled.items()}
    times = {name: [] for name in compiled}
    names = list(compiled)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            jax.block_until_ready(compiled[name](params, x))
            times[name].append(time.perf_counter() - start)
    scale = np.abs(grads["none"]).max()
    for name in names:
        ratio = np.array(times[name]) / np.array(times["none"])
        error = np.abs(grads[name] - grads["none"]).max() / scale
        print(f"{name:>10}: median {np.median(times[name]) * 1e3:.1f} ms; / none: pairwise median "
              f"{np.median(ratio):.3f} (range {ratio.min():.3f}-{ratio.max():.3f}); gradient "
              f"differs by {error:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
