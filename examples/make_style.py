"""Regenerates examples/marbled.jpg, the bundled style image: domain-warped waves in a palette.

Run: python examples/make_style.py. The output is deterministic (seeded) and made entirely by
this script, so it carries this project's licence.
"""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 384
PALETTE = np.array(  # deep blue, ultramarine, ochre, cream, vermilion: a loose "Starry Night" set
    [[18, 32, 76], [40, 86, 168], [214, 170, 60], [240, 226, 180], [196, 64, 40]], np.float64
) / 255


def marbled(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """float [size, size, 3] in [0, 1]: sines warped twice by random low-frequency waves."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size * 2 * np.pi
    for _ in range(2):
        fx, fy, px, py = rng.uniform(1, 4, 4)
        x, y = x + 0.9 * np.sin(fy * y + px), y + 0.9 * np.sin(fx * x + py)
    field = (np.sin(3 * x) * np.cos(2 * y) + 0.5 * np.sin(7 * x + 5 * y) + 1.5) / 3
    t = np.clip(field, 0, 1) * (len(PALETTE) - 1)
    low = np.floor(t).astype(int).clip(0, len(PALETTE) - 2)
    frac = (t - low)[..., None]
    image = PALETTE[low] * (1 - frac) + PALETTE[low + 1] * frac
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)


if __name__ == "__main__":
    out = Path(__file__).with_name("marbled.jpg")
    Image.fromarray((marbled() * 255 + 0.5).astype(np.uint8)).save(out, quality=90)
    print(f"wrote {out}")
