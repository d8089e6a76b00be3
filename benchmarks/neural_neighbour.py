"""Neural neighbours side by side: nkolkin13's NNST-Opt against ``--preset neural-neighbour``.

Both get the same content and style files and the same network: torchvision's ImageNet VGG16 as
jaxstyle converts it (``jaxstyle weights download vgg16-torchvision``). The reference is the
published code itself (https://github.com/nkolkin13/NeuralNeighborStyleTransfer, MIT), run from
a checkout given by ``--reference`` in CPU mode with its own defaults (alpha 0.75, rotations of
the style, 200 Adam steps at each of 4 scales and a final full-size pass, OkLab colours), with
four things supplied from outside because this machine cannot download them or has no CUDA:
``torchvision``'s ``models.vgg16`` returns the converted weights in torchvision's layout,
``imageio`` reads and writes through Pillow, ``torch.cuda.synchronize`` does nothing, and
``Tensor.cuda`` keeps a tensor where it is (its colour step calls it even in CPU mode). Its
output size is the one constant changed (its script fixes 512; ``--sizes`` sets it), and below
512 px its Laplacian pyramid's depth (8 levels, which would shrink a 256 px side to nothing)
loses one level per halving, so its coarsest band keeps its size relative to the picture.
jaxstyle runs its command line with ``--preset neural-neighbour --size N``, on a warm
compilation cache (one run of the pair before the timed one; ``--cold`` skips it).

Each tool is one fresh process timed from start to exit, with its peak resident memory
(``wait4``'s maxrss). Both outputs are scored by one function: jaxstyle's quality line
(`jaxstyle.quality.measure`, the balanced default's layers) on the same network. Writes
``OUT/<pair>_<size>.jpg`` (content | style | reference | jaxstyle) and prints a markdown table.

    git clone https://github.com/nkolkin13/NeuralNeighborStyleTransfer /tmp/nnst
    pip install torch          # only for this benchmark: never a jaxstyle dependency
    jaxstyle weights download vgg16-torchvision
    python benchmarks/neural_neighbour.py --reference /tmp/nnst --sizes 256,512
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibration import calibration_pairs  # noqa: E402

VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M")
CONV_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
              "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
DEFAULT_PAIRS = "chelsea/marbled,tubingen/starry_night,golden_gate/shipwreck"


def torchvision_vgg16_features(weights_path: str):
    """torchvision's ``vgg16().features`` (a Sequential of 31 modules) holding jaxstyle's
    converted weights."""
    import torch

    from jaxstyle import load_weights

    weights = load_weights(weights_path)
    assert weights.preprocessing.channel_order == "RGB", "NNST feeds torchvision's RGB"
    layers, names = [], iter(CONV_NAMES)
    in_channels = 3
    for width in VGG16_CHANNELS:
        if width == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
            continue
        conv = torch.nn.Conv2d(in_channels, width, 3, padding=1)
        params = weights.params[next(names)]
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(
                np.asarray(params["kernel"]).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(np.asarray(params["bias"]).copy()))
        layers += [conv, torch.nn.ReLU(inplace=True)]
        in_channels = width
    return torch.nn.Sequential(*layers)


def _reference_main(spec: dict) -> None:
    """Runs the reference's ``styleTransfer.py`` in this process with the three stand-ins the
    module docstring names and its output size set to ``spec["size"]``."""
    import torch
    from PIL import Image

    features = torchvision_vgg16_features(spec["weights"])
    torchvision = types.ModuleType("torchvision")
    torchvision.models = types.SimpleNamespace(
        vgg16=lambda pretrained=True: types.SimpleNamespace(features=features))
    imageio = types.ModuleType("imageio")
    imageio.imread = lambda path: np.asarray(Image.open(path))
    imageio.imwrite = lambda path, array: Image.fromarray(array).save(path)
    sys.modules.update(torchvision=torchvision, imageio=imageio)
    if not torch.cuda.is_available():  # its CPU mode still calls these in places (zca.py)
        torch.cuda.synchronize = lambda *args: None
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.set_num_threads(os.cpu_count() or 1)
    script = Path(spec["reference"]) / "styleTransfer.py"
    source = script.read_text()
    assert source.count("\nsz = 512\n") == 1, "the reference's size line moved: update this"
    source = source.replace("\nsz = 512\n", f"\nsz = {int(spec['size'])}\n")
    sys.path.insert(0, str(script.parent))
    os.chdir(script.parent)
    if spec["size"] < 512:  # its 8-level pyramid would shrink a side to 0 px below 512
        from utils import stylize

        levels = 8 - round(math.log2(512 / spec["size"]))
        stylize_source = Path(stylize.__file__).read_text()
        assert stylize_source.count("pyr_levs = 8\n") == 1, "the reference moved: update this"
        exec(compile(stylize_source.replace("pyr_levs = 8\n", f"pyr_levs = {levels}\n"),
                     stylize.__file__, "exec"), stylize.__dict__)
    sys.argv = [str(script), "--cpu", "--content_path", spec["content"], "--style_path",
                spec["style"], "--output_path", spec["out"]]
    exec(compile(source, str(script), "exec"), {"__name__": "__main__", "__file__": str(script)})


def timed(command: list[str], env: dict | None = None) -> dict:
    """Runs `command` to its end: wall seconds, CPU seconds (user and system: less moved by
    other work on the machine than the wall), peak resident memory (MB), its output."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:3]} failed:\n{output[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_mb": usage.ru_maxrss / 1024, "output": output}


def run_reference(reference: Path, weights: str, content: Path, style: Path, size: int,
                  out: Path) -> dict:
    spec = {"reference": str(reference.resolve()), "weights": weights, "size": size,
            "content": str(content.resolve()), "style": str(style.resolve()),
            "out": str(out.resolve())}
    return timed([sys.executable, __file__, "--run-reference", json.dumps(spec)])


def run_jaxstyle(weights: str, content: Path, style: Path, size: int, out: Path,
                 extra: list[str]) -> dict:
    return timed([sys.executable, str(ROOT / "cli.py"), "stylize", str(content), str(style),
                  "-o", str(out), "--preset", "neural-neighbour", "--size", str(size),
                  "--weights", weights, "--overwrite", "-q", *extra])


def score(weights, output: Path, content: Path, style: Path):
    """The quality line's content distance, Gram ratio and sliced-Wasserstein ratio."""
    from jaxstyle import load_image
    from jaxstyle.quality import measure

    quality = measure(weights, load_image(output), load_image(content), [load_image(style)])
    return (float(np.mean(list(quality.content.values()))), quality.style_gram_ratio,
            quality.style_sliced_wasserstein_ratio)


def side_by_side(paths: list[Path], out: Path, height: int = 256) -> None:
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    images = [i.resize((max(1, round(i.width * height / i.height)), height)) for i in images]
    sheet = Image.new("RGB", (sum(i.width for i in images) + 4 * (len(images) - 1), height),
                      "white")
    x = 0
    for image in images:
        sheet.paste(image, (x, 0))
        x += image.width + 4
    sheet.save(out, quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="a checkout of nkolkin13/NeuralNeighborStyleTransfer")
    parser.add_argument("--weights", default=str(ROOT / "weights" / "vgg16-torchvision.msgpack"))
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--pairs", default=DEFAULT_PAIRS, help="calibration pair names")
    parser.add_argument("--out", type=Path, default=Path("neural_neighbour"))
    parser.add_argument("--cold", action="store_true", help="no warm-up run of jaxstyle")
    parser.add_argument("--skip-reference", action="store_true",
                        help="reuse the reference outputs and timings already in --out")
    parser.add_argument("extra", nargs="*", help="more stylize flags for jaxstyle's runs")
    args = parser.parse_args()
    if not (args.reference / "styleTransfer.py").is_file():
        parser.error(f"--reference {args.reference}: no styleTransfer.py there")
    if not Path(args.weights).is_file():
        parser.error(f"--weights {args.weights}: no such file "
                     "(jaxstyle weights download vgg16-torchvision)")
    args.out.mkdir(parents=True, exist_ok=True)
    from jaxstyle import load_weights

    weights = load_weights(args.weights)
    pairs = {name: (c, s) for name, c, s in calibration_pairs(args.out)}
    print("| pair | size | tool | wall | peak memory | content | Gram ratio | SW ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.pairs.split(","):
        content, style = pairs[name]
        for size in map(int, args.sizes.split(",")):
            stem = args.out / f"{name.replace('/', '_')}_{size}"
            ref_out, ours = Path(f"{stem}_reference.png"), Path(f"{stem}_jaxstyle.png")
            ref_log = Path(f"{stem}_reference.json")
            if args.skip_reference and ref_log.is_file():
                ref = json.loads(ref_log.read_text())
            else:
                ref = run_reference(args.reference, args.weights, content, style, size, ref_out)
                ref_log.write_text(json.dumps({k: v for k, v in ref.items() if k != "output"}))
            if not args.cold:
                run_jaxstyle(args.weights, content, style, size, ours, args.extra)
            mine = run_jaxstyle(args.weights, content, style, size, ours, args.extra)
            for tool, data, path in (("reference", ref, ref_out), ("jaxstyle", mine, ours)):
                c, g, sw = score(weights, path, content, style)
                print(f"| {name} | {size} | {tool} | {data['wall']:.0f} s | "
                      f"{data['peak_mb']:.0f} MB | {c:.3f} | {g:.3f} | {sw:.3f} |", flush=True)
            side_by_side([content, style, ref_out, ours], Path(f"{stem}.jpg"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--run-reference":
        _reference_main(json.loads(sys.argv[2]))
    else:
        main()
