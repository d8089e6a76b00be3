"""Presets: what each sets, what the user keeps, and the fast preset's early stop."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import smooth_image

from jaxstyle import StyleOptions, stylize
from jaxstyle.checkpoint import (
    Checkpoint,
    CheckpointError,
    RunState,
    load_checkpoint,
    save_checkpoint,
)
from jaxstyle.option_fields import OptionsError
from jaxstyle.presets import PRESET_VALUES
from jaxstyle.stages import plan, total_iterations

LAYERS = dict(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))


def test_a_preset_fills_only_what_the_user_left_unset():
    assert StyleOptions().preset == "balanced"
    balanced = StyleOptions()
    assert filled(balanced) == PRESET_VALUES["balanced"]
    assert balanced.objective.weight_normalization == "relative"
    assert balanced.optimization.stop_change > 0
    plain = StyleOptions(preset="neural-style")
    assert plain.optimization.lbfgs_linesearch == "none"
    assert plain.optimization.stop_tolerance == 0.0
    fast = StyleOptions(preset="fast")
    assert filled(fast) == PRESET_VALUES["fast"]
    assert fast.optimization.lbfgs_linesearch == "zoom" and fast.optimization.stop_tolerance > 0
    mine = StyleOptions(preset="fast", lbfgs_linesearch="none")
    assert mine.optimization.lbfgs_linesearch == "none"
    assert mine.optimization.stop_tolerance == fast.optimization.stop_tolerance
    # Switching presets replaces what the old one filled in, not what was given.
    back = mine.replace(preset="neural-style")
    assert back.optimization.lbfgs_linesearch == "none" and back.optimization.stop_tolerance == 0.0
    assert fast.replace(preset="neural-style") == plain
    assert fast.replace(size=64).optimization.stop_tolerance == fast.optimization.stop_tolerance
    # What a preset filled in and was not changed stays the preset's through a replace.
    assert fast.replace(size=64).replace(preset="neural-style") == plain.replace(size=64)
    # Resolved options round-trip, through JSON too (reports and checkpoints store them).
    assert StyleOptions.from_dict(json.loads(json.dumps(fast.to_dict()))) == fast


def filled(options: StyleOptions) -> dict:
    """What `options` hold of what presets set, group by group, as `PRESET_VALUES` lists it."""
    return {group: {k: getattr(getattr(options, group), k) for k in values}
            for group, values in PRESET_VALUES[options.preset].items()}


def test_bad_preset_values_are_named():
    with pytest.raises(OptionsError, match="preset: expected one of"):
        StyleOptions(preset="fastest")
    with pytest.raises(OptionsError, match=r"stop_tolerance: must be in \[0, 1\]"):
        StyleOptions(stop_tolerance=-1.0)


def test_checkpoints_written_before_presets_are_refused(tmp_path, monkeypatch):
    # Such a checkpoint (never released) holds none of the options added since.
    new = ("preset", "stop_tolerance", "stop_change", "style_strength")
    old = {k: v for k, v in StyleOptions(preset="neural-style").to_dict().items()
           if k not in new}
    run = RunState(iteration=1, x=np.zeros((4, 4, 3), np.float32), state=[], history={})
    path = tmp_path / "old.ckpt"
    with monkeypatch.context() as m:
        m.setattr(StyleOptions, "to_dict", lambda self: old)
        save_checkpoint(path, Checkpoint(run, StyleOptions(), {}, str(tmp_path / "o.png")))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert str(refused.value) == (f"{path}: options: no 'preset' (written by another jaxstyle); "
                                  "finish the run with the version that wrote it")


def test_neural_style_preset_keeps_its_objective_and_weights():
    options = StyleOptions(preset="neural-style")
    config, weights = options.loss_config(model_range=255.0), options.loss_weights()
    assert (weights.content, weights.style, weights.tv) == (5.0, 100.0, np.float32(1e-3))
    assert config.weight_normalization == "neural-style"
    assert options.optimization.lbfgs_linesearch == "none"
    assert options.optimizer_config(255.0).first_step == 0.0
    # The strength multiplies the style weight in any preset.
    assert options.replace(style_strength=0.5).loss_weights().style == 50.0


def test_fast_stops_once_the_loss_stalls_and_never_climbs(tiny_weights):
    content, style = smooth_image(24, 32, 0), smooth_image(32, 32, 1)
    options = StyleOptions(preset="fast", size=32, iterations=300, style_weight=1e4,
                           progress_every=10, stop_tolerance=1e-3, **LAYERS)
    result = stylize(content, [style], tiny_weights, options)
    totals = result.history["total"]
    assert 10 < len(totals) < 300
    assert np.all(np.diff(totals) <= 0)
    assert result.losses["total"] == pytest.approx(totals[-1])


def test_fast_multi_scale_run_stopped_early_resumes_bit_for_bit(tiny_weights, tmp_path):
    options = StyleOptions(preset="fast", scales=(24, 40), scale_iterations=(200, 40),
                           progress_every=5, stop_tolerance=1e-3, style_weight=1e4, **LAYERS)
    content, style = smooth_image(30, 40, 0), smooth_image(32, 32, 1)
    states = []
    full = stylize(content, [style], tiny_weights, options,
                   callback=lambda p: states.append(p.run_state()))
    stages = plan(content.shape, options)
    assert len(full.history["total"]) < total_iterations(stages)  # the first scale stopped early
    # Interrupt in the first scale, with the stall window reaching back before the interrupt.
    first = [s for s in states if s.stage == 0 and s.iteration >= 15]
    path = save_checkpoint(tmp_path / "run.ckpt",
                           Checkpoint(first[-2], options, {}, "out.png"))
    resumed = stylize(content, [style], tiny_weights, options, resume=load_checkpoint(path).run)
    np.testing.assert_array_equal(full.image, resumed.image)
    assert full.history == resumed.history


def test_making_fast_options_does_not_start_jax_backends():
    # A multi-host batch builds its options before jax.distributed.initialize, which must come
    # before any backend starts: 'auto' is decided only when a run asks for its objective.
    code = ("from jax._src import xla_bridge\n"
            "from jaxstyle import StyleOptions\n"
            "options = StyleOptions(preset='fast')\n"
            "assert not xla_bridge.backends_are_initialized()\n"
            "import jax\n"
            "print(options.network_convolution(), jax.default_backend())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    convolution, backend = done.stdout.split()
    # 512 px in float32: Winograd's algorithm on a CPU, XLA's convolution on an accelerator.
    assert convolution == ("winograd" if backend == "cpu" else "direct"), done.stdout
