"""Video: time per frame (first and later frames), flicker against independent frames, and peak
memory, with the real VGG16.

    jaxstyle weights download vgg16-keras   # once
    python benchmarks/video.py [--sizes 256,512] [--frames 6] [--iterations 50]
    python benchmarks/video.py --sizes 192 --temporal-weights 3,30,300 --compare-start

For each size it makes a clip panning across examples/chelsea.jpg by 3 px a frame
(examples/make_clip.py), stylizes it with examples/marbled.jpg once with the temporal loss
(default --temporal-weight) and once with --temporal-weight 0 (independent frames, each in its
own process so that peak memory is its own), and prints seconds per frame, the flicker along the
known motion (`jaxstyle.temporal.flicker`) of both and their ratio. The first frame runs twice
the iterations of the others (the default).

It also measures content entering at the right border (3 new columns a frame): how much the
strip that entered in a frame is changed from the photo (mean |stylized - content|) against the
band just inside it that earlier frames refined, averaged over the frames (1: as stylized as its
neighbours; less: paler). With ``--compare-start`` the temporal run is repeated with the start
image of earlier versions (the content frame where the flow is not trusted) for comparison.
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


def one_run(clip: Path, out: Path, size: int, iterations: int, temporal_weight: float,
            old_start: bool = False) -> dict:
    from jaxstyle import StyleOptions, temporal
    from jaxstyle.compilation_cache import enable_compilation_cache
    from jaxstyle.video import stylize_video

    enable_compilation_cache()
    if old_start:  # earlier versions: the content frame wherever the flow is not trusted
        def content_where_untrusted(content, warped, weights):
            c = np.asarray(weights, np.float32)[..., None]
            return (c * np.asarray(warped) + (1 - c) * np.asarray(content)).astype(np.float32)

        temporal.start_image = content_where_untrusted
    seconds = []
    options = StyleOptions(size=size, iterations=iterations, temporal_weight=temporal_weight)
    stylize_video(str(clip), [str(ROOT / "examples" / "marbled.jpg")], str(out), options,
                  lambda message: None, progress_bar=False,
                  on_frame=lambda index, s: seconds.append(s))
    return {"first": seconds[0], "later": float(np.mean(seconds[1:])),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def entering_ratio(frames: list[np.ndarray], contents: list[np.ndarray]) -> float:
    """Mean over frames 2.. of: the change from the photo of the columns that entered in that
    frame, over that of the band 4-10 frames' worth of columns inside (see the docstring)."""
    ratios = []
    for styled, content in zip(frames[1:], contents[1:]):
        change = np.abs(styled - content).mean(axis=(0, 2))  # per column
        width = change.shape[0]
        new = change[width - SHIFT:].mean()
        inside = change[width - 10 * SHIFT:width - 4 * SHIFT].mean()
        ratios.append(new / inside)
    return float(np.mean(ratios))


def clip_frames(clip: Path, shape: tuple[int, int]) -> list[np.ndarray]:
    """The clip's frames at the output's size, float32 [H, W, 3] in [0, 1]."""
    import jax.numpy as jnp

    from jaxstyle.frames import open_source, read_frames
    from jaxstyle.resampling import resize

    return [np.asarray(resize(jnp.asarray(f), *shape)) for f in read_frames(open_source(str(clip)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--temporal-weights", default=None, metavar="W,W,...",
                        help="temporal weights to compare (default: the default's)")
    parser.add_argument("--compare-start", action="store_true",
                        help="also run with earlier versions' start for entering content")
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS)  # clip out size its weight old
    args = parser.parse_args()
    if args.one:
        clip, out, size, iterations, weight, old = args.one
        print(json.dumps(one_run(Path(clip), Path(out), int(size), int(iterations),
                                 float(weight), old == "old")))
        return
    sys.path.insert(0, str(ROOT / "examples"))
    from make_clip import pan_clip

    from jaxstyle import StyleOptions
    from jaxstyle.temporal import flicker

    default_weight = StyleOptions().video.temporal_weight
    weights = ([float(w) for w in args.temporal_weights.split(",")] if args.temporal_weights
               else [default_weight])
    print(f"{args.frames} frames panning {SHIFT} px/frame, {args.iterations} iterations a frame "
          f"({2 * args.iterations} for the first), L-BFGS, real VGG16")
    for size in map(int, args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            height = round((size + SHIFT * (args.frames - 1)) * 300 / 451)
            pan_clip(ROOT / "examples" / "chelsea.jpg", tmp / "clip.mp4", height, args.frames,
                     SHIFT, 12)
            found = {}
            runs = [(w, "new") for w in weights] + [(0.0, "new")] + (
                [(default_weight, "old")] if args.compare_start else [])
            for weight, start in runs:
                out = tmp / f"frames_{weight:g}_{start}"
                child = subprocess.run(
                    [sys.executable, __file__, "--one", str(tmp / "clip.mp4"), str(out), str(size),
                     str(args.iterations), str(weight), start], capture_output=True, text=True)
                if child.returncode:
                    raise SystemExit(child.stderr)
                found[weight, start] = json.loads(child.stdout.strip().splitlines()[-1])
                frames = [np.asarray(Image.open(p), np.float32) / 255
                          for p in sorted(out.glob("frame_*.png"))]
                contents = clip_frames(tmp / "clip.mp4", frames[0].shape[:2])
                found[weight, start]["flicker"] = flicker(frames, (0, -SHIFT))
                found[weight, start]["entering"] = entering_ratio(frames, contents)
            i = found[0.0, "new"]
            print(f"{size} px: independent frames: first {i['first']:.1f} s, later "
                  f"{i['later']:.1f} s, flicker {i['flicker']:.4f}", flush=True)
            for weight in weights:
                t = found[weight, "new"]
                print(f"  temporal weight {weight:g}: first frame {t['first']:.1f} s, later frames "
                      f"{t['later']:.1f} s each, peak RSS {t['peak_rss_mb']:.0f} MB, flicker "
                      f"{t['flicker']:.4f} ({t['flicker'] / i['flicker']:.2f} of independent "
                      f"frames'); entering content changed {t['entering']:.2f}x as much as its "
                      f"neighbours", flush=True)
            if args.compare_start:
                old = found[default_weight, "old"]
                print(f"  with earlier versions' start (the photo where the flow is not trusted): "
                      f"entering content {old['entering']:.2f}x its neighbours, flicker "
                      f"{old['flicker']:.4f}", flush=True)


if __name__ == "__main__":
    main()
