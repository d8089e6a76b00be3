"""Video: time per frame (first and later frames), flicker against independent frames, and peak
memory, with the real VGG16.

    jaxstyle weights download vgg16-keras   # once
    python benchmarks/video.py [--sizes 256,512] [--frames 6] [--iterations 50]

For each size it makes a clip panning across examples/chelsea.jpg by 3 px a frame
(examples/make_clip.py), stylizes it with examples/marbled.jpg once with the temporal loss
(default --temporal-weight) and once with --temporal-weight 0 (independent frames, each in its
own process so that peak memory is its own), and prints seconds per frame, the flicker along the
known motion (`jaxstyle.temporal.flicker`) of both and their ratio. The first frame runs twice
the iterations of the others (the default).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHIFT = 3


def one_run(clip: Path, out: Path, size: int, iterations: int, temporal_weight: float) -> dict:
    from jaxstyle import StyleOptions
    from jaxstyle.compilation_cache import enable_compilation_cache
    from jaxstyle.video import stylize_video

    enable_compilation_cache()
    seconds = []
    options = StyleOptions(size=size, iterations=iterations, temporal_weight=temporal_weight)
    stylize_video(str(clip), [str(ROOT / "examples" / "marbled.jpg")], str(out), options,
                  lambda message: None, progress_bar=False,
                  on_frame=lambda index, s: seconds.append(s))
    return {"first": seconds[0], "later": float(np.mean(seconds[1:])),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)  # clip out size its weight
    args = parser.parse_args()
    if args.one:
        clip, out, size, iterations, weight = args.one
        print(json.dumps(one_run(Path(clip), Path(out), int(size), int(iterations),
                                 float(weight))))
        return
    sys.path.insert(0, str(ROOT / "examples"))
    from make_clip import pan_clip

    from jaxstyle import StyleOptions
    from jaxstyle.temporal import flicker

    default_weight = StyleOptions().temporal_weight
    print(f"{args.frames} frames panning {SHIFT} px/frame, {args.iterations} iterations a frame "
          f"({2 * args.iterations} for the first), L-BFGS, real VGG16")
    for size in map(int, args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            height = round((size + SHIFT * (args.frames - 1)) * 300 / 451)
            pan_clip(ROOT / "examples" / "chelsea.jpg", tmp / "clip.mp4", height, args.frames,
                     SHIFT, 12)
            found = {}
            for weight in (default_weight, 0.0):
                out = tmp / f"frames_{weight:g}"
                child = subprocess.run(
                    [sys.executable, __file__, "--one", str(tmp / "clip.mp4"), str(out), str(size),
                     str(args.iterations), str(weight)], capture_output=True, text=True)
                if child.returncode:
                    raise SystemExit(child.stderr)
                found[weight] = json.loads(child.stdout.strip().splitlines()[-1])
                frames = [np.asarray(Image.open(p), np.float32) / 255
                          for p in sorted(out.glob("frame_*.png"))]
                found[weight]["flicker"] = flicker(frames, (0, -SHIFT))
            t, i = found[default_weight], found[0.0]
            print(f"{size} px: temporal weight {default_weight:g}: first frame {t['first']:.1f} s, "
                  f"later frames {t['later']:.1f} s each, peak RSS {t['peak_rss_mb']:.0f} MB, "
                  f"flicker {t['flicker']:.4f}; independent frames: first {i['first']:.1f} s, "
                  f"later {i['later']:.1f} s, flicker {i['flicker']:.4f}; flicker ratio "
                  f"{t['flicker'] / i['flicker']:.2f}", flush=True)


if __name__ == "__main__":
    main()
