"""Every command's result, fingerprinted: run before and after a change that must not change them.

Runs a fixed list of jaxstyle commands (stylize under each preset and with the controls that take
their own code path, resume from a checkpoint in the middle of a scale schedule, batch, sweep,
video) on the tiny-width VGG19 fixture and small real images, and writes the SHA-256 of every file
each command leaves. ``--against`` compares with an earlier manifest and exits non-zero on any
difference. The commands run the checkout given by ``--checkout`` (``python cli.py``), so one
checkout's script can fingerprint another::

    python benchmarks/identical.py --out /tmp/before            # before the change
    python benchmarks/identical.py --out /tmp/after --against /tmp/before/manifest.json

Results depend on the machine's CPU and XLA version: compare manifests made on one machine.
"""

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
TINY = ["--content-layers", "relu2_1", "--style-layers", "relu1_1,relu2_1"]


def cases(weights: str, images: Path, work: Path) -> dict[str, list[list[str]]]:
    """Each case: the commands it runs, in order, as argument lists after ``cli.py``."""
    content, style, style2 = (str(images / name) for name in
                              ("tubingen.jpg", "starry_night.jpg", "woman-with-hat-matisse.jpg"))
    frames = work / "frames"
    common = ["--weights", weights, "-q", "--seed", "3"]
    mask, mask_right = str(work / "mask.png"), str(work / "mask_right.png")
    out = str(work / "out")
    return {
        "balanced": [["stylize", content, style, "-o", f"{out}/balanced.png", "--size", "96",
                      "--iterations", "12", *common]],
        "neural_style": [["stylize", content, style, "-o", f"{out}/neural_style.png",
                          "--preset", "neural-style", "--size", "64", "--iterations", "10",
                          *TINY, *common]],
        "fast": [["stylize", content, style, "-o", f"{out}/fast.png", "--preset", "fast",
                  "--size", "64", "--iterations", "10", *TINY, *common]],
        "neural_neighbour": [["stylize", content, style, "-o", f"{out}/neighbour.png",
                              "--preset", "neural-neighbour", "--size", "64", "--iterations",
                              "6", "--original-colors", "oklab", *common]],
        "controls": [["stylize", content, style, style2, "-o", f"{out}/controls.png",
                      "--size", "80", "--iterations", "8", "--style-blend-weights", "2,1",
                      "--style-loss", "mean_cov", "--original-colors", "luminance",
                      "--init", "noise", "--tv-weight", "0.01", "--keep-best", *TINY, *common]],
        "masks": [["stylize", content, style, style2, "-o", f"{out}/masks.png", "--size", "64",
                   "--iterations", "8", "--style-masks", mask, mask_right,
                   "--content-mask", mask, *TINY, *common]],
        "adam_pyramid": [["stylize", content, style, "-o", f"{out}/adam.png", "--size", "64",
                          "--iterations", "10", "--optimizer", "adam", "--parametrization",
                          "pyramid", "--ema-decay", "0.9", *TINY, *common]],
        "sliced_tiles": [["stylize", content, style, "-o", f"{out}/tiles.png", "--size", "96",
                          "--iterations", "4", "--style-loss", "sliced_wasserstein",
                          "--tile-size", "64", "--tile-overlap", "16", *TINY, *common]],
        # Interrupted (SIGINT) once its first checkpoint is written, then resumed: the same
        # picture as the run never interrupted.
        "resume": [["stylize", content, style, "-o", f"{out}/resume.png", "--size", "96",
                    "--scales", "48,96", "--scale-iterations", "30,30", "--checkpoint-every",
                    "2", "--stop-change", "0", *TINY, *common],
                   ["resume", f"{out}/resume.png.ckpt", "-q"]],
        "batch": [["batch", content, style2, "-s", style, "-o", f"{out}/batch", "--size", "64",
                   "--iterations", "6", *TINY, *common]],
        # Its contact sheet prints each cell's wall time: its log's quality lines stand in.
        "sweep": [["sweep", content, style, "-o", f"{work}/sweep.png", "--size", "48",
                   "--iterations", "4", "--vary", "style_strength=5,20", *TINY,
                   *[flag for flag in common if flag != "-q"]]],
        "video": [["video", str(frames), style, "-o", f"{out}/video", "--size", "48",
                   "--iterations", "4", "--first-frame-iterations", "6", *TINY, *common]],
    }


def prepare(work: Path, images: Path) -> None:
    """The masks and the three video frames the cases read, made from the shared images."""
    import numpy as np
    from PIL import Image

    (work / "out").mkdir(parents=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    Image.fromarray(mask).save(work / "mask.png")
    Image.fromarray(255 - mask).save(work / "mask_right.png")
    frames = work / "frames"
    frames.mkdir()
    photo = Image.open(images / "tubingen.jpg").convert("RGB").resize((96, 64))
    for index in range(3):
        photo.crop((index * 4, 0, index * 4 + 80, 64)).save(frames / f"{index:04d}.png")


def interrupted(command: list[str], cwd: Path, environment: dict, checkpoint: Path
                ) -> tuple[int, str]:
    """Runs ``command`` and sends it SIGINT once ``checkpoint`` exists; 0 when it stopped so."""
    process = subprocess.Popen(command, cwd=cwd, env=environment, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    while process.poll() is None and not checkpoint.exists():
        time.sleep(0.05)
    if process.poll() is not None:
        return 1, "finished before its first checkpoint: nothing to resume"
    process.send_signal(signal.SIGINT)
    _, error = process.communicate()
    return (0 if process.returncode == 128 + signal.SIGINT else process.returncode), error


def fingerprint(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` but JSON reports, whose times differ run to run."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.suffix not in (".json", ".log")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for outputs and manifest")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the jaxstyle checkout to run")
    parser.add_argument("--weights", default=None,
                        help="weights file (default: tests/data/vgg19_tiny.pth converted)")
    parser.add_argument("--against", type=Path, help="an earlier manifest.json to compare with")
    parser.add_argument("--only", help="comma-separated case names")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty")
    work = args.out
    prepare(work, IMAGES)
    cli = [sys.executable, str(args.checkout / "cli.py")]
    weights = args.weights
    if weights is None:
        weights = str(work / "tiny.msgpack")
        subprocess.run([*cli, "weights", "convert", str(ROOT / "tests/data/vgg19_tiny.pth"),
                        weights, "--preprocessing", "torchvision"], check=True,
                       stdout=subprocess.DEVNULL)
    chosen = cases(weights, IMAGES, work)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    environment = dict(os.environ)
    failed = []
    for name, commands in chosen.items():
        for index, command in enumerate(commands):
            if name == "resume" and index == 0:
                returncode, error = interrupted(cli + command, args.checkout, environment,
                                                work / "out" / "resume.png.ckpt")
            else:
                done = subprocess.run([*cli, *command], cwd=args.checkout, env=environment,
                                      capture_output=True, text=True)
                returncode, error = done.returncode, done.stderr
                if name == "sweep":
                    cells = [re.sub(r" \(\d+ s\)$", "", line) for line in error.splitlines()
                             if re.match(r"\[\d+/\d+\]", line)]
                    (work / "out" / "sweep_cells.txt").write_text("\n".join(cells) + "\n")
            if returncode != 0:
                failed.append(name)
                print(f"{name}: exit {returncode}: {error.strip()[-300:]}")
        print(f"{name}: ran", flush=True)
    manifest = fingerprint(work / "out")
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(manifest)} files fingerprinted in {work / 'manifest.json'}")
    if args.against is None:
        return 1 if failed else 0
    before = json.loads(args.against.read_text())
    differ = sorted(name for name in before.keys() | manifest.keys()
                    if before.get(name) != manifest.get(name))
    for name in differ:
        how = "missing" if name not in manifest else "new" if name not in before else "changed"
        print(f"differs: {name} ({how})")
    print("identical" if not differ else f"{len(differ)} of {len(before)} files differ")
    return 1 if differ or failed else 0


if __name__ == "__main__":
    sys.exit(main())
