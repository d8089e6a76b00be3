"""Where do torch's and jaxstyle's L-BFGS part ways on real features, and why?

Both run neural-style's objective and L-BFGS settings (history 100, unit step, no line search)
from the same model-space images with the real VGG16, in float32 and again in float64. Prints
each iteration's loss on both sides and the first iteration whose losses differ by more than
1e-3 relative. If float64 runs agree much longer than float32 runs, the two implementations
follow the same algorithm and part ways through float32 rounding amplified by the iteration.

jaxstyle runs twice more with jaxopt's own L-BFGS (its two-loop recursion for the direction,
as before jaxstyle computed it from the compact representation), once from the same start and
once from a start nudged by one unit in the last place: how far the nudged run strays from the
unnudged one is how far rounding alone carries these unit-step iterates, the yardstick for the
compact direction's distance from the two-loop's.

    jaxstyle weights download vgg16-keras
    pip install torch==2.13.0        # a reference only, never a jaxstyle dependency
    python benchmarks/lbfgs_trajectory.py [--size 128] [--iterations 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from compare_torch import CONTENT_LAYER, STYLE_LAYERS, WEIGHTS, torch_lbfgs, torch_objective

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, size: int, content: str, style: str) -> None:
    """Model-space images and the VGG16 conv weights (HWIO), as jaxstyle prepares them."""
    import jax.numpy as jnp

    from jaxstyle import load_image, load_weights
    from jaxstyle.resampling import fit_longest_side, resize
    from jaxstyle.weights import find_weights

    weights = load_weights(find_weights())
    pre = weights.preprocessing
    c, s = load_image(content), load_image(style)
    model = lambda img: np.asarray(pre.to_model(resize(jnp.asarray(img), *fit_longest_side(  # noqa: E731
        img.shape, size))), np.float64)
    np.savez(folder / "inputs.npz", content=model(c), style=model(s),
             **{f"{n}/{k}": np.asarray(v) for n, p in weights.params.items() for k, v in p.items()})


def run_torch(folder: Path, iterations: int, dtype: str) -> list[float]:
    import torch

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    data = np.load(folder / "inputs.npz")
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(torch_dtype)  # noqa: E731
    convs = sorted({k.split("/")[0] for k in data.files if "/" in k},
                   key=lambda n: (int(n[4]), int(n[6])))

    def features(x):
        out = {}
        for name in convs:
            block = int(name[4])
            if name.endswith("_1") and block > 1:
                x = torch.nn.functional.max_pool2d(x, 2)
            kernel = to(data[f"{name}/kernel"]).permute(3, 2, 0, 1)
            x = torch.relu(torch.nn.functional.conv2d(x, kernel, to(data[f"{name}/bias"]),
                                                      padding=1))
            out[f"relu{name[4:]}"] = x
        return out

    nchw = lambda a: to(a.transpose(2, 0, 1)[None])  # noqa: E731
    loss_fn = torch_objective(features, nchw(data["content"]), nchw(data["style"]))
    return torch_lbfgs(loss_fn, nchw(data["content"]), iterations)[: iterations + 1]


def plain_objective(x, params, targets, _static):
    """neural-style's objective written out in the input's dtype (jaxstyle's own computes Gram
    matrices and losses in float32), for the float64 runs."""
    import jax.numpy as jnp

    from jaxstyle import vgg_features

    w_c, w_s, w_tv = WEIGHTS
    feats = vgg_features(params, x, (CONTENT_LAYER, *STYLE_LAYERS))

    def gram(f):
        flat = f.reshape(-1, f.shape[-1])
        return flat.T @ flat / flat.size

    total = w_c * jnp.mean((feats[CONTENT_LAYER] - targets["content"]) ** 2)
    for n in STYLE_LAYERS:
        total = total + w_s * jnp.mean((gram(feats[n]) - targets["style"][n]) ** 2)
    tv = jnp.sum(jnp.abs(x[1:] - x[:-1])) + jnp.sum(jnp.abs(x[:, 1:] - x[:, :-1]))
    return total + w_tv * tv, {}


def run_jax(folder: Path, iterations: int, dtype: str, two_loop: bool = False,
            nudge: bool = False) -> list[float]:
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp

    from jaxstyle import StyleOptions, losses, steps, vgg_features
    from jaxstyle.optimize import minimize
    from jaxstyle.steps import Loss, OptimizerConfig
    from jaxstyle.targets import content_targets, style_targets

    if two_loop:  # this process only
        from lbfgs_direction import TwoLoopLBFGS

        steps.CompactLBFGS = TwoLoopLBFGS

    data = np.load(folder / "inputs.npz")
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    convs = {k.split("/")[0] for k in data.files if "/" in k}
    params = {n: {"kernel": cast(data[f"{n}/kernel"]), "bias": cast(data[f"{n}/bias"])}
              for n in convs}
    content = cast(data["content"])
    config = OptimizerConfig("lbfgs", learning_rate=1.0, history=100, linesearch="none",
                             ema_decay=0.0)  # neural-style's settings
    if dtype == "float32":  # jaxstyle's own objective, as a run uses it
        options = StyleOptions(preset="neural-style", content_layers=(CONTENT_LAYER,),
                               style_layers=STYLE_LAYERS, content_weight=WEIGHTS[0],
                               style_weight=WEIGHTS[1], tv_weight=WEIGHTS[2])
        loss_config = options.loss_config()
        targets = losses.Targets(
            content_targets(params, content, loss_config),
            (style_targets(params, [cast(data["style"])], loss_config),),
            weights=options.loss_weights())
        fun, static = losses.objective, loss_config
    else:
        def features(img, layers):
            return vgg_features(params, img, layers)

        style = features(cast(data["style"]), STYLE_LAYERS)
        targets = {"content": features(content, (CONTENT_LAYER,))[CONTENT_LAYER],
                   "style": {n: f.reshape(-1, f.shape[-1]).T @ f.reshape(-1, f.shape[-1])
                             / f.size for n, f in style.items()}}
        fun, static = plain_objective, None
    start = content * (1 + jnp.finfo(dtype).eps) if nudge else content
    first = float(fun(start, params, targets, static)[0])
    result = minimize(Loss(fun, static, (params, targets)), start, config, iterations,
                      chunk=iterations, memory_limit=0)
    return [first, *result.history["total"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--content", default=str(ROOT / "examples" / "chelsea.jpg"))
    parser.add_argument("--style", default=str(ROOT / "examples" / "marbled.jpg"))
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one framework in its own process (jax's x64 flag is process-wide)
        folder = Path(args.folder)
        losses = (run_torch(folder, args.iterations, args.dtype) if args.side == "torch" else
                  run_jax(folder, args.iterations, args.dtype, args.side != "jax",
                          args.side == "jax-two-loop-nudged"))
        print(json.dumps(losses))
        return
    with tempfile.TemporaryDirectory() as tmp:
        make_inputs(Path(tmp), args.size, args.content, args.style)
        print(f"real VGG16, {args.size} px, neural-style's L-BFGS (history 100, unit step, no "
              f"line search), {args.iterations} iterations")
        for dtype in ("float32", "float64"):
            runs = {}
            for side in ("torch", "jax", "jax-two-loop", "jax-two-loop-nudged"):
                out = subprocess.run([sys.executable, __file__, "--side", side, "--dtype", dtype,
                                      "--folder", tmp, "--iterations", str(args.iterations)],
                                     capture_output=True, text=True, check=True).stdout
                runs[side] = json.loads(out.strip().splitlines()[-1])
            t, j, o, u = (np.array(runs[k]) for k in ("torch", "jax", "jax-two-loop",
                                                        "jax-two-loop-nudged"))
            n = min(len(t), len(j), len(o), len(u))
            rel = np.abs(t[:n] - j[:n]) / np.abs(t[:n])
            rel_old = np.abs(o[:n] - j[:n]) / np.abs(o[:n])
            rel_nudged = np.abs(o[:n] - u[:n]) / np.abs(o[:n])
            def first(r, n=n):
                return next((i for i in range(n) if r[i] > 1e-3), None)

            print(f"\n{dtype}: first iteration with losses >1e-3 apart: {first(rel)} (torch and "
                  f"jaxstyle), {first(rel_old)} (jaxstyle's compact and two-loop directions), "
                  f"{first(rel_nudged)} (two-loop from the start and nudged)")
            print(" it |     torch loss |  jaxstyle loss | relative difference | "
                  "two-loop: loss | vs jaxstyle | nudged start: vs two-loop")
            for i in range(n):
                print(f"{i:>3} | {t[i]:>14.7g} | {j[i]:>14.7g} | {rel[i]:>19.2e} | "
                      f"{o[i]:>14.7g} | {rel_old[i]:>11.2e} | {rel_nudged[i]:.2e}")


if __name__ == "__main__":
    main()
