"""jaxstyle against a PyTorch implementation of the identical neural-style objective.

Both sides get the same full-width VGG19 (random, written by torch, converted by jaxstyle), the
same model-space content, style and initial images (the bundled example), and neural-style's
L-BFGS settings: history 100, unit step, no line search. Each framework runs in its own process
so that peak memory (max RSS) is its own. Prints, for each size: time per loss+gradient
evaluation, peak memory, the loss after N iterations, and how long jaxstyle takes to reach
torch's N-iteration loss.

    pip install torch==2.13.0          # CPU build, from the local file on this workplace
    python benchmarks/compare_torch.py                    # 256 and 512 px, 100 iterations
    python benchmarks/compare_torch.py --sizes 256 --iterations 20   # a quick look

torch is needed only here, never by jaxstyle itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
WEIGHTS = (5.0, 100.0, 1e-3)  # content, style, tv: neural-style's defaults
EVAL_REPEATS = 5


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(folder: Path, sizes: list[int]) -> None:
    """Writes the torch weights file and, per size, the model-space images both sides use."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    layers, channels = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            conv = nn.Conv2d(channels, v, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            channels = v
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    torch.save(model.state_dict(), folder / "vgg19-random.pth")

    sys.path.insert(0, str(ROOT))
    import jaxstyle
    from jaxstyle.problem import prepare

    weights = jaxstyle.convert(folder / "vgg19-random.pth", "torchvision")
    jaxstyle.weights.save_converted(weights, folder / "vgg19-random.msgpack")
    content = jaxstyle.load_image(ROOT / "examples" / "chelsea.jpg")
    style = jaxstyle.load_image(ROOT / "examples" / "marbled.jpg")
    for size in sizes:
        problem = prepare(content, [style], weights,
                          jaxstyle.StyleOptions(preset="neural-style", size=size))
        pre = weights.preprocessing
        shape = problem.x0.shape[:2]
        style_hw = jaxstyle.resampling.fit_longest_side(style.shape, size)
        np.savez(
            folder / f"inputs_{size}.npz",
            content=np.asarray(problem.x0),
            style=np.asarray(pre.to_model(jaxstyle.resampling.resize(style, *style_hw))),
            shape=np.asarray(shape),
        )


def run_torch(folder: Path, size: int, iterations: int) -> dict:
    import torch
    import torch.nn as nn

    torch.set_num_threads(os.cpu_count() or 1)
    state = torch.load(folder / "vgg19-random.pth", weights_only=True)
    data = np.load(folder / f"inputs_{size}.npz")
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)[None]))
    names, modules, channels = [], [], 3
    index = 0
    for block, depth in enumerate((2, 2, 4, 4, 4), 1):
        for i in range(1, depth + 1):
            conv = nn.Conv2d(channels, state[f"features.{index}.weight"].shape[0], 3, padding=1)
            conv.weight.data, conv.bias.data = (state[f"features.{index}.weight"],
                                                state[f"features.{index}.bias"])
            channels = conv.out_channels
            modules += [conv, nn.ReLU()]
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            index += 2
        modules.append(nn.MaxPool2d(2))
        names.append(f"pool{block}")
        index += 1
    net = nn.Sequential(*modules).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    last = max(names.index(n) for n in (CONTENT_LAYER, *STYLE_LAYERS))

    def features(x):
        out = {}
        for name, module in zip(names[: last + 1], net[: last + 1]):
            x = module(x)
            out[name] = x
        return out

    loss_fn = torch_objective(features, to_nchw(data["content"]), to_nchw(data["style"]))

    x = to_nchw(data["content"]).clone().requires_grad_(True)
    for _ in range(2):  # warm-up
        x.grad = None
        loss_fn(x).backward()
    start = time.perf_counter()
    for _ in range(EVAL_REPEATS):
        x.grad = None
        loss_fn(x).backward()
    per_eval = (time.perf_counter() - start) / EVAL_REPEATS

    start = time.perf_counter()
    losses = torch_lbfgs(loss_fn, to_nchw(data["content"]), iterations)
    seconds = time.perf_counter() - start
    return {"per_eval": per_eval, "run_seconds": seconds, "losses": losses,
            "peak_rss_mb": _peak_rss_mb()}


def torch_objective(features, content, style):
    """neural-style's objective in torch, ``x [1, C, H, W] -> loss``, for a `features` function
    ``x -> {layer: activation}`` and the model-space content and style images (NCHW)."""
    import torch

    def gram(f):
        _, c, h, w = f.shape
        flat = f.reshape(c, h * w)
        return flat @ flat.t() / (c * h * w)

    with torch.no_grad():
        content_target = features(content)[CONTENT_LAYER]
        style_feats = features(style)
        style_targets = {n: gram(style_feats[n]) for n in STYLE_LAYERS}
    w_c, w_s, w_tv = WEIGHTS

    def loss_fn(x):
        f = features(x)
        loss = w_c * torch.mean((f[CONTENT_LAYER] - content_target) ** 2)
        for n in STYLE_LAYERS:
            loss = loss + w_s * torch.mean((gram(f[n]) - style_targets[n]) ** 2)
        tv = ((x[:, :, 1:] - x[:, :, :-1]).abs().sum()
              + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().sum())
        return loss + w_tv * tv

    return loss_fn


def torch_lbfgs(loss_fn, x0, iterations: int) -> list[float]:
    """neural-style's L-BFGS in torch (history 100, unit step, no line search) from image x0;
    returns the loss at each evaluation, one per iteration."""
    import torch

    x = x0.clone().requires_grad_(True)
    # torch's L-BFGS skips the closure on its last iteration: one extra iteration records the
    # loss after `iterations` steps (that extra step evaluates nothing).
    optimizer = torch.optim.LBFGS([x], lr=1.0, max_iter=iterations + 1, max_eval=iterations + 2,
                                  history_size=100, tolerance_grad=-1, tolerance_change=-1,
                                  line_search_fn=None)
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        losses.append(float(loss))
        return loss

    optimizer.step(closure)
    return losses


def run_jax(folder: Path, size: int, iterations: int, target: float | None,
            convolution: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp

    import jaxstyle
    from jaxstyle import losses
    from jaxstyle.optimize import Continuation, minimize
    from jaxstyle.steps import Loss, OptimizerConfig
    from jaxstyle.targets import content_targets, style_targets

    weights = jaxstyle.load_weights(folder / "vgg19-random.msgpack")
    data = np.load(folder / f"inputs_{size}.npz")
    content, style = jnp.asarray(data["content"]), jnp.asarray(data["style"])

    def style_options(convolution: str) -> jaxstyle.StyleOptions:
        return jaxstyle.StyleOptions(
            preset="neural-style", content_layers=(CONTENT_LAYER,), style_layers=STYLE_LAYERS,
            content_weight=WEIGHTS[0], style_weight=WEIGHTS[1], tv_weight=WEIGHTS[2],
            convolution=convolution)

    def loss_config(convolution: str) -> losses.LossConfig:
        return style_options(convolution).loss_config()

    def per_eval(config: losses.LossConfig) -> float:
        # Evaluations inside one compiled loop, as jaxstyle's optimizer runs them: constant work
        # such as Winograd's kernel transforms is hoisted out of the loop, as it is there.
        value_and_grad = jax.value_and_grad(losses.objective, has_aux=True)

        @jax.jit
        def repeat(x, params, targets):
            def body(i, acc):
                (value, _), grad = value_and_grad(x + i * 1e-3, params, targets, config)
                return acc + value + grad[0, 0, 0]
            return jax.lax.fori_loop(0, EVAL_REPEATS, body, 0.0)

        args = (content, weights.params, targets)
        jax.block_until_ready(repeat(*args))
        start = time.perf_counter()
        jax.block_until_ready(repeat(*args))
        return (time.perf_counter() - start) / EVAL_REPEATS

    config = loss_config(convolution)  # for the L-BFGS run
    targets = losses.Targets(content_targets(weights.params, content, config),
                             (style_targets(weights.params, [style], config),),
                             weights=style_options(convolution).loss_weights())
    per_eval_direct, per_eval_winograd = (per_eval(loss_config("direct")),
                                          per_eval(loss_config("winograd")))

    marks = []  # (iteration, seconds since the loop began)
    start = [0.0]

    def callback(p):
        marks.append((p.iteration, time.perf_counter() - start[0]))

    lbfgs = OptimizerConfig("lbfgs", 1.0, 100, "none", 0.0)  # neural-style's settings
    # As `stylize` runs it: Winograd's kernels transformed once, not at every evaluation.
    params = jaxstyle.network_params(weights.params, style_options(convolution), content.shape)
    # A one-iteration run compiles the chunk (cached per shape); then time only the iterations.
    loss = Loss(losses.objective, config, (params, targets))
    minimize(loss, content, lbfgs, 1, chunk=5)
    start[0] = time.perf_counter()
    result = minimize(loss, content, lbfgs, iterations, chunk=5, callback=callback)
    run_seconds = marks[-1][1]
    losses_at_n = [float(result.history["total"][0])] + result.history["total"]

    def reached() -> tuple[float, int] | tuple[None, None]:
        previous = (0, 0.0)
        for iteration, seconds in marks:
            hits = [k for k, v in enumerate(result.history["total"][previous[0]:iteration])
                    if v <= target]
            if hits:  # interpolate within the chunk
                steps = iteration - previous[0]
                return (previous[1] + (seconds - previous[1]) * (hits[0] + 1) / steps,
                        previous[0] + hits[0] + 1)
            previous = (iteration, seconds)
        return None, None

    reach, reach_iteration = reached() if target is not None else (None, None)
    # When jaxstyle trails torch's loss after N iterations, keep going (up to 2N) to time the
    # catch-up rather than report nothing.
    while target is not None and reach is None and marks[-1][0] < 2 * iterations:
        result = minimize(loss, result.x, lbfgs, marks[-1][0] + 5, chunk=5, callback=callback,
                          resume=Continuation(result.state, marks[-1][0], result.history),
                          memory_limit=0)
        reach, reach_iteration = reached()
    return {"per_eval": per_eval_direct, "per_eval_winograd": per_eval_winograd,
            "run_seconds": run_seconds, "losses": losses_at_n, "reach_seconds": reach,
            "reach_iteration": reach_iteration, "compile_seconds": result.compile_seconds,
            "peak_rss_mb": _peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--convolution", default="winograd", choices=("direct", "winograd"),
                        help="jaxstyle's --convolution for the L-BFGS run (both are timed for "
                        "the evaluation columns)")
    parser.add_argument("--worker", choices=("torch", "jax"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "torch":
        print(json.dumps(run_torch(Path(args.dir), args.size, args.iterations)))
        return
    if args.worker == "jax":
        print(json.dumps(run_jax(Path(args.dir), args.size, args.iterations, args.target,
                                 args.convolution)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder, sizes)
        rows = []
        for size in sizes:
            common = [sys.executable, __file__, "--dir", tmp, "--size", str(size),
                      "--iterations", str(args.iterations)]
            torch_run = json.loads(subprocess.run(common + ["--worker", "torch"], check=True,
                                                  capture_output=True, text=True).stdout)
            target = torch_run["losses"][args.iterations]
            jax_run = json.loads(subprocess.run(common + ["--worker", "jax", "--target",
                                                          str(target), "--convolution",
                                                          args.convolution], check=True,
                                                capture_output=True, text=True).stdout)
            shape = np.load(folder / f"inputs_{size}.npz")["shape"]
            rows.append((size, shape, torch_run, jax_run))
    n = args.iterations
    print(f"neural-style objective, random full-width VGG19, L-BFGS history 100, unit step, "
          f"{os.cpu_count()} CPU cores; {n} iterations; jaxstyle's L-BFGS run with "
          f"--convolution {args.convolution}")
    print(f"{'size':>10} | {'eval torch':>10} | {'jax direct':>10} | {'ratio':>5} | "
          f"{'jax winograd':>12} | {'ratio':>5} | {'RSS torch':>9} | {'RSS jax':>8} | "
          f"{f'loss@{n} torch':>14} | {f'loss@{n} jax':>12} | {'torch time':>10} | "
          f"{'jax to reach':>17} | {'ratio':>5}")
    for _size, shape, t, j in rows:
        reach = j["reach_seconds"]
        print(f"{shape[1]:>4}x{shape[0]:<5} | {t['per_eval']:>9.3f}s | {j['per_eval']:>9.3f}s | "
              f"{j['per_eval'] / t['per_eval']:>5.2f} | {j['per_eval_winograd']:>11.3f}s | "
              f"{j['per_eval_winograd'] / t['per_eval']:>5.2f} | "
              f"{t['peak_rss_mb']:>7.0f}MB | {j['peak_rss_mb']:>6.0f}MB | "
              f"{t['losses'][n]:>14.6g} | "
              f"{j['losses'][n]:>12.6g} | {t['run_seconds']:>9.1f}s | "
              + (f"{reach:>7.1f}s (it {j['reach_iteration']:>3}) | {reach / t['run_seconds']:>5.2f}"
                 if reach is not None else f"{'not in ' + str(2 * n) + ' it':>17} |   -  "))
    print("eval: one loss+gradient evaluation (torch: mean of 5 after warm-up; jax: mean of 5 in "
          "one compiled loop, as its optimizer runs them, with --convolution direct (the "
          "default) and winograd); RSS: peak resident memory of each framework's own process; "
          "jax to reach: seconds of jaxstyle's L-BFGS loop (compilation excluded) until its loss "
          "is at most torch's loss after the same number of iterations, and the iteration where "
          "that happened (run up to 2N); torch time: torch's time for those iterations")


if __name__ == "__main__":
    main()
