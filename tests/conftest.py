"""Shared fixtures: tiny-width VGG19 and VGG16 written by real torch, their reference activations,
images."""

import os
from pathlib import Path

import numpy as np
import pytest

from jaxstyle.weights import load_weights

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One test process per core (README command 2): on a GPU, each would otherwise take 75% of
    # its memory at the first array.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

DATA = Path(__file__).parent / "data"
SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"


def pytest_configure(config):
    """Turns on jaxstyle's persistent compilation cache for the whole test process, where every
    ``jaxstyle`` command keeps it (`default_cache_dir`), from the first test: before, the first
    test to run the command line in process turned it on, so the tests before it (and any run of
    a selection without such a test) compiled everything at every run."""
    from jaxstyle.compilation_cache import enable_compilation_cache

    enable_compilation_cache()


@pytest.fixture(autouse=True)
def _keep_the_compilation_cache_folder():
    """Puts JAX's compilation cache folder back after a test that moved it: every command turns
    the cache on in the folder $XDG_CACHE_HOME names, which test_cli's `jaxstyle info` test
    points into its tmp_path. JAX's cache key holds the folder, so left moved, every later
    compilation in the test process missed the cache (the modules after test_cli's in its
    pytest-xdist worker took three to four times their CPU time)."""
    import jax

    folder = jax.config.jax_compilation_cache_dir
    yield
    if jax.config.jax_compilation_cache_dir != folder:
        jax.config.update("jax_compilation_cache_dir", folder)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    """Drops JAX's compiled executables after each test module.

    Each XLA:CPU executable holds about six memory mappings; the whole suite in one process
    compiles over ten thousand executables, and past the kernel's vm.max_map_count (65530) the
    next compilation aborts the process (CI died so, twice, in a test near the end).
    """
    yield
    import gc

    import jax

    from jaxstyle.compiled import COMPILED

    COMPILED.clear()
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def tiny_weights():
    """vgg19_tiny.pth (widths 8, 16, 32, 64, 64) through the project's own loader."""
    return load_weights(DATA / "vgg19_tiny.pth", preprocessing="torchvision")


@pytest.fixture(scope="session")
def reference():
    return dict(np.load(DATA / "vgg19_tiny_reference.npz"))


@pytest.fixture(scope="session")
def tiny16_weights():
    """vgg16_tiny.pth (VGG16, widths 8, 16, 32, 64, 64; tests/data/make_vgg16_fixtures.py)."""
    return load_weights(DATA / "vgg16_tiny.pth", preprocessing="torchvision")


@pytest.fixture(scope="session")
def reference16():
    return dict(np.load(DATA / "vgg16_tiny_reference.npz"))


@pytest.fixture(scope="session")
def tiny_weights_file(tmp_path_factory, tiny_weights):
    """The tiny weights converted to jaxstyle's format, for --weights on the command line."""
    from jaxstyle.weights import save_converted

    return save_converted(tiny_weights, tmp_path_factory.mktemp("w") / "tiny.msgpack")


TINY_LAYERS = dict(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))
"""StyleOptions keywords for one content and two style layers: the shallow end of the network,
where the tiny-width fixtures compile and run quickly."""
TINY_LAYER_FLAGS = ["--content-layers", ",".join(TINY_LAYERS["content_layers"]),
                    "--style-layers", ",".join(TINY_LAYERS["style_layers"])]
"""`TINY_LAYERS` as command-line flags."""


def write_image(path: Path, image: np.ndarray) -> Path:
    """Writes float [H, W, 3] or [H, W] in [0, 1] with Pillow (not jaxstyle's save_image, so that
    inputs do not depend on the code under test) in the format `path`'s suffix names; returns
    `path`."""
    from PIL import Image

    Image.fromarray((np.asarray(image) * 255).astype(np.uint8)).save(path)
    return path


def interrupted_and_resumed_equals_uninterrupted(command, tmp_path: Path, monkeypatch,
                                                at: int) -> None:
    """Runs ``jaxstyle`` with ``command(out)`` to reference.png, then to out.png stopped as
    Ctrl-C would stop it once iteration `at` is shown, and asserts that the stop wrote no
    output and that ``jaxstyle resume`` of its checkpoint ends on reference.png bit for bit."""
    import signal

    from PIL import Image

    from jaxstyle.cli import main
    from jaxstyle.terminal import ProgressDisplay

    assert main(command("reference.png")) == 0
    show = ProgressDisplay.show

    def interrupt(self, progress, **kwargs):
        show(self, progress, **kwargs)
        if progress.iteration == at:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(ProgressDisplay, "show", interrupt)
    assert main(command("out.png")) == 128 + signal.SIGINT
    monkeypatch.setattr(ProgressDisplay, "show", show)
    assert not (tmp_path / "out.png").exists()
    assert main(["resume", str(tmp_path / "out.png.ckpt"), "-q"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")),
                                  np.asarray(Image.open(tmp_path / "reference.png")))


def he_params(widths, depths, seed: int = 0) -> dict:
    """`jaxstyle.init_params`' layout (traced by jax.eval_shape, not compiled) filled by NumPy:
    He-scaled kernels, zero biases. init_params compiles a forward pass of the whole network to
    initialise it (about 5 s at test_winograd's widths up to 256, 2 cores, lightly loaded)."""
    import jax
    import jax.numpy as jnp

    from jaxstyle.vgg import init_params

    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda key: init_params(key, widths, depths), jax.random.key(seed))
    return {name: {"kernel": jnp.asarray(rng.normal(size=layer["kernel"].shape) * np.sqrt(
                       2 / np.prod(layer["kernel"].shape[:3])), jnp.float32),
                   "bias": jnp.zeros(layer["bias"].shape, jnp.float32)}
            for name, layer in shapes.items()}


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic float32 [h, w, 3] test image in [0, 1] with some structure."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    phases = rng.uniform(0, 6, 3)
    img = np.stack([0.5 + 0.4 * np.sin(6 * x + 4 * y + p) for p in phases], -1)
    return np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)


@pytest.fixture
def shared_image():
    def get(name: str) -> Path:
        path = SHARED_IMAGES / name
        if not path.is_file():
            pytest.skip(f"{path} not available (../shared/images is absent)")
        return path

    return get


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 2, 3, 1))


@pytest.fixture(scope="session")
def real_vgg16():
    """The real VGG16 as `jaxstyle weights download vgg16-keras` leaves it; the test is skipped
    without it, or fails under JAXSTYLE_REQUIRE_REAL_WEIGHTS=1 (as `.ci/run` sets)."""
    from jaxstyle.download import existing_download
    from jaxstyle.sources import cache_weights_dir, repo_weights_dir

    for folder in (repo_weights_dir(), cache_weights_dir()):
        path = folder and existing_download("vgg16-keras", folder)
        if path:
            return load_weights(path)
    message = "the real VGG16 is absent: run 'jaxstyle weights download vgg16-keras'"
    if os.environ.get("JAXSTYLE_REQUIRE_REAL_WEIGHTS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def loss_config(preset: str = "neural-style", **changes):
    """StyleOptions' loss configuration for `preset` (where the defaults live) with
    `changes`."""
    from jaxstyle import StyleOptions

    return StyleOptions(preset=preset).loss_config().replace(**changes)


def loss_weights(config, preset: str = "neural-style", **changes):
    """StyleOptions' loss weights for `preset` with `changes` (`LossWeights.create`'s arguments:
    ``style_weight`` is the product with the style strength), for `config`'s style layers."""
    from jaxstyle import LossWeights, StyleOptions

    weights = StyleOptions(preset=preset).loss_weights()
    values = {"content_weight": float(weights.content), "style_weight": float(weights.style),
              "tv_weight": float(weights.tv), "temporal_weight": float(weights.temporal)}
    return LossWeights.create(config, **{**values, **changes})


def optimizer_config(**changes):
    """StyleOptions' optimizer configuration (in pixel units) with `changes`."""
    import dataclasses

    from jaxstyle import StyleOptions

    return dataclasses.replace(StyleOptions(preset="neural-style").optimizer_config(1.0), **changes)
