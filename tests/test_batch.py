"""Batches of content images: vmap of the single-image run, sharded over (simulated) devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY_LAYER_FLAGS, TINY_LAYERS, smooth_image, write_image
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import TINY_LAYERS, smooth_image
from jaxstyle import StyleOptions, load_weights, stylize
from jaxstyle.driver import stylize_batch
weights = load_weights(sys.argv[2], "torchvision")
contents = [smooth_image(24, 32, 0), smooth_image(24, 32, 3), smooth_image(24, 32, 5),
            smooth_image(32, 32, 4)]
styles = [smooth_image(32, 32, 1)]
report = {"devices": jax.device_count()}
for optimizer in ("lbfgs", "adam"):
    options = StyleOptions(size=32, iterations=5, progress_every=5, optimizer=optimizer,
                           **TINY_LAYERS)
    batch = stylize_batch(contents, styles, weights, options)
    rows = []
    for content, result in zip(contents, batch):
        alone = stylize(content, styles, weights, options)
        rows.append({"image": float(np.abs(result.image - alone.image).max()),
                     "loss": abs(result.losses["total"] - alone.losses["total"])
                     / alone.losses["total"], "shape": list(result.image.shape),
                     "devices": result.devices, "evaluations": [result.evaluations,
                                                                  alone.evaluations]})
    report[optimizer] = rows
print(json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.parametrize("devices", [4, 1])
def test_batch_equals_single_image_runs(devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "tests"),
                          str(ROOT / "tests" / "data" / "vgg19_tiny.pth")],
                         capture_output=True, text=True, env=env, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["devices"] == devices
    for optimizer in ("lbfgs", "adam"):
        rows = report[optimizer]
        assert [r["shape"] for r in rows] == [[24, 32, 3]] * 3 + [[32, 32, 3]]
        for row in rows:
            assert row["devices"] == devices
            assert row["image"] < 1e-4 and row["loss"] < 1e-4, row
            assert row["evaluations"][0] == row["evaluations"][1]


@pytest.fixture
def photos(tmp_path):
    """A folder of three content images and a style image beside it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"p{i}.png", smooth_image(30, 40, i))
    return folder, write_image(tmp_path / "style.jpg", smooth_image(32, 32, 9))


def test_batch_command_line(tmp_path, photos, tiny_weights_file, capsys):
    from jaxstyle.cli import main

    folder, style = photos
    out = tmp_path / "out" / "new"  # created
    code = main(["batch", str(folder), "-s", str(style), "-o", str(out), "--weights",
                 str(tiny_weights_file), "--size", "32", "--iterations", "3",
                 "--content-layers", "relu2_1", "--style-layers", "relu1_1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "3 images on 1 device\n" in err
    assert sorted(p.name for p in out.glob("*.png")) == ["p0.png", "p1.png", "p2.png"]
    code = main(["batch", str(folder), "-s", str(style), "-o", str(folder), "--weights",
                 str(tiny_weights_file)])
    assert code == 2 and "refusing to overwrite the input" in capsys.readouterr().err
    code = main(["batch", str(tmp_path / "nope"), "-s", str(style), "-o", str(out)])
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_refused_batches_name_the_clash_and_leave_no_folder(tmp_path, photos, tiny_weights_file,
                                                             capsys):
    from jaxstyle.cli import main

    folder, style = photos
    (folder / "p0.jpg").write_bytes((folder / "p1.png").read_bytes())  # p0.png's name again
    fresh = tmp_path / "fresh"
    code = main(["batch", str(folder), "-s", str(style), "-o", str(fresh), "--weights",
                 str(tiny_weights_file), "--format", ".png"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{folder / 'p0.jpg'} and {folder / 'p0.png'}" in err or (
        f"{folder / 'p0.png'} and {folder / 'p0.jpg'}" in err), err
    assert f"both would be written to {fresh / 'p0.png'}" in err  # not p0..png
    assert not fresh.exists()


@pytest.mark.slow
def test_memory_estimate_grows_with_size_and_refuses_what_cannot_fit(tiny_weights, tmp_path,
                                                                     tiny_weights_file, capsys):
    from jaxstyle import StyleOptions, stylize
    from jaxstyle.cli import main
    from jaxstyle.compiled import estimate_memory
    from jaxstyle.errors import OutOfMemoryError
    from jaxstyle.problem import prepare
    from jaxstyle.steps import Loss

    def estimate(size, history):
        options = StyleOptions(size=size, lbfgs_history=history, **TINY_LAYERS)
        problem = prepare(smooth_image(size, size, 0), [smooth_image(32, 32, 1)], tiny_weights,
                          options)
        return estimate_memory(Loss(problem.loss_fn, problem.loss_static,
                                    (tiny_weights.params, problem.targets)), problem.x0,
                               options.optimizer_config(tiny_weights.preprocessing.model_range()),
                               10)

    small, large, short = estimate(32, 100), estimate(64, 100), estimate(64, 5)
    image_bytes = 64 * 64 * 3 * 4
    assert large.state >= 2 * 100 * image_bytes > short.state  # the L-BFGS history dominates
    assert large.total > small.total and large.total > large.state + large.temporaries / 2

    # Room for the optimizer state but not for the run: the compiled estimate refuses it.
    assert small.total > small.state
    options = StyleOptions(size=32, iterations=2, **TINY_LAYERS,
                           memory_limit_gb=(small.state + small.total) / 2 / 2**30)
    # The library names the options to change as it knows them, the command line as flags.
    with pytest.raises(OutOfMemoryError, match=r"needs about .* MiB .* a shorter lbfgs_history"):
        stylize(smooth_image(32, 32, 0), [smooth_image(32, 32, 1)], tiny_weights, options)
    fits = stylize(smooth_image(32, 32, 0), [smooth_image(32, 32, 1)], tiny_weights,
                   options.replace(memory_limit_gb=small.total / 2**30 * 1.5))
    assert len(fits.history["total"]) == 2

    content = write_image(tmp_path / "c.png", smooth_image(32, 32, 0))
    style = write_image(tmp_path / "s.png", smooth_image(32, 32, 1))
    code = main(["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"),
                 "--weights", str(tiny_weights_file), "--size", "32", "--memory-limit-gb",
                 "0.0001", *TINY_LAYER_FLAGS])
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("jaxstyle: error:")]
    assert code == 2 and len(errors) == 1 and "MiB is available" in errors[0]
    assert errors[0].endswith(": use a smaller --size, --scales to finish large sizes with fewer "
                              "iterations, a shorter --lbfgs-history, or --optimizer adam (no "
                              "history)"), errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.slow
def test_two_processes_share_the_images(tmp_path, photos, tiny_weights_file):
    import socket

    folder, style = photos
    common = ["batch", str(folder), "-s", str(style), "--weights", str(tiny_weights_file),
              "--size", "32", "--iterations", "3", "-q", "--content-layers", "relu2_1",
              "--style-layers", "relu1_1"]
    alone = tmp_path / "alone"
    alone.mkdir()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), *common, "-o", str(alone)], check=True)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shared = tmp_path / "shared"
    shared.mkdir()
    env = dict(os.environ, JAXSTYLE_NO_COMPILATION_CACHE="1")
    workers = [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *common, "-o", str(shared),
                                 "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                 "--process-id", str(i)], stderr=subprocess.PIPE, text=True,
                                env=env) for i in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    # Each output with its record (what a rerun checks), and no lock left behind.
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        [f"p{i}.png" for i in range(3)] + [f".p{i}.png.jaxstyle.json" for i in range(3)])
    for name in ("p0.png", "p1.png", "p2.png"):
        a = np.asarray(Image.open(shared / name), np.int16)
        b = np.asarray(Image.open(alone / name), np.int16)
        assert np.abs(a - b).max() <= 1, name  # same computation, batched 2+1 instead of 3


@pytest.mark.slow
def test_a_batch_redraws_sliced_wasserstein_directions_as_single_runs_do(tiny_weights):
    from jaxstyle import StyleOptions, stylize
    from jaxstyle.driver import stylize_batch

    contents = [smooth_image(24, 32, i) for i in range(2)]
    styles = [smooth_image(30, 30, 5)]
    options = StyleOptions(size=32, iterations=6, progress_every=2, style_loss="sliced_wasserstein",
                           **TINY_LAYERS)
    for content, result in zip(contents, stylize_batch(contents, styles, tiny_weights, options)):
        alone = stylize(content, styles, tiny_weights, options)
        # Sorting is discontinuous: vmap's float-level differences reorder near-ties, so a few
        # pixels differ by up to 0.034 and the mean by 2e-4 (measured; with the first draw kept
        # throughout the batch they differed by 0.6).
        assert np.abs(result.image - alone.image).mean() < 1e-3
        np.testing.assert_allclose(result.image, alone.image, atol=0.1)
        np.testing.assert_allclose(result.losses["total"], alone.losses["total"], rtol=1e-3)


@pytest.fixture(scope="module")
def regions():
    """Two content images of one size, two styles, and a mask that splits the picture."""
    mask = np.zeros((24, 32), np.float32)
    mask[:, :16] = 1.0
    return ([smooth_image(24, 32, 0), smooth_image(24, 32, 3)],
            [smooth_image(32, 32, 1), smooth_image(30, 30, 7)], mask)


@pytest.mark.slow
def test_a_batch_with_masks_gives_each_image_its_own_run(tiny_weights, regions):
    from jaxstyle import StyleOptions, stylize
    from jaxstyle.driver import stylize_batch

    contents, styles, mask = regions
    contents = [*contents, smooth_image(24, 32, 5)]
    # Two scales, the second prepared and compiled in the background as for one image.
    options = StyleOptions(scales=(24, 32), scale_iterations=(2, 2), progress_every=2,
                           **TINY_LAYERS)
    # Per image, as `stylize` takes them: the first two share one batch (masks on both styles,
    # a content mask), the third has none and runs as a batch of its own.
    style_masks = [[mask, 1 - mask], [1 - mask, mask], None]
    content_masks = [mask, 1 - mask, None]
    init_images = [None, smooth_image(20, 30, 8), None]
    seen = []
    batch = stylize_batch(contents, styles, tiny_weights, options, style_masks=style_masks,
                          content_masks=content_masks, init_images=init_images,
                          callback=seen.append)
    assert sorted({np.shape(p.x)[0] for p in seen}) == [1, 2]
    for i, (content, result) in enumerate(zip(contents, batch)):
        alone = stylize(content, styles, tiny_weights, options, style_masks=style_masks[i],
                        content_mask=content_masks[i], init_image=init_images[i])
        # Measured: at most 6e-7 apart (vmap's reassociation); a dropped mask moves it ~0.1.
        np.testing.assert_allclose(result.image, alone.image, atol=1e-5)
        np.testing.assert_allclose(result.losses["total"], alone.losses["total"], rtol=1e-5)
        assert result.evaluations == alone.evaluations
        assert len(result.history["total"]) == len(alone.history["total"])


def test_a_batch_resumed_from_its_state_ends_where_it_would_have(tiny_weights, regions):
    from jaxstyle import StyleOptions
    from jaxstyle.driver import stylize_batch

    contents, styles, mask = regions
    options = StyleOptions(size=32, iterations=6, progress_every=2, stop_change=0.0,
                           **TINY_LAYERS)
    masks = {"style_masks": [[mask, 1 - mask], [1 - mask, mask]],
             "content_masks": [mask, 1 - mask]}
    saved = []

    def keep(p):
        if p.iteration == 2:
            saved.append(p.run_state())

    full = stylize_batch(contents, styles, tiny_weights, options, callback=keep, **masks)
    assert np.shape(saved[0].x)[0] == np.shape(saved[0].canvas)[0] == 2
    after = []
    resumed = stylize_batch(contents, styles, tiny_weights, options, resume=saved[0],
                            callback=lambda p: after.append(p.iteration), **masks)
    assert after[0] == 4  # from where the state was saved
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.history == b.history


def test_a_batch_refuses_by_name_what_does_not_fit(tiny_weights, regions):
    from jaxstyle import StyleOptions
    from jaxstyle.driver import stylize_batch
    from jaxstyle.errors import JaxstyleError
    from jaxstyle.run_state import RunState

    contents, styles, mask = regions
    options = StyleOptions(size=32, iterations=1, **TINY_LAYERS)

    def refused(match, contents=contents, **arguments):
        with pytest.raises(JaxstyleError, match=match):
            stylize_batch(contents, styles, tiny_weights, options, **arguments)

    refused("^contents: no content images$", contents=[])
    for name in ("init_images", "style_masks", "content_masks", "previous"):
        refused(f"^{name}: 1 given for 2 content images$", **{name: [None]})
    refused(r"^contents\[1\]: style_masks: 1 mask for 2 style images$",
            style_masks=[None, [mask]])
    refused(r"^contents\[0\]: content mask covers nothing", content_masks=[mask * 0, None])
    refused(r"^init_images\[1\]: expected an image", init_images=[None, mask])
    # A batch's state continues that batch only: images that run as two batches, or a state
    # of another number of images.
    state = RunState(0, np.zeros((1, 24, 32, 3), np.float32), [], {},
                     canvas=np.zeros((1, 24, 32, 3), np.float32))
    refused("^resume: these images run as 2 batches", resume=state,
            style_masks=[[mask, mask], None])
    refused(r"^resume: the saved canvas has shape \(1, 24, 32, 3\); this run lays out 2 images "
            "of 32x24$", resume=state)


def test_a_diverging_batch_says_so_and_keeps_its_last_good_state(tiny_weights, regions,
                                                                  monkeypatch):
    import jax.numpy as jnp

    import jaxstyle.losses as losses
    from jaxstyle import StyleOptions
    from jaxstyle.driver import stylize_batch
    from jaxstyle.errors import RunDivergedError
    from jaxstyle.optimize import Progress

    real = losses.objective

    def content_nan(image, params, targets, config):  # finite at the start (the content)
        total, parts = real(image, params, targets, config)
        return jnp.where(parts["content"] > 0, jnp.nan, total), parts

    monkeypatch.setattr(losses, "objective", content_nan)
    contents, styles, _ = regions
    options = StyleOptions(size=32, iterations=4, init="content", optimizer="adam", **TINY_LAYERS)
    with pytest.raises(RunDivergedError, match=r"^batch of 2 images at 32x24: the loss became "
                                               r"NaN or infinite at iteration 1") as caught:
        stylize_batch(contents, styles, tiny_weights, options)
    # One meaning per field: the stage's own progress, and the whole run's with its picture.
    assert isinstance(caught.value.last_good, Progress)
    assert caught.value.run.iteration == 0 and caught.value.run.image().shape == (2, 24, 32, 3)
    np.testing.assert_allclose(caught.value.run.image()[1], contents[1], atol=1e-5)


@pytest.mark.parametrize("extra", [{}, {"original_colors": "luminance"},
                                   {"parametrization": "pyramid"}])
def test_the_uncompiled_memory_check_refuses_at_the_optimizer_states_size(tiny_weights, extra):
    """Without compiling (multi-scale runs, batches), `check_plan_memory` takes the optimizer
    state's size from the variable's shape alone, tracing neither the network nor the targets:
    it lets a run through with a kilobyte more than the real state's size and refuses it with a
    kilobyte less."""
    from jaxstyle import StyleOptions
    from jaxstyle.checks import check_inputs
    from jaxstyle.compiled import state_like
    from jaxstyle.errors import OutOfMemoryError
    from jaxstyle.plan_memory import check_plan_memory
    from jaxstyle.problem import prepare
    from jaxstyle.steps import Loss

    options = StyleOptions(size=32, **TINY_LAYERS, **extra)
    content, style = smooth_image(32, 48, 0), smooth_image(32, 32, 1)
    problem = prepare(content, [style], tiny_weights, options)
    config = options.optimizer_config(tiny_weights.preprocessing.model_range(),
                                      problem.pixel_units)
    state = state_like(Loss(problem.loss_fn, problem.loss_static,
                            (tiny_weights.params, problem.targets)), problem.x0, config,
                       options.performance.progress_every)
    real = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(state))
    stages = check_inputs(content.shape, [style.shape], options)

    def check(limit: int) -> None:
        check_plan_memory(stages, content.shape, [style.shape], tiny_weights,
                          options.replace(memory_limit_gb=limit / 2**30), compile=False)

    check(real + 1024)
    with pytest.raises(OutOfMemoryError, match="optimizer state"):
        check(real - 1024)
