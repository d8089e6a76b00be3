"""Time to a finished image: the real neural-style-pt against ``jaxstyle stylize --preset fast``.

Both tools get the same content and style files and the same real VGG16 (jaxstyle's converted
ImageNet weights, written out as the torch file neural-style-pt loads). neural-style-pt runs with
its own defaults (random start, L-BFGS with history 100 and unit steps, neural-style's weights)
for N iterations; jaxstyle runs ``--preset fast``. Each tool is a fresh process timed from its
start to its exit. Both PNG outputs are then scored with one function, neural-style's objective
at the output size (content relu4_2, style relu1_1..relu5_1, weights 5 / 100 / 1e-3), computed by
jaxstyle for both. Prints, per size: wall time, final loss and the time ratio, and the cost
accounting: GFLOP per evaluation (XLA's count for the loss and its input gradient), each tool's
achieved GFLOP/s, against this machine's float32 matrix-multiply rate.

    pip install torch 'torchvision==<the version paired with your torch>' neural-style==0.5.7
    jaxstyle weights download vgg16-keras
    python benchmarks/neural_style_pt.py                      # 384 and 512 px, 500 iterations
    python benchmarks/neural_style_pt.py --sizes 384 --iterations 100   # a quick look

neural-style (ProGamerGov's neural-style-pt on PyPI) imports torchvision only for its image
transforms; where the installed torchvision's compiled operators do not match the torch build
(here torch 2.13.0+cpu with torchvision 0.28.0, whose operators need CUDA torch), the runner skips
torchvision's operator registration, which neural-style never uses. torch, torchvision and
neural-style are needed only here, never by jaxstyle itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"
TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # VGG16 .features
CONV_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
              "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")


def write_torch_model(weights_path: Path, out: Path) -> None:
    """jaxstyle's converted VGG16 as the state dict neural-style-pt loads (``features.N``)."""
    import torch

    from jaxstyle import load_weights

    weights = load_weights(weights_path)
    assert weights.preprocessing.channel_order == "BGR", "neural-style-pt feeds Caffe's BGR"
    state = {}
    for index, name in zip(TORCH_CONV_INDICES, CONV_NAMES):
        kernel = np.asarray(weights.params[name]["kernel"])  # HWIO
        state[f"features.{index}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"features.{index}.bias"] = torch.from_numpy(
            np.asarray(weights.params[name]["bias"]).copy())
    torch.save(state, out)


def _neural_style_main(argv: list[str]) -> None:
    """Runs neural-style-pt's own ``main`` with `argv` (it parses sys.argv on import)."""
    import types

    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError:  # operators built for another torch build: skip registering them
        for name in list(sys.modules):
            if name.startswith("torchvision"):
                del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("stub")
    torch.set_num_threads(os.cpu_count() or 1)
    sys.argv = ["neural-style", *argv]
    from neural_style import neural_style

    neural_style.main()


def run_neural_style(content: str, style: str, model: Path, size: int, iterations: int,
                     init: str, out: Path) -> dict:
    """neural-style-pt in a fresh process: wall time, its own final loss, seconds per
    iteration (between its first and last progress lines)."""
    argv = ["-content_image", content, "-style_image", style, "-model_file", str(model),
            "-disable_check", "-gpu", "c", "-image_size", str(size), "-init", init,
            "-num_iterations", str(iterations), "-print_iter", "10", "-save_iter", "0",
            "-seed", "0", "-output_image", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--neural-style", json.dumps(argv)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marks, losses, lines = [], [], []
    for line in process.stdout:
        lines.append(line)
        if match := re.match(r"Iteration (\d+) /", line):
            marks.append((int(match[1]), time.perf_counter()))
        elif match := re.match(r"\s*Total loss: (\S+)", line):
            losses.append((marks[-1][0], float(match[1])))
    if process.wait() != 0:
        raise SystemExit("neural-style-pt failed:\n" + "".join(lines[-20:]))
    wall = time.perf_counter() - start
    (first, t0), (last, t1) = marks[0], marks[-1]
    per_iteration = (t1 - t0) / (last - first) if last > first else wall / iterations
    return {"wall": wall, "own_loss": losses[-1][1], "losses": losses,
            "per_iteration": per_iteration}


def run_jaxstyle(content: str, style: str, weights: Path, size: int, out: Path,
                 extra: list[str]) -> dict:
    """``jaxstyle stylize --preset fast`` in a fresh process: wall time and its report."""
    report = out.with_suffix(".json")
    command = [sys.executable, str(ROOT / "cli.py"), "stylize", content, style, "-o", str(out),
               "--size", str(size), "--weights", str(weights), "--preset", "fast",
               "--report", str(report), "--quiet", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit("jaxstyle failed:\n" + done.stderr[-2000:])
    return {"wall": wall, "report": json.loads(report.read_text())}


def neural_style_scorer(content: str, style: str, weights_path: Path, size: int):
    """``png -> loss``: neural-style's objective at the output size, and the cost of one
    evaluation of it and its input gradient (GFLOP, XLA's count; seconds, jaxstyle)."""
    import jax
    import jax.numpy as jnp

    from jaxstyle import StyleOptions, load_image, load_weights, losses
    from jaxstyle.images import fit_longest_side, resize

    weights = load_weights(weights_path)
    pre, params = weights.preprocessing, weights.params
    config = StyleOptions(preset="neural-style").loss_config()  # neural-style's layers, weights
    c = load_image(content)
    shape = fit_longest_side(c.shape, size)
    s = load_image(style)
    to_model = lambda rgb, hw: pre.to_model(resize(jnp.asarray(rgb), *hw))  # noqa: E731
    targets = losses.Targets(
        losses.content_targets(params, to_model(c, shape), config),
        (losses.style_targets(params, [to_model(s, fit_longest_side(s.shape, size))], config),))
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda x: losses.objective(x, params, targets, config)[0]))

    def score(png: Path) -> float:
        x = pre.to_model(jnp.asarray(load_image(png)))
        assert x.shape[:2] == shape, (png, x.shape, shape)
        return float(losses.objective(x, params, targets, config)[0])

    x = pre.to_model(resize(jnp.asarray(c), *shape))
    compiled = value_and_grad.lower(x).compile()
    flops = compiled.cost_analysis()["flops"]
    jax.block_until_ready(compiled(x))
    start = time.perf_counter()
    for _ in range(3):
        jax.block_until_ready(compiled(x))
    return score, flops / 1e9, (time.perf_counter() - start) / 3


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate (an n x n product, XLA on the default
    device), the practical peak a convolution network can approach."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    jax.block_until_ready(product(a))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(product(a))
    return 2 * n**3 / ((time.perf_counter() - start) / repeats) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="384,512")
    parser.add_argument("--iterations", type=int, default=500,
                        help="neural-style-pt's iterations (its default is 1000)")
    parser.add_argument("--content", default=str(SHARED / "tubingen.jpg"))
    parser.add_argument("--style", default=str(SHARED / "starry_night.jpg"))
    parser.add_argument("--weights", default=str(ROOT / "weights" / "vgg16-keras.msgpack"))
    parser.add_argument("--out", default=None, help="keep the outputs in this folder")
    parser.add_argument("--neural-style-init", default="random,image",
                        help="neural-style-pt's -init values to run (random is its default)")
    parser.add_argument("--jaxstyle-args", default="",
                        help="extra arguments for jaxstyle stylize, e.g. '--iterations 200'")
    parser.add_argument("--neural-style", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.neural_style is not None:
        _neural_style_main(json.loads(args.neural_style))
        return
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = folder / "vgg16-jaxstyle.pth"  # neural-style-pt picks VGG16 from the name
        write_torch_model(Path(args.weights), model)
        peak = matmul_gflops()
        print(f"real VGG16; {Path(args.content).name} in the style of {Path(args.style).name}; "
              f"neural-style-pt {args.iterations} iterations (its defaults) against jaxstyle "
              f"--preset fast {args.jaxstyle_args}".rstrip())
        print(f"float32 matrix multiply (4096x4096, XLA): {peak:.0f} GFLOP/s")
        for size in (int(s) for s in args.sizes.split(",")):
            jax_out = folder / f"fast_{size}.png"
            theirs = {init: run_neural_style(args.content, args.style, model, size,
                                             args.iterations, init,
                                             folder / f"neural_style_pt_{init}_{size}.png")
                      for init in args.neural_style_init.split(",")}
            ours = run_jaxstyle(args.content, args.style, Path(args.weights), size, jax_out,
                                args.jaxstyle_args.split())
            score, gflop, per_eval = neural_style_scorer(args.content, args.style,
                                                         Path(args.weights), size)
            loss_ours = score(jax_out)
            report, (h, w) = ours["report"], _png_shape(jax_out)
            iterations = len(report["history"]["total"])
            print(f"\n{size} px ({w}x{h}); one evaluation (loss and input gradient) = {gflop:.0f} "
                  "GFLOP")
            losses = {init: score(folder / f"neural_style_pt_{init}_{size}.png")
                      for init in theirs}
            for init, run in theirs.items():
                loss, rate = losses[init], gflop / run["per_iteration"]
                print(f"  neural-style-pt -init {init:6s} {run['wall']:6.1f} s  loss {loss:.4g} "
                      f"(its own count {run['own_loss']:.4g}); {run['per_iteration']:.3f} "
                      f"s/iteration = {rate:.0f} GFLOP/s, {rate / peak:.0%} of the matmul rate")
            rate = gflop / per_eval
            own = report["timings_seconds"]["optimize"] / max(report["evaluations"], 1)
            print(f"  jaxstyle --preset fast        {ours['wall']:6.1f} s  loss {loss_ours:.4g} "
                  f"(its own count {report['final_losses']['total']:.4g}); "
                  f"{iterations} iterations, {report['evaluations']} evaluations, "
                  f"{own:.3f} s each in the run (--convolution {report['options']['convolution']}"
                  f" = {gflop / own:.0f} direct-equivalent GFLOP/s); direct convolution "
                  f"{per_eval:.3f} s/evaluation = {rate:.0f} GFLOP/s, {rate / peak:.0%}")
            for init, run in theirs.items():
                loss = losses[init]
                verdict = "at most" if loss_ours <= loss else "ABOVE"
                print(f"  against -init {init}: time ratio {ours['wall'] / run['wall']:.2f}, "
                      f"loss {loss_ours / loss:.3f}x theirs ({verdict} theirs)")


def _png_shape(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.height, image.width

if __name__ == "__main__":
    main()
