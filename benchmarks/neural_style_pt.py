"""Time to a finished image: the real neural-style-pt against jaxstyle's ``--preset fast``.

Both tools get the same content and style files and the same real VGG16 (jaxstyle's converted
ImageNet weights, written out as the torch file neural-style-pt loads). neural-style-pt runs with
its own defaults (random start, L-BFGS with history 100 and unit steps, neural-style's weights)
for N iterations; jaxstyle runs ``--preset fast`` (neural-style's objective, L-BFGS with a line
search, stopping when the loss stalls) through its library with the command line's compilation
cache. Each tool is a fresh process timed from its start to its exit.

The race is judged on each tool's own count of its final iterate: neural-style-pt prints its
loss; jaxstyle's is converted to neural-style-pt's units (it feeds pixels x 256, jaxstyle's
Caffe preprocessing x 255) by the ratio of the two scales' losses on jaxstyle's output. From
jaxstyle's loss after each iteration it also reports when jaxstyle first reached
neural-style-pt's final own loss, and the wall time then (from its progress reports, every 10
iterations). Before its timed run, jaxstyle runs the same problem for two iterations, which
fills the compilation cache, so the timed run measures a repeated run of that size; the warm-up's
compile time is printed as the first run's extra cost (``--cold`` skips it). The output files
are scored too, by one function (neural-style's objective at the
output size, jaxstyle's count): neural-style-pt's deprocess truncates pixels, which costs it
there, so the files' margin is not a speed figure. Prints, per pair and size, both judgements
and the cost accounting: GFLOP per evaluation (XLA's count for the loss and its input
gradient), each tool's achieved GFLOP/s, against this machine's float32 matrix-multiply rate.

    pip install torch 'torchvision==<the version paired with your torch>' neural-style==0.5.7
    jaxstyle weights download vgg16-keras
    python benchmarks/neural_style_pt.py          # three pairs, 384 and 512 px, 500 iterations
    python benchmarks/neural_style_pt.py --sizes 384 --iterations 100 --neural-style-init random \
        --pairs examples/chelsea.jpg:examples/marbled.jpg   # a quick look

neural-style (ProGamerGov's neural-style-pt on PyPI) imports torchvision only for its image
transforms; where the installed torchvision's compiled operators do not match the torch build
(here torch 2.13.0+cpu with torchvision 0.28.0, whose operators need CUDA torch), the runner skips
torchvision's operator registration, which neural-style never uses. torch, torchvision and
neural-style are needed only here, never by jaxstyle itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
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


def _jaxstyle_main(spec: dict) -> None:
    """One ``--preset fast`` run through the library, as the command line makes it (the
    compilation cache on), printing its loss history and the clock time at each progress
    report as one JSON line."""
    sys.path.insert(0, str(ROOT))
    from jaxstyle import StyleOptions, load_image, load_weights, save_image, stylize
    from jaxstyle.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    marks = []
    options = StyleOptions(preset="fast", size=spec["size"], **spec["options"])
    result = stylize(load_image(spec["content"]), [load_image(spec["style"])],
                     load_weights(spec["weights"]), options,
                     callback=lambda p: marks.append((p.iteration, time.time())))
    save_image(spec["out"], result.image)
    print(json.dumps({"marks": marks, "history": result.history["total"],
                      "final": result.losses["total"], "evaluations": result.evaluations,
                      "timings": result.timings, "convolution": options.network_convolution()}))


def run_jaxstyle(content: str, style: str, weights: Path, size: int, out: Path,
                 options: dict) -> dict:
    """``--preset fast`` in a fresh process: wall time, its loss after each iteration and the
    seconds from the process's start to each progress report."""
    spec = dict(content=content, style=style, weights=str(weights), size=size, out=str(out),
                options=options)
    start = time.time()
    done = subprocess.run([sys.executable, __file__, "--jaxstyle", json.dumps(spec)],
                          capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        raise SystemExit("jaxstyle failed:\n" + done.stderr[-2000:])
    run = json.loads(done.stdout.strip().splitlines()[-1])
    run["marks"] = [(i, t - start) for i, t in run["marks"]]
    return {"wall": wall, **run}


def seconds_to_reach(run: dict, target: float, scale: float) -> tuple[int, float] | None:
    """The first iteration whose loss (times `scale`) is at most `target`, and the seconds from
    the process's start to it (linear between progress reports), or None if it never was."""
    below = [i for i, total in enumerate(run["history"], 1) if total * scale <= target]
    if not below:
        return None
    iteration = below[0]
    done, seconds = 0, None
    for mark, at in run["marks"]:
        if mark >= iteration:  # in the first chunk: its end (compilation precedes it)
            if seconds is None:
                return iteration, at
            return iteration, seconds + (at - seconds) * (iteration - done) / (mark - done)
        done, seconds = mark, at
    return iteration, run["wall"]


def neural_style_scorer(content: str, style: str, weights_path: Path, size: int,
                        scale: float | None = None, cost: bool = True):
    """``png -> loss``: neural-style's objective at the output size, and the cost of one
    evaluation of it and its input gradient (GFLOP, XLA's count; seconds, jaxstyle). `scale`
    replaces the weights' pixel scale (255 for Caffe's; neural-style-pt feeds x 256); without
    `cost`, the two cost figures are None and nothing is compiled or timed."""
    import jax
    import jax.numpy as jnp

    from jaxstyle import StyleOptions, load_image, load_weights, losses
    from jaxstyle.resampling import fit_longest_side, resize
    from jaxstyle.targets import content_targets, style_targets

    weights = load_weights(weights_path)
    pre, params = weights.preprocessing, weights.params
    if scale is not None:
        pre = dataclasses.replace(pre, scale=scale)
    options = StyleOptions(preset="neural-style")  # neural-style's layers and weights
    config, loss_weights = options.loss_config(), options.loss_weights()
    c = load_image(content)
    shape = fit_longest_side(c.shape, size)
    s = load_image(style)
    to_model = lambda rgb, hw: pre.to_model(resize(jnp.asarray(rgb), *hw))  # noqa: E731
    style_target = (
        style_targets(params, [to_model(s, fit_longest_side(s.shape, size))], config),)
    targets_at = functools.cache(lambda hw: losses.Targets(
        content_targets(params, to_model(c, hw), config), style_target,
        weights=loss_weights))
    shape_targets = targets_at(shape)  # made outside the trace below: the cache holds no tracers
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda x: losses.objective(x, params, shape_targets, config)[0]))

    def score(png: Path) -> float:
        # Each tool's own output size: they round the short side differently (400x600 at 384
        # px: neural-style-pt 255x384, jaxstyle 256x384), so the content is resized to it.
        x = pre.to_model(jnp.asarray(load_image(png)))
        return float(losses.objective(x, params, targets_at(x.shape[:2]), config)[0])

    if not cost:
        return score, None, None
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


PAIRS = (f"{ROOT}/examples/chelsea.jpg:{ROOT}/examples/marbled.jpg,"
         f"{ROOT}/examples/coffee.jpg:{ROOT}/examples/mosaic.jpg,"
         f"{SHARED}/tubingen.jpg:{SHARED}/starry_night.jpg")


def race(content: str, style: str, size: int, args, model: Path, folder: Path,
         peak: float) -> None:
    """One pair at one size: both tools, judged on their own final loss and on the files."""
    tag = f"{Path(content).stem}_{Path(style).stem}_{size}"
    jax_out = folder / f"fast_{tag}.png"
    theirs = {init: run_neural_style(content, style, model, size, args.iterations, init,
                                     folder / f"neural_style_pt_{init}_{tag}.png")
              for init in args.neural_style_init.split(",")}
    options = json.loads(args.jaxstyle_options)
    warm = None
    if not args.cold:
        warm_out = folder / f"warmup_{tag}.png"
        warm = run_jaxstyle(content, style, Path(args.weights), size, warm_out,
                            {**options, "iterations": 2})
        warm_out.unlink()
    ours = run_jaxstyle(content, style, Path(args.weights), size, jax_out, options)
    score, gflop, per_eval = neural_style_scorer(content, style, Path(args.weights), size)
    # neural-style-pt feeds pixels x 256, jaxstyle's Caffe preprocessing x 255: jaxstyle's own
    # count, in neural-style-pt's units, is its count times this ratio, measured on its output.
    score_256 = neural_style_scorer(content, style, Path(args.weights), size, scale=256.0,
                                    cost=False)[0]
    file_ours = score(jax_out)
    to_theirs = score_256(jax_out) / file_ours
    (h, w), iterations = _png_shape(jax_out), len(ours["history"])
    print(f"\n{Path(content).name} / {Path(style).name}, {size} px ({w}x{h}); one evaluation "
          f"(loss and input gradient) = {gflop:.0f} GFLOP")
    files = {init: score(folder / f"neural_style_pt_{init}_{tag}.png") for init in theirs}
    own = ours["timings"]["optimize"] / max(ours["evaluations"], 1)
    for init, run in theirs.items():
        rate = gflop / run["per_iteration"]
        print(f"  neural-style-pt -init {init:6s} {run['wall']:6.1f} s  own final loss "
              f"{run['own_loss']:.4g}; file {files[init]:.4g}; {run['per_iteration']:.3f} "
              f"s/iteration = {rate:.0f} GFLOP/s, {rate / peak:.0%} of the matmul rate")
    print(f"  jaxstyle --preset fast        {ours['wall']:6.1f} s  own final loss "
          f"{ours['final'] * to_theirs:.4g} in neural-style-pt's units ({ours['final']:.4g} x "
          f"{to_theirs:.4f}); file {file_ours:.4g}; {iterations} iterations, "
          f"{ours['evaluations']} evaluations, {own:.3f} s each (--convolution "
          f"{ours['convolution']} = {gflop / own:.0f} direct-equivalent GFLOP/s), compile "
          f"{ours['timings']['compile']:.1f} s; direct convolution {per_eval:.3f} s/evaluation "
          f"= {gflop / per_eval:.0f} GFLOP/s, {gflop / per_eval / peak:.0%}")
    if warm is not None:
        print(f"  jaxstyle's 2-iteration warm-up run before it (fills the compilation cache): "
              f"{warm['wall']:.1f} s, of which compile {warm['timings']['compile']:.1f} s "
              f"(the timed run's: {ours['timings']['compile']:.1f} s)")
    per_iteration = ours["timings"]["optimize"] / max(iterations, 1)
    for init, run in theirs.items():
        reached = seconds_to_reach(ours, run["own_loss"], to_theirs)
        when = (f"reached their final own loss at iteration {reached[0]}, {reached[1]:.1f} s = "
                f"{reached[1] / run['wall']:.2f}x their time" if reached else
                "never reached their final own loss")
        print(f"  against -init {init}: whole-run time ratio {ours['wall'] / run['wall']:.2f}; "
              f"per iteration {per_iteration / run['per_iteration']:.2f}x theirs; "
              f"own loss {ours['final'] * to_theirs / run['own_loss']:.3f}x theirs; file loss "
              f"{file_ours / files[init]:.3f}x theirs; {when}")
    record = {"jaxstyle": {**ours, "to_theirs": to_theirs}, "neural_style_pt": theirs,
              "jaxstyle_warmup": warm}
    (folder / f"race_{tag}.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="384,512")
    parser.add_argument("--iterations", type=int, default=500,
                        help="neural-style-pt's iterations (its default is 1000)")
    parser.add_argument("--pairs", default=PAIRS,
                        help="content:style pairs, comma-separated (default: three pairs)")
    parser.add_argument("--weights", default=str(ROOT / "weights" / "vgg16-keras.msgpack"))
    parser.add_argument("--out", default=None, help="keep the outputs (images, and each race's "
                        "runs as race_*.json: loss histories, timings) in this folder")
    parser.add_argument("--neural-style-init", default="random,image",
                        help="neural-style-pt's -init values to run (random is its default)")
    parser.add_argument("--jaxstyle-options", default="{}",
                        help="StyleOptions fields for jaxstyle as JSON, e.g. "
                        "'{\"iterations\": 200}'")
    parser.add_argument("--cold", action="store_true",
                        help="no warm-up run: jaxstyle's timed run compiles from whatever the "
                        "compilation cache holds")
    parser.add_argument("--neural-style", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jaxstyle", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.neural_style is not None:
        _neural_style_main(json.loads(args.neural_style))
        return
    if args.jaxstyle is not None:
        _jaxstyle_main(json.loads(args.jaxstyle))
        return
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = folder / "vgg16-jaxstyle.pth"  # neural-style-pt picks VGG16 from the name
        write_torch_model(Path(args.weights), model)
        peak = matmul_gflops()
        print(f"real VGG16; neural-style-pt {args.iterations} iterations (its defaults) against "
              f"jaxstyle --preset fast {args.jaxstyle_options}")
        print(f"float32 matrix multiply (4096x4096, XLA): {peak:.0f} GFLOP/s")
        for pair in args.pairs.split(","):
            content, style = pair.split(":")
            for size in (int(s) for s in args.sizes.split(",")):
                race(content, style, size, args, model, folder, peak)


def _png_shape(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.height, image.width

if __name__ == "__main__":
    main()
