"""What carries most from one scale to the next: the levers of the coarse-to-fine default.

    python benchmarks/carry.py --size 256 --pairs 4

For each pair of the calibration set (the first --pairs), runs the default's two or more scales
with fixed iteration counts (the stop rule off, so every variant does the same work) and
prints, per variant, the loss at the full size after 10, 20, 30 and all its iterations, and the
final picture's quality line (content distance, Gram and sliced-Wasserstein ratios). Lower is
better everywhere. Variants:

- upsampled: the finer scale starts from the coarser result enlarged;
- fine band: enlarged plus the photo's own detail finer than the coarser scale (the default);
- pyramid: fine band start, optimizing the bands of the image's Laplacian pyramid
  (``--parametrization pyramid``) at every scale;
- colour-matched start: the coarsest scale starts from the photo recoloured to the style's
  colour mean and covariance instead of the photo itself (fine band after).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CHECKPOINTS = (10, 20, 30)


def main() -> None:
    import calibration
    import jax.numpy as jnp

    from jaxstyle import StyleOptions, color, driver, load_image, load_weights, quality, stylize
    from jaxstyle.resampling import resize
    from jaxstyle.stages import output_shape, scale_sizes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--variants", default="upsampled,fine band,pyramid,colour-matched start")
    args = parser.parse_args()
    print(f"Command: python benchmarks/carry.py --size {args.size} --pairs {args.pairs}\n")

    weights = load_weights(ROOT / "weights" / "vgg16-keras.msgpack")
    carried = driver.carried_canvas

    def upsampled(canvas, content_rgb):
        return np.asarray(resize(jnp.asarray(canvas), *content_rgb.shape[:2]))

    variants = [v.strip() for v in args.variants.split(",")]
    print("| pair | variant | loss at full size after " + ", ".join(map(str, CHECKPOINTS))
          + ", end | content | Gram | sliced W. |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, content_path, style_path in calibration.calibration_pairs(Path(folder))[
                :args.pairs]:
            content, style = load_image(content_path), load_image(style_path)
            shape = output_shape(content.shape, args.size)
            schedule = scale_sizes(content.shape, StyleOptions(size=args.size))
            sizes = tuple(size or max(shape) for size, _ in schedule)
            counts = tuple(n for _, n in schedule)
            options = StyleOptions(size=args.size, scales=sizes, scale_iterations=counts,
                                   stop_change=0.0)
            for variant in variants:
                driver.carried_canvas = upsampled if variant == "upsampled" else carried
                run_options = options.replace(
                    parametrization="pyramid" if variant == "pyramid" else "pixels")
                init = (color.match_colors(content, style) if variant == "colour-matched start"
                        else None)
                result = stylize(content, [style], weights, run_options, init_image=init)
                finest = result.history["total"][-counts[-1]:]
                losses = [finest[k - 1] for k in CHECKPOINTS if k <= len(finest)] + [finest[-1]]
                q = quality.measure(weights, result.image, content, [style], run_options)
                print(f"| {name} | {variant} | {' / '.join(f'{v:.4f}' for v in losses)} | "
                      f"{q.content_distance:.3f} | {q.style_gram_ratio:.4f} | "
                      f"{q.style_sliced_wasserstein_ratio:.3f} |", flush=True)
    driver.carried_canvas = carried


if __name__ == "__main__":
    main()
