"""Whether bfloat16 pays on this CPU: the Winograd-domain products in bfloat16 against float32.

    python benchmarks/bfloat16.py [--size 384] [--repeats 5] [--iterations 40] [--weights FILE]

XLA:CPU runs a bfloat16 convolution in float32 (it converts the operands before its
convolution), so on a CPU bfloat16 can only help where jaxstyle does the products itself: in
the Winograd domain (``--convolution winograd --precision bfloat16``: F(2x2) with float32
transforms and bfloat16 products summed in float32; F(4x4) in bfloat16 is too coarse). Whether
the products run faster depends on the CPU's bfloat16 instructions (AVX512-BF16, AMX), so this
measures, with the converted VGG16/VGG19 found (``jaxstyle weights download vgg16-keras``) on
the bundled chelsea.jpg / marbled.jpg at ``--size``:

1. each wide layer's convolution (forward and input gradient, on the photo's own activations):
   direct float32, Winograd float32 (the tile ``--convolution winograd`` picks) and Winograd
   with bfloat16 products, with their error against a float64 direct convolution;
2. one evaluation of the default objective (value and gradient): Winograd float32 against
   Winograd bfloat16 and direct bfloat16;
3. ``--iterations`` of the default from the photo both ways, the two pictures scored by the
   float32 objective.

Timings alternate the variants (ABBA) and give medians, so a shared machine's load falls on
each alike. Tables 1 and 2 time single calls, outside the optimizer's while-loop, where XLA:CPU
runs convolutions at other speeds (direct ones slower): compare their variants with each other;
table 3 is a real run.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxstyle  # noqa: E402
from jaxstyle import vgg, vgg_layers  # noqa: E402


def timed(variants: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each no-argument callable, called in ABBA order after a warm-up."""
    for call in variants.values():
        jax.block_until_ready(call())
    seconds = {name: [] for name in variants}
    for r in range(repeats):
        for name in (list(variants) if r % 2 == 0 else reversed(list(variants))):
            start = time.perf_counter()
            jax.block_until_ready(variants[name]())
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def conv_inputs(params: dict, image: jax.Array) -> dict[str, jax.Array]:
    """The input of every convolution of 256+ channels, from the network's own activations."""
    names = [name for name in vgg_layers.conv_layer_names() if name in params]  # VGG19's order
    feats = jaxstyle.vgg_features(params, image, [f"relu{n[4:]}" for n in names])
    inputs = {}
    for prev, name in zip(names, names[1:]):
        x = feats[f"relu{prev[4:]}"][None]
        if name.endswith("_1"):
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                      "VALID")
        if params[name]["kernel"].shape[-1] >= 256 and x.shape[-1] >= 256:
            inputs[name] = x
    return inputs


def _forward_and_back(x: jax.Array, kernel: jax.Array, convolution: str, dtype):
    """A call computing one convolution and its input gradient (for a cotangent of ones)."""

    def both(x, k, g):
        y, pullback = jax.vjp(lambda x: vgg.conv3x3(x, k, convolution), x)
        return y, pullback(g)[0]

    f = jax.jit(both)
    args = (x.astype(dtype), kernel.astype(dtype),
            jnp.ones(x.shape[:-1] + kernel.shape[-1:], dtype))
    return lambda: f(*args)


def layer_table(params: dict, image: jax.Array, repeats: int) -> None:
    print("\n1. one convolution, forward and input gradient (ms); error: largest |difference| "
          "over the largest |output|, against float64")
    print("| layer | input | direct f32 | Winograd f32 | Winograd bf16 products | bf16 / f32 "
          "Winograd | error f32 | error bf16 |\n|---|---|---|---|---|---|---|---|")
    for name, x in conv_inputs(params, image).items():
        kernel = params[name]["kernel"]
        variants = {"direct": _forward_and_back(x, kernel, "direct", jnp.float32),
                    "winograd": _forward_and_back(x, kernel, "winograd", jnp.float32),
                    "bf16": _forward_and_back(x, kernel, "winograd", jnp.bfloat16)}
        ms = {k: 1e3 * v for k, v in timed(variants, repeats).items()}
        with jax.enable_x64():
            want = np.asarray(vgg._conv(jnp.asarray(x, jnp.float64),
                                        jnp.asarray(kernel, jnp.float64)))
        error = {k: np.abs(np.asarray(variants[k]()[0], np.float64) - want).max()
                 / np.abs(want).max() for k in ("winograd", "bf16")}
        tile = vgg._winograd_tile(x, kernel)
        print(f"| {name} | {x.shape[1]}x{x.shape[2]}x{x.shape[3]} | {ms['direct']:.1f} | "
              f"{ms['winograd']:.1f} (F({tile}x{tile})) | {ms['bf16']:.1f} | "
              f"{ms['bf16'] / ms['winograd']:.2f}x | {error['winograd']:.1e} | "
              f"{error['bf16']:.1e} |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=40, help="0: skip table 3")
    parser.add_argument("--weights", default=None, help="default: the converted VGG found")
    args = parser.parse_args(argv)
    print("$ python benchmarks/bfloat16.py " + " ".join(map(shlex.quote, argv or sys.argv[1:])))
    weights = jaxstyle.load_weights(jaxstyle.find_weights(args.weights))
    print(f"jax {jax.__version__} on {jax.default_backend()} "
          f"({', '.join(sorted({d.device_kind for d in jax.devices()}))}); {weights.label()}")
    content = jaxstyle.load_image(ROOT / "examples" / "chelsea.jpg")
    style = jaxstyle.load_image(ROOT / "examples" / "marbled.jpg")
    base = jaxstyle.StyleOptions(size=args.size, convolution="winograd")
    problem = jaxstyle.prepare(content, [style], weights, base)
    layer_table(weights.params, problem.x0, args.repeats)

    print(f"\n2. one evaluation of the default objective at {args.size} px (value and gradient)")
    routes = {"Winograd f32": base,
              "Winograd bf16 products": base.replace(precision="bfloat16"),
              "direct bf16": base.replace(precision="bfloat16", convolution="direct")}
    problems = {name: jaxstyle.prepare(content, [style], weights, o) for name, o in
                routes.items()}
    evaluate = jax.jit(lambda x, params, targets, static, f: jax.value_and_grad(
        f, has_aux=True)(x, params, targets, static), static_argnums=(3, 4))
    calls = {name: (lambda p=p: evaluate(p.x0, weights.params, p.targets, p.loss_static,
                                         p.loss_fn)) for name, p in problems.items()}
    seconds = timed(calls, args.repeats)
    (want, _), want_grad = calls["Winograd f32"]()
    for name, s in seconds.items():
        (value, _), grad = calls[name]()
        print(f"  {name:<24} {s:6.3f} s  ({s / seconds['Winograd f32']:.2f}x)  loss differs by "
              f"{abs(float(value) / float(want) - 1):.2e}, gradient by "
              f"{float(jnp.linalg.norm(grad - want_grad) / jnp.linalg.norm(want_grad)):.2e}",
              flush=True)

    if args.iterations:
        print(f"\n3. {args.iterations} iterations of the default from the photo, scored by the "
              "float32 objective")
        score = jax.jit(problem.loss_fn, static_argnums=3)
        for name in ("Winograd f32", "Winograd bf16 products"):
            options = routes[name].replace(iterations=args.iterations, stop_change=0.0)
            start = time.perf_counter()
            result = jaxstyle.stylize(content, [style], weights, options)
            wall = time.perf_counter() - start
            x = weights.preprocessing.to_model(jnp.asarray(result.image))
            total, _ = score(x, weights.params, problem.targets, problem.loss_static)
            print(f"  {name:<24} float32 loss {float(total):.5f}  optimizing "
                  f"{result.timings['optimize']:.1f} s, compiling "
                  f"{result.timings['compile']:.1f} s, wall {wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
