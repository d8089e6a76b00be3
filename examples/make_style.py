"""Regenerates the bundled style images, each made entirely by this script (this project's licence).

    python examples/make_style.py [marbled] [mosaic] [strokes]     # default: all three

- ``marbled.jpg``: domain-warped waves in a palette.
- ``mosaic.jpg``: stained glass: Voronoi cells in jewel colours with dark lead lines.
- ``strokes.jpg``: short thick brush strokes laid along a swirling flow field.

Every image is deterministic (seeded).
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 384
PALETTE = np.array(  # deep blue, ultramarine, ochre, cream, vermilion: a loose "Starry Night" set
    [[18, 32, 76], [40, 86, 168], [214, 170, 60], [240, 226, 180], [196, 64, 40]], np.float64
) / 255
JEWELS = np.array(  # ruby, sapphire, emerald, amber, amethyst, turquoise
    [[150, 20, 40], [25, 50, 150], [20, 120, 60], [230, 150, 20], [110, 40, 130], [30, 150, 160]],
    np.float64,
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


def mosaic(size: int = SIZE, cells: int = 220, seed: int = 1) -> np.ndarray:
    """float [size, size, 3] in [0, 1]: Voronoi cells, each a jewel colour lit from one side,
    separated by dark lines where the two nearest cell centres are almost equally near."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (cells, 2))
    colours = JEWELS[rng.integers(0, len(JEWELS), cells)] * rng.uniform(0.7, 1.2, (cells, 1))
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    distance = np.hypot(y[..., None] - centres[:, 0], x[..., None] - centres[:, 1])
    nearest = np.argsort(distance, axis=-1)[..., :2]
    d1 = np.take_along_axis(distance, nearest[..., :1], -1)[..., 0]
    d2 = np.take_along_axis(distance, nearest[..., 1:], -1)[..., 0]
    owner = nearest[..., 0]
    light = 1.0 - 0.35 * (d1 / (d1.max() + 1e-9)) + 0.1 * np.sin((x + y) / 9.0)
    image = colours[owner] * light[..., None]
    lead = np.clip((d2 - d1 - 1.5) / 1.5, 0, 1)[..., None]  # 0 on the borders
    image = image * lead + np.array([0.08, 0.07, 0.06]) * (1 - lead)
    return np.clip(image + rng.normal(0, 0.025, image.shape), 0, 1)


def strokes(size: int = SIZE, count: int = 4000, seed: int = 2) -> np.ndarray:
    """float [size, size, 3] in [0, 1]: short thick strokes along a swirling flow field."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", (size, size), tuple(int(c * 255) for c in PALETTE[0]))
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        x, y = rng.uniform(0, size, 2)
        u, v = x / size * 2 * np.pi, y / size * 2 * np.pi
        angle = 1.7 * np.sin(1.3 * u + 0.5) + 1.4 * np.cos(1.1 * v - 0.3) + 0.6 * np.sin(u + v)
        length, width = rng.uniform(8, 22), int(rng.integers(3, 7))
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        band = (np.sin(2.2 * u + 1.3 * np.cos(1.7 * v)) + 1) / 2 * (len(PALETTE) - 1)
        colour = PALETTE[int(np.clip(band + rng.normal(0, 0.6), 0, len(PALETTE) - 1))]
        colour = np.clip(colour * rng.uniform(0.8, 1.15) + rng.normal(0, 0.04, 3), 0, 1)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=tuple(int(c * 255) for c in colour),
                  width=width)
    return np.asarray(canvas, np.float64) / 255


STYLES = {"marbled": marbled, "mosaic": mosaic, "strokes": strokes}

if __name__ == "__main__":
    for name in sys.argv[1:] or STYLES:
        out = Path(__file__).with_name(f"{name}.jpg")
        Image.fromarray((STYLES[name]() * 255 + 0.5).astype(np.uint8)).save(out, quality=90)
        print(f"wrote {out}")
