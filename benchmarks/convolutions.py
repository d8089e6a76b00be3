"""Which way to convolve each layer: direct, one product (im2col), Winograd F(2), F(4), F(6).

    python benchmarks/convolutions.py [--size 384] [--aspect 0.75] [--repeats 10]
                                      [--shapes 96x72x256,...]

One 3x3 convolution's forward pass and input gradient, as the optimizer's loop needs them
(Winograd's kernels transformed once beforehand, as ``jaxstyle.vgg.transform_kernels`` does), on
VGG16's layer shapes at ``--size`` (or the ``HxWxC[xO]`` maps of ``--shapes``), on ReLU-like
inputs and He-scaled kernels. Each variant's error is its largest output difference from the
direct convolution at float32's highest precision, relative to the output's largest magnitude.
F(6x6, 3x3) (points 0, +-1, +-2, +-1/2) is not in jaxstyle: its matrices are built here by
Cook and Toom's construction, to see whether a larger tile than F(4x4) would pay. Timings
alternate the variants (ABBA) and give medians; they are single calls outside the optimizer's
while-loop, where XLA:CPU runs some convolutions at other speeds, so compare the variants of
one row with each other.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bfloat16 import timed  # noqa: E402  (its ABBA medians, beside this script)

from jaxstyle import winograd  # noqa: E402

VGG16_LAYERS = (("conv1_2", 1, 64, 64), ("conv2_1", 2, 64, 128), ("conv2_2", 2, 128, 128),
                ("conv3_1", 4, 128, 256), ("conv3_2", 4, 256, 256), ("conv4_2", 8, 512, 512),
                ("conv5_1", 16, 512, 512))
"""Name, downsampling and channels in/out of the VGG16 layers whose shapes differ."""


def cook_toom(points: list, m: int, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B^T, G, A^T of Winograd's F(m, r) on the finite `points` (m + r - 2 of them) and infinity.

    A^T and G come from the points (Vandermonde rows, Lagrange denominators); B^T is then the
    unique solution of the bilinear identity A^T [(G g) * (B^T d)] = d correlated with g.
    """
    n = m + r - 1
    p = [Fraction(x) for x in points]
    if len(p) != n - 1:
        raise ValueError(f"points: expected {n - 1}, got {len(p)}")
    at = np.zeros((m, n))
    g = np.zeros((n, r))
    for i in range(m):
        at[i, :n - 1] = [float(x ** i) for x in p]
    at[m - 1, n - 1] = 1.0
    for j in range(n - 1):
        scale = np.prod([p[j] - p[k] for k in range(n - 1) if k != j])
        g[j] = [float(p[j] ** k / scale) for k in range(r)]
    g[n - 1, r - 1] = 1.0
    products = np.array([at[i] * g[:, k] for i in range(m) for k in range(r)])
    bt = np.zeros((n, n))
    for col in range(n):
        wanted = np.array([float(col == i + k) for i in range(m) for k in range(r)])
        bt[:, col] = np.linalg.lstsq(products, wanted, rcond=None)[0]
        if not np.allclose(products @ bt[:, col], wanted):
            raise ValueError(f"points {points}: no F({m}, {r}) on them")
    return bt, g, at


def _direct(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def _im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    _, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifted = [padded[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(shifted, axis=-1) @ kernel.reshape(9 * c, -1)


@jax.custom_vjp
def _winograd(x: jax.Array, u: jax.Array, u_backward: jax.Array) -> jax.Array:
    return winograd.conv3x3_transformed(x, u)


def _winograd_fwd(x, u, u_backward):
    return _winograd(x, u, u_backward), (u, u_backward)


def _winograd_bwd(residuals, g):
    u, u_backward = residuals  # the input gradient is the flipped kernel's convolution
    return winograd.conv3x3_transformed(g, u_backward), jnp.zeros_like(u), jnp.zeros_like(
        u_backward)


_winograd.defvjp(_winograd_fwd, _winograd_bwd)


def variants(x: jax.Array, kernel: jax.Array) -> dict[str, tuple]:
    """Each variant's (convolution, its arguments after x)."""
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    out = {"direct": (_direct, (kernel,)), "im2col": (_im2col, (kernel,))}
    for tile in winograd.TILES:
        out[f"F({tile}x{tile})"] = (_winograd, (winograd.transform_kernel(kernel, tile),
                                                winograd.transform_kernel(flipped, tile)))
    return out


def measure(h: int, w: int, c: int, o: int, repeats: int, key: jax.Array) -> dict:
    """Median seconds and relative error of each variant on one shape."""
    x = jax.nn.relu(jax.random.normal(key, (1, h, w, c)))
    kernel = jax.random.normal(jax.random.fold_in(key, 1), (3, 3, c, o)) * (2 / (9 * c)) ** 0.5
    reference = np.asarray(_direct(x, kernel))
    scale = np.abs(reference).max()
    calls, errors = {}, {}
    for name, (conv, args) in variants(x, kernel).items():
        step = jax.jit(jax.value_and_grad(
            lambda x, *a, conv=conv: jnp.sum(jax.nn.relu(conv(x, *a)) ** 2)))
        calls[name] = lambda step=step, args=args: step(x, *args)
        errors[name] = float(np.abs(np.asarray(conv(x, *args)) - reference).max() / scale)
    seconds = timed(calls, repeats)
    return {name: (seconds[name], errors[name]) for name in calls}


def shapes_of(args: argparse.Namespace) -> list[tuple[str, int, int, int, int]]:
    if args.shapes:
        out = []
        for spec in args.shapes.split(","):
            h, w, c, *o = (int(v) for v in spec.split("x"))
            out.append((spec, h, w, c, o[0] if o else c))
        return out
    h, w = args.size, max(1, round(args.size * args.aspect))
    return [(name, h // down, w // down, c, o) for name, down, c, o in VGG16_LAYERS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="the image's longest side")
    parser.add_argument("--aspect", type=float, default=0.75, help="short side / long side")
    parser.add_argument("--shapes", help="HxWxC[xO],... instead of VGG16's layers at --size")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    winograd._MATRICES[6] = cook_toom([0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)], 6)
    winograd.TILES = (*winograd.TILES, 6)
    print(f"one 3x3 convolution, forward and input gradient, median of {args.repeats} (ms); "
          f"relative error against direct; {jax.device_count()} {jax.default_backend()} device")
    key = jax.random.key(0)
    for name, h, w, c, o in shapes_of(args):
        results = measure(h, w, c, o, args.repeats, key)
        cells = "  ".join(f"{variant} {1000 * t:7.1f} ({err:.0e})"
                          for variant, (t, err) in results.items())
        print(f"{name:>12s} {h}x{w}x{c}->{o}: {cells}", flush=True)


if __name__ == "__main__":
    main()
