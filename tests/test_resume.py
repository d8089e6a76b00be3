"""Checkpoints, resume, signals and divergence (issue: long runs that survive interruption)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LAYERS, smooth_image, write_image
from PIL import Image

from jaxstyle import StyleOptions, load_image, load_weights, stylize
from jaxstyle.checkpoint import CheckpointError, load_checkpoint
from jaxstyle.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_resumed_run_equals_uninterrupted_in_process(tiny_weights, optimizer):
    content, style = smooth_image(24, 32, 0), smooth_image(30, 30, 1)
    options = StyleOptions(size=32, iterations=12, progress_every=4, optimizer=optimizer,
                           **TINY_LAYERS)
    full = stylize(content, [style], tiny_weights, options)
    saved = []
    stylize(content, [style], tiny_weights, options.replace(iterations=8),
            callback=lambda p: saved.append(p.run_state()) if p.iteration == 4 else None)
    resumed = stylize(content, [style], tiny_weights, options, resume=saved[0])
    np.testing.assert_array_equal(full.image, resumed.image)
    assert full.history == resumed.history and full.evaluations == resumed.evaluations


@pytest.fixture
def run_files(tmp_path, tiny_weights_file):
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    write_image(content, smooth_image(40, 48, 0))
    write_image(style, smooth_image(40, 40, 1))
    return content, style, tiny_weights_file


def _cli(*argv):
    return [sys.executable, str(ROOT / "cli.py"), *map(str, argv)]


def _args(content, style, weights, out, optimizer, iterations):
    return ["stylize", content, style, "-o", out, "--weights", weights, "--size", 48,
            "--iterations", iterations, "--progress-every", 25, "--checkpoint-every", 25,
            "--optimizer", optimizer, "--preset", "neural-style", "-q"]


def _wait_for(path: Path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, sig", [("lbfgs", signal.SIGINT), ("adam", signal.SIGTERM)])
def test_signal_checkpoint_and_resume_match_uninterrupted_run(tmp_path, run_files, optimizer, sig):
    content, style, weights = run_files
    iterations = 500
    reference = tmp_path / "reference.png"
    subprocess.run(_cli(*_args(content, style, weights, reference, optimizer, iterations)),
                   check=True)

    out = tmp_path / "out.png"
    child = subprocess.Popen(_cli(*_args(content, style, weights, out, optimizer, iterations)),
                             stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "out.png.ckpt"
    _wait_for(checkpoint, child)
    child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + sig, err
    assert "interrupted by" in err and "jaxstyle resume" in err
    assert not out.exists() and (tmp_path / "out.partial.png").is_file()
    stopped_at = load_checkpoint(checkpoint).run.iteration
    assert 0 < stopped_at < iterations

    resumed = subprocess.run(_cli("resume", checkpoint, "-q", "--report", tmp_path / "r.json"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not checkpoint.exists() and not (tmp_path / "out.partial.png").exists()
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(reference)))


def _interrupt_long_run(tmp_path, run_files, *signals):
    """Starts an endless run, waits for its first checkpoint, sends `signals`; returns the
    child's exit code and the checkpoint's path."""
    content, style, weights = run_files
    out = tmp_path / "out.png"
    child = subprocess.Popen(_cli(*_args(content, style, weights, out, "lbfgs", 100000)),
                             stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "out.png.ckpt"
    _wait_for(checkpoint, child)
    for sig in signals:
        child.send_signal(sig)
    return child.wait(timeout=60), checkpoint


def test_first_signal_is_heard_at_once_and_a_second_ends_the_process(tmp_path, run_files):
    # One chunk of 100000 iterations: the first Ctrl-C alone would end the run only after it.
    content, style, weights = run_files
    argv = _args(content, style, weights, tmp_path / "out.png", "lbfgs", 100000)
    argv = [a for a in argv if a != "-q"] + ["--progress-every", 100000, "--checkpoint-every", 0]
    child = subprocess.Popen(_cli(*argv), stderr=subprocess.PIPE, text=True, bufsize=1)
    for line in child.stderr:  # the run has loaded everything once it names its network
        if "weights:" in line:
            break
    time.sleep(3)  # compiling, then inside the long chunk
    assert child.poll() is None
    child.send_signal(signal.SIGINT)
    heard = time.monotonic()
    for line in child.stderr:  # the handler speaks while the chunk is still running
        if "stopping after the current chunk" in line:
            break
    assert time.monotonic() - heard < 10
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=10) == -signal.SIGINT  # killed by the signal: the chunk never ended
    left = sorted(p.name for p in tmp_path.iterdir())
    # Nothing half-written; the lock file stays (the system released its lock with the process).
    assert left == [".out.png.lock", "content.png", "style.png"]


def test_resume_refuses_changed_inputs_and_options(tmp_path, run_files, capsys):
    content, style, weights = run_files
    out = tmp_path / "out.png"
    code, checkpoint = _interrupt_long_run(tmp_path, run_files, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    before = checkpoint.read_bytes()

    base = [str(a) for a in _args(content, style, weights, out, "lbfgs", 100000)]
    assert main(base + ["--style-weight", "50", "--resume", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "option style_weight: checkpoint has 100.0, now 50.0" in err

    write_image(style, smooth_image(40, 40, 7))
    assert main(["resume", str(checkpoint), "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "style image 1" in err and "has changed" in err
    assert checkpoint.read_bytes() == before and not out.exists()


def test_corrupt_truncated_and_foreign_checkpoints(tmp_path, capsys):
    for name, data, message in [
        ("cut.ckpt", None, "corrupt or truncated"),
        ("text.ckpt", b"hello", "corrupt or truncated"),
    ]:
        path = tmp_path / name
        if data is None:
            from flax import serialization

            data = serialization.msgpack_serialize({"format": "jaxstyle-checkpoint",
                                                    "version": 1, "x": np.zeros(100)})[:30]
        path.write_bytes(data)
        assert main(["resume", str(path)]) == 2
        assert message in capsys.readouterr().err
    from flax import serialization

    # 1 and 2 (never released): no checksum, no L-BFGS direction; 3: the options not in groups;
    # 4: coarse scales in the output's exact aspect ratio, not in shape buckets.
    for version in (1, 2, 3, 4, 9):
        path = tmp_path / f"v{version}.ckpt"
        path.write_bytes(serialization.msgpack_serialize(
            {"format": "jaxstyle-checkpoint", "version": version, "iteration": 3}))
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(path)
        assert str(refused.value) == (f"{path}: checkpoint format version {version} is not this "
                                      "jaxstyle's (5); finish the run with the version that "
                                      "wrote it")
    assert main(["resume", str(tmp_path / "v2.ckpt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "format version 2" in err
    assert main(["resume", str(tmp_path / "missing.ckpt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_nan_keeps_last_good_image_and_checkpoint(tmp_path, run_files, monkeypatch, capsys):
    import jaxstyle.losses as losses

    content, style, weights = run_files
    out = tmp_path / "out.png"
    base = ["stylize", content, style, "-o", out, "--weights", weights, "--size", 48,
            "--progress-every", 2, "--checkpoint-every", 0, "--preset", "neural-style", "-q"]
    # The TV term of the run's first image: what a 0-iteration run reports (the library's run
    # gives the command line's figure without its quality line, 4 CPU s of compilation).
    tv0 = stylize(load_image(content), [load_image(style)], load_weights(weights),
                  StyleOptions(preset="neural-style", size=48, iterations=0)).losses["tv"]
    real = losses.objective

    def objective_with_nan(image, params, targets, config):
        total, parts = real(image, params, targets, config)
        tv = jnp.where(parts["tv"] < 0.9 * tv0, jnp.nan, parts["tv"])
        return total - parts["tv"] + tv, {**parts, "tv": tv}

    monkeypatch.setattr(losses, "objective", objective_with_nan)
    code = main([str(a) for a in base + ["--iterations", 200]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "NaN or infinite" in err and "(bad: tv)" in err and "out.partial.png" in err
    assert not out.exists()
    kept = load_image(tmp_path / "out.partial.png")
    assert np.isfinite(kept).all()
    assert 0 < load_checkpoint(tmp_path / "out.png.ckpt").run.iteration < 200


def test_decompression_bomb_header_is_refused_fast(tmp_path, capsys):
    import struct
    import zlib

    path = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    start = time.perf_counter()
    code = main(["stylize", str(path), str(path), "-o", str(tmp_path / "o.png"),
                 "--weights", "random"])
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert code == 2 and "100000x100000 pixels is over the limit" in err


def test_full_disk_while_checkpointing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    from jaxstyle.checkpoint import Checkpoint, RunState, save_checkpoint

    run = RunState(3, np.zeros((4, 4, 3), np.float32), [np.ones(2)], {"total": [1.0, 0.5, 0.2]})
    path = save_checkpoint(tmp_path / "o.ckpt", Checkpoint(run, StyleOptions(), {}, "o.png"))
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    later = RunState(9, np.ones((4, 4, 3), np.float32), [np.ones(2)], {"total": [0.1]})
    with pytest.raises(CheckpointError, match="No space left on device.*previous one is intact"):
        save_checkpoint(path, Checkpoint(later, StyleOptions(), {}, "o.png"))
    assert path.read_bytes() == before
    assert load_checkpoint(path).run.iteration == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.ckpt"]


def test_checkpoint_policy(monkeypatch):
    from jaxstyle import stylize_command

    clock = [1000.0]
    monkeypatch.setattr(stylize_command.time, "monotonic", lambda: clock[0])
    every5, never, auto = (stylize_command.Checkpointing(e) for e in (5, 0, None))
    assert every5.due(10) and not every5.due(11) and every5.stops_at(10)
    assert not never.due(10) and not never.stops_at(10)
    clock[0] += stylize_command.AUTO_CHECKPOINT_SECONDS - 1
    assert not auto.due(3)
    clock[0] += 2
    assert auto.due(3) and not auto.stops_at(3)  # by time: a chunk need not end for it
    auto.written()
    assert not auto.due(4)
