"""Time per L-BFGS iteration of each style loss (and content loss) against Gram's, real VGG16.

    jaxstyle weights download vgg16-keras   # once
    python benchmarks/style_losses.py [--size 512] [--iterations 20]

Each variant runs `jaxstyle.stylize` on the bundled chelsea.jpg / marbled.jpg; the per-iteration
time is the optimizer's wall time divided by the iterations, compilation excluded (`stylize`
times it apart), as `--report` gives it.
"""

import argparse
import time
from pathlib import Path

from jaxstyle import StyleOptions, load_image, load_weights, stylize
from jaxstyle.weights import find_weights

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VARIANTS = (
    ("gram", {}),
    ("sliced_wasserstein", {"style_loss": "sliced_wasserstein"}),
    ("gram_histogram", {"style_loss": "gram_histogram"}),
    ("gram + self_similarity content", {"content_loss": "self_similarity"}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    args = parser.parse_args()
    weights = load_weights(find_weights())
    content = load_image(EXAMPLES / "chelsea.jpg")
    style = load_image(EXAMPLES / "marbled.jpg")
    print(f"{weights.network} ({weights.source}), {args.size} px, {args.iterations} iterations, "
          "compilation excluded")
    print(f"{'variant':>32} | {'s/iteration':>11} | {'vs gram':>7} | evaluations")
    base = None
    for name, changes in VARIANTS:
        if args.only and name not in args.only:
            continue
        options = StyleOptions(preset="neural-style", size=args.size,
                               iterations=args.iterations, progress_every=args.iterations,
                               **changes)
        start = time.perf_counter()
        result = stylize(content, [style], weights, options)
        per_iteration = result.timings["optimize"] / len(result.history["total"])
        base = base or per_iteration
        print(f"{name:>32} | {per_iteration:>11.3f} | {per_iteration / base:>7.2f} | "
              f"{result.evaluations} ({time.perf_counter() - start:.1f} s in all, compile "
              f"{result.timings['compile']:.1f} s)")


if __name__ == "__main__":
    main()
