"""A run as a plan: stages, and every control combined with every other, resumed bit for bit."""

import os
import signal

import numpy as np
import pytest
from conftest import TINY_LAYER_FLAGS, TINY_LAYERS, smooth_image, write_image
from PIL import Image

from jaxstyle import StyleOptions, stylize
from jaxstyle.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from jaxstyle.driver import stylize_batch
from jaxstyle.resampling import bucket_step, fit_bucket, fit_longest_side, resize
from jaxstyle.stages import coarse_to_fine, continued, plan, scale_sizes, total_iterations


def test_plan_walks_scales_then_tiles_with_running_offsets():
    options = StyleOptions(scales=(40, 80), scale_iterations=(3, 5), tile_size=48, tile_overlap=8)
    stages = plan((60, 80, 3), options)
    assert [(s.scale, s.tile, s.tiles) for s in stages] == [(0, 0, 1)] + [(1, t, 4)
                                                                         for t in range(4)]
    # The coarse scale's 30x40 is rounded to its shape bucket (a multiple of 8 px at 40 px).
    assert stages[0].size == (32, 40) and stages[0].window == (0, 0, 32, 40)
    assert [s.coarse for s in stages] == [True] + [False] * 4
    assert [s.window for s in stages[1:]] == [(0, 0, 48, 48), (0, 32, 48, 48), (12, 0, 48, 48),
                                              (12, 32, 48, 48)]
    assert [s.offset for s in stages] == [0, 3, 8, 13, 18] and total_iterations(stages) == 23
    assert len(plan((60, 80, 3), StyleOptions(size=64))) == 1


def test_coarse_scales_of_nearby_shapes_share_a_bucket_and_the_output_keeps_its_shape():
    options = StyleOptions(size=512)
    shapes = {}
    for content in [(2000, 3000, 3), (1990, 3000, 3), (683, 1024, 3), (2100, 3000, 3)]:
        stages = plan(content, options)
        shapes[content] = [s.size for s in stages]
        assert stages[-1].size == fit_longest_side(content, 512) and not stages[-1].coarse
        assert all(s.coarse for s in stages[:-1])
    # 3:2 photos cropped a few pixels differently: one shape per coarse scale, 8 and 16 px steps.
    assert {tuple(v[:-1]) for v in shapes.values()} == {((88, 128), (176, 256))}
    assert {v[-1] for v in shapes.values()} == {(341, 512), (340, 512), (342, 512), (358, 512)}
    # Portrait, square and explicit scales: only the longer side is fixed, the last scale exact.
    assert [s.size for s in plan((3000, 2000, 3), options)] == [(128, 88), (256, 176), (512, 341)]
    assert [s.size for s in plan((500, 500, 3), options)] == [(128, 128), (256, 256), (512, 512)]
    assert [s.size for s in plan((100, 210, 3), StyleOptions(scales=(50, 105)))] == [
        (24, 50), (50, 105)]
    assert fit_bucket((1000, 1001, 3), 100) == (100, 100)
    assert [bucket_step(n) for n in (32, 128, 256, 384, 512, 1024)] == [8, 8, 16, 24, 32, 64]


def test_the_default_schedule_doubles_from_the_coarsest_scale_to_the_size():
    assert [coarse_to_fine((h, w), 128) for h, w in [(170, 256), (288, 384), (384, 512),
                                                     (768, 1024), (150, 200), (48, 64)]] == [
        (128, 256), (192, 384), (128, 256, 512), (128, 256, 512, 1024), (100, 200), (64,)]
    # A thin picture keeps coarser scales only while their shorter side is 32 px or more.
    assert coarse_to_fine((80, 1024), 128) == (512, 1024)
    assert coarse_to_fine((384, 512), 0) == (512,)
    balanced = StyleOptions(size=512)
    assert scale_sizes((300, 400, 3), balanced) == [(128, 200), (256, 100), (512, 50)]
    assert scale_sizes((300, 400, 3), balanced.replace(iterations=80)) == [
        (128, 80), (256, 80), (512, 50)]
    assert scale_sizes((300, 400, 3), balanced.replace(scale_iterations=(7,))) == [
        (128, 7), (256, 7), (512, 7)]
    assert scale_sizes((300, 400, 3), balanced.replace(scales=(100, 300))) == [
        (100, 1000), (300, 1000)]
    for preset in ("neural-style", "fast"):
        assert scale_sizes((300, 400, 3), StyleOptions(size=512, preset=preset)) == [(512, 1000)]


def test_a_continued_schedule_keeps_every_earlier_stage_in_place():
    options = StyleOptions(size=512)
    stages = plan((300, 400, 3), options)
    middle = stages[1]
    more = continued(options, (300, 400, 3), 1, middle.offset + 30, 25)
    assert more.plan.scales == (128, 256, 512) and more.plan.scale_iterations == (200, 55, 50)
    assert [s.offset for s in plan((300, 400, 3), more)][:2] == [s.offset for s in stages][:2]
    single = StyleOptions(size=512, preset="fast")
    assert continued(single, (300, 400, 3), 0, 120, 30).optimization.iterations == 150


def _masks():
    left = np.zeros((16, 16), np.float32)
    left[:, :8] = 1.0
    return [left, 1.0 - left]


COMBINATIONS = {
    # name: (options, extra stylize arguments, number of styles)
    "tiles+masks": (dict(size=80, tile_size=48, tile_overlap=8), "masks", 2),
    "tiles+luminance": (dict(size=80, tile_size=48, tile_overlap=8, original_colors="luminance"),
                        None, 1),
    "tiles+colour matching": (dict(size=80, tile_size=48, tile_overlap=8, match_style_colors=True),
                              None, 1),
    "tiles+swap+noise": (dict(size=80, tile_size=48, tile_overlap=8, original_colors="swap",
                              init="noise"), None, 1),
    "scales+masks": (dict(scales=(40, 80), scale_iterations=(4, 4)), "masks", 2),
    "scales+tiles": (dict(scales=(40, 80), scale_iterations=(4, 2), tile_size=48, tile_overlap=8),
                     None, 1),
    # The default's schedule: 64, 128 and 256 px, at most 4, 4 and 2 iterations.
    "coarse to fine": (dict(size=256, coarsest=64, finest_iterations=2), None, 1),
}


QUICK_COMBINATIONS = {"coarse to fine"}
"""The quick suite's combination (the default's schedule); CI's slow run takes all of them (each
compiles its own programs, 5-20 s of CPU). Scales with tiles resume bit for bit in the quick
suite through the command line
(`test_interrupted_multi_scale_tiled_cli_run_resumes_to_the_same_image`)."""


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=() if name in QUICK_COMBINATIONS else pytest.mark.slow)
    for name in COMBINATIONS])
def test_combination_runs_and_resumes_bit_for_bit(name, tiny_weights, tmp_path):
    fields, extra, n_styles = COMBINATIONS[name]
    options = StyleOptions(iterations=4, progress_every=2, style_weight=1e4, **TINY_LAYERS,
                           **fields)
    content = smooth_image(60, 80, 0)
    styles = [smooth_image(40, 40, 1 + i) for i in range(n_styles)]
    kwargs = {"style_masks": _masks()} if extra == "masks" else {}
    states = []
    full = stylize(content, styles, tiny_weights, options, **kwargs,
                   callback=lambda p: states.append(p.run_state()))
    stages = plan(content.shape, options)
    assert len(full.history["total"]) == total_iterations(stages)
    photo = np.asarray(resize(content, *full.image.shape[:2]))
    assert np.abs(full.image - photo).mean() > 1e-3  # every stage did something
    # Stop in the middle of a later stage: its canvas already holds earlier stages' work.
    middle = [s for s in states if s.stage > 0 and s.iteration > stages[s.stage].offset]
    stopped = middle[len(middle) // 2] if middle else states[len(states) // 2]
    path = save_checkpoint(tmp_path / "run.ckpt", Checkpoint(stopped, options, {}, "out.png"))
    saved = load_checkpoint(path).run
    assert saved.stage == stopped.stage and saved.iteration == stopped.iteration
    resumed = stylize(content, styles, tiny_weights, options, **kwargs, resume=saved)
    np.testing.assert_array_equal(full.image, resumed.image)
    assert full.history == resumed.history


@pytest.mark.slow
def test_multi_scale_tiled_batch_equals_single_runs(tiny_weights):
    # neural-style's default weights: with style_weight 1e4 unit L-BFGS steps amplify vmap's
    # float-level differences to 0.08 within 4 iterations at 40 px (measured), plans or not.
    options = StyleOptions(scales=(40, 80), scale_iterations=(4, 2), tile_size=48, tile_overlap=8,
                           progress_every=2, **TINY_LAYERS)
    contents = [smooth_image(60, 80, i) for i in range(2)] + [smooth_image(40, 40, 2)]
    styles = [smooth_image(40, 40, 5)]
    seen = []
    batch = stylize_batch(contents, styles, tiny_weights, options, callback=seen.append)
    assert {p.stage.size for p in seen} == {(32, 40), (60, 80), (40, 40), (80, 80)}
    for content, result in zip(contents, batch):
        alone = stylize(content, styles, tiny_weights, options)
        assert result.image.shape == alone.image.shape
        np.testing.assert_allclose(result.image, alone.image, atol=1e-4)
        assert len(result.history["total"]) == len(alone.history["total"])


def test_interrupted_multi_scale_tiled_cli_run_resumes_to_the_same_image(
        tmp_path, tiny_weights_file, monkeypatch, capsys):
    from jaxstyle import stylize_command
    from jaxstyle.cli import main

    content = write_image(tmp_path / "c.png", smooth_image(60, 80, 0))
    style = write_image(tmp_path / "s.png", smooth_image(40, 40, 1))
    args = [str(content), str(style), "--weights", str(tiny_weights_file), "--scales", "40,80",
            "--scale-iterations", "4,4", "--tile-size", "48", "--tile-overlap", "8",
            "--progress-every", "2", "--checkpoint-every", "2", *TINY_LAYER_FLAGS, "-q"]
    assert main(["stylize", *args, "-o", str(tmp_path / "reference.png")]) == 0

    due = stylize_command.Checkpointing.due

    def stop_at_iteration_10(policy, iteration):  # in the second scale's first tiles
        if iteration == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return due(policy, iteration)

    monkeypatch.setattr(stylize_command.Checkpointing, "due", stop_at_iteration_10)
    out = tmp_path / "out.png"
    assert main(["stylize", *args, "-o", str(out)]) == 128 + signal.SIGINT
    checkpoint = tmp_path / "out.png.ckpt"
    assert load_checkpoint(checkpoint).run.stage >= 1 and (tmp_path / "out.partial.png").exists()
    monkeypatch.setattr(stylize_command.Checkpointing, "due", due)
    assert main(["resume", str(checkpoint), "-q"]) == 0, capsys.readouterr().err
    assert not checkpoint.exists() and not (tmp_path / "out.partial.png").exists()
    np.testing.assert_array_equal(np.asarray(Image.open(out)),
                                  np.asarray(Image.open(tmp_path / "reference.png")))


@pytest.mark.slow  # about a minute; the schedule's stages are quick in "coarse to fine" above
def test_the_default_at_512_px_ends_within_the_bounds_at_a_tiny_width(tiny_weights):
    """The schedule as it is at 512 px (128, 256, 512) on the tiny-width VGG19 ends with the
    subject kept and the style taken on: the default's calibrated bounds."""
    from jaxstyle.quality import measure

    content, style = smooth_image(300, 400, 0), smooth_image(200, 200, 7)
    options = StyleOptions(size=512)
    result = stylize(content, [style], tiny_weights, options)
    assert [max(size) for size, _, _ in result.scales] == [128, 256, 512]
    assert all(n <= cap for (_, n, _), (_, cap) in zip(result.scales,
                                                        scale_sizes(content.shape, options)))
    quality = measure(tiny_weights, result.image, content, [style], options)
    assert quality.content_distance <= 0.8 and quality.style_gram_ratio <= 0.25, quality


def test_later_scales_are_prepared_in_the_background_without_changing_the_result(
        tiny_weights, monkeypatch):
    from jaxstyle import ahead as background
    from jaxstyle import driver
    from jaxstyle.compiled import COMPILED

    content, style = smooth_image(48, 64, seed=1), smooth_image(40, 40, seed=2)
    options = StyleOptions(scales=(32, 64), scale_iterations=(3, 2), seed=3, **TINY_LAYERS)
    COMPILED.clear()
    ahead = stylize(content, [style], tiny_weights, options)
    # The 64 px scale's init and chunk were compiled by another thread than the run's.
    compiled_by = {thread for _, _, thread in COMPILED.log}
    assert len(compiled_by) == 2
    def never(stages):
        return False

    monkeypatch.setattr(driver, "prepares_ahead", never)
    monkeypatch.setattr(background, "prepares_ahead", never)
    COMPILED.clear()
    inline = stylize(content, [style], tiny_weights, options)
    assert len({thread for _, _, thread in COMPILED.log}) == 1
    np.testing.assert_array_equal(ahead.image, inline.image)
    assert ahead.history == inline.history


def test_progress_counts_work_in_pixel_iterations_across_scales():
    from jaxstyle.driver import StylizeProgress
    from jaxstyle.studio.jobs import Snapshot, after_chunk

    stages = plan((100, 200, 3), StyleOptions(scales=(100, 200), scale_iterations=(20, 10)))
    coarse, fine = stages
    assert coarse.size == (48, 100)  # 50x100 in its shape bucket

    def progress(stage, iteration):
        return StylizeProgress(iteration, 30, stage, 1.0, {}, 0, 0.0, None, None, {}, None,
                               lambda: None, stages)

    assert progress(coarse, 10).work() == (10 * 4800, 20 * 4800 + 10 * 20000)
    assert progress(fine, 25).work() == (20 * 4800 + 5 * 20000, 20 * 4800 + 10 * 20000)
    # The studio's time left: a pace taken at the coarse scale prices each later iteration at
    # its 20000 / 4800 times the pixels.
    before = Snapshot(1, "run", "running", iteration=10, frame=1, chunk_at=1.0,
                      work_done=10 * 4800)
    now = after_chunk(before, progress(coarse, 20), elapsed=2.0, frame=2, stopping=False)
    assert now["per_iteration"] == 0.1
    assert now["eta"] == pytest.approx(0.1 * 10 * 20000 / 4800)


EXIT_WHILE_PREPARING = """
import sys, time
import jax, jax.numpy as jnp
from jaxstyle.ahead import Ahead

def job():  # XLA at work in the background thread for a few seconds
    step = jax.jit(lambda x: jnp.tanh(x @ x) * 0.5)
    x = jnp.ones((384, 384))
    end = time.monotonic() + 3
    while time.monotonic() < end:
        x = step(x).block_until_ready()
    return x

Ahead([((1, 1), job)]).start()
time.sleep(0.5)
sys.exit(130)
"""


def test_a_process_that_exits_while_a_later_scale_is_prepared_keeps_its_exit_code(tmp_path):
    """An interrupted run exits 130 after its checkpoint; with a later scale still being
    prepared in the background, the process aborted instead (exit 134, "FATAL: exception not
    rethrown"): the daemon thread was torn down inside XLA."""
    import subprocess
    import sys

    script = tmp_path / "exit.py"
    script.write_text(EXIT_WHILE_PREPARING)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, JAXSTYLE_NO_COMPILATION_CACHE="1"))
    assert done.returncode == 130, done.stderr[-500:]
    assert "FATAL" not in done.stderr
