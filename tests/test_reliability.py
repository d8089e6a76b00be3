"""Flags that once crashed, runs that erased each other's work, data silently wrong: each case
of the reliability issue, one test (the table in docs/guide/bad-input.md names them)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LAYER_FLAGS, smooth_image, write_image
from PIL import Image

from jaxstyle import JaxstyleError, StyleOptions, load_image, stylize
from jaxstyle.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from jaxstyle.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = [*TINY_LAYER_FLAGS, "-q"]


@pytest.fixture
def files(tmp_path, tiny_weights_file):
    return (write_image(tmp_path / "content.png", smooth_image(30, 40, 0)),
            write_image(tmp_path / "style.png", smooth_image(36, 36, 1)), tiny_weights_file)


def _stylize(capsys, files, out, *extra):
    content, style, weights = files
    code = main([str(a) for a in ["stylize", content, style, "-o", out, "--weights", weights,
                                  "--size", 32, *TINY, *extra]])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--memory-limit-gb", "inf", "--memory-limit-gb: must be a finite number"),
    ("--seed", str(2**70), "--seed: must be in [0, 4294967295]"),
    ("--style-scale", "1e9", "--style-scale: must be in (0, 8]"),
    ("--style-scales", "1e9", "--style-scales: must be in (0, 8]"),
    ("--style-strength", "1e308", "--style-strength: must be in [0, 1e+12]"),
    ("--size", "100000", "--size: must be in [0, 32768]"),
    ("--style-blend-weights", "inf,1", "--style-blend-weights: must be comma-separated finite"),
    ("--style-blend-weights", "1e308,1e308", "--style-blend-weights: must be in [0, 1e+12]"),
    ("--style-layer-weights", "nan,1", "--style-layer-weights: must be comma-separated finite"),
    ("--save-every", "-1", "--save-every: expected a whole number in [0, 10000000]"),
    ("--iterations", "2.5", "--iterations: invalid"),
])
def test_numeric_flags_out_of_range_are_one_line_errors(tmp_path, files, capsys, flag, value,
                                                        message):
    try:  # argparse's own type errors exit; the options' checks return 2
        code, err = _stylize(capsys, files, tmp_path / "o.png", f"{flag}={value}")
    except SystemExit as stopped:
        code, err = stopped.code, capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "o.png").exists()


def test_memory_is_checked_before_the_targets(tmp_path, files, capsys, monkeypatch):
    from jaxstyle import driver

    def never(*args, **kwargs):
        raise AssertionError("the run started before the memory check")

    monkeypatch.setattr(driver, "_walk_plan", never)  # where targets are computed
    code, err = _stylize(capsys, files, tmp_path / "o.png", "--size", 1200,
                         "--memory-limit-gb", "0.05")
    assert code == 2 and "needs more than" in err and "optimizer state" in err


def test_report_and_output_may_not_be_the_same_file(tmp_path, files, capsys):
    out = tmp_path / "out.png"
    code, err = _stylize(capsys, files, out, "--report", out)
    assert code == 2 and f"--report {out}: is also this run's output" in err
    assert not out.exists()


def _ckpt_run(capsys, files, out, *extra):
    return _stylize(capsys, files, out, "--iterations", 6, "--progress-every", 2,
                    "--checkpoint-every", 2, "--preset", "neural-style", *extra)


def test_a_new_run_does_not_erase_an_unfinished_ones_checkpoint(tmp_path, files, capsys,
                                                                  monkeypatch):
    from jaxstyle import stylize_command

    out = tmp_path / "out.png"
    monkeypatch.setattr(stylize_command.Checkpointing, "due", lambda self, i: (
        os.kill(os.getpid(), signal.SIGINT) if i == 4 else None) or i % 2 == 0)
    code, _ = _ckpt_run(capsys, files, out)
    assert code == 128 + signal.SIGINT
    ckpt, partial = tmp_path / "out.png.ckpt", tmp_path / "out.partial.png"
    before = ckpt.read_bytes(), partial.read_bytes()
    monkeypatch.undo()
    code, err = _stylize(capsys, files, out, "--style-strength", 3)  # other options
    assert code == 2 and "an unfinished run's work is there" in err and "--overwrite" in err
    assert (ckpt.read_bytes(), partial.read_bytes()) == before
    code, err = _stylize(capsys, files, out, "--iterations", 2, "--overwrite")
    assert code == 0, err
    assert out.is_file() and not ckpt.exists() and not partial.exists()


def test_two_runs_on_one_output_are_refused_by_a_lock(tmp_path, files, capsys):
    from jaxstyle.locks import lock_path, locked

    out = tmp_path / "out.png"
    with locked(out):
        assert f"pid {os.getpid()}" in lock_path(out).read_text()
        code, err = _stylize(capsys, files, out, "--iterations", 1)
        assert code == 2 and f"another jaxstyle run (pid {os.getpid()}) is writing it" in err
        # The refused run left the holder's lock in place: a third run is refused too.
        assert f"pid {os.getpid()}" in lock_path(out).read_text()
        code, err = _stylize(capsys, files, out, "--iterations", 1)
        assert code == 2 and "is writing it" in err
    assert not lock_path(out).exists()
    assert _stylize(capsys, files, out, "--iterations", 1)[0] == 0  # released


def test_a_lock_whose_file_was_replaced_is_taken_on_the_new_file(tmp_path, monkeypatch):
    # A run that opened the lock file just before its holder finished (and removed it) locks a
    # file no longer at the path: it must lock the one there instead, or two runs would write.
    from jaxstyle import locks

    out = tmp_path / "out.png"
    real_open, opened = open, []

    def open_then_replace(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        if Path(path) == locks.lock_path(out):
            opened.append(path)
            if len(opened) == 1:
                os.unlink(path)  # the holder finished between our open and our lock
        return handle

    monkeypatch.setattr("builtins.open", open_then_replace)
    with locks.locked(out):
        assert len(opened) == 2  # it noticed, and locked the file now at the path
        assert locks.lock_path(out).read_text() == f"pid {os.getpid()}"
        with pytest.raises(JaxstyleError, match="is writing it"):
            with locks.locked(out):
                pass
    assert not locks.lock_path(out).exists()


@pytest.mark.parametrize("name, extra, message", [
    ("out.partial.png", ["--overwrite"], "its unfinished-work file"),
    ("out_00002.png", ["--save-every", "2"], "--save-every: would write over the input"),
])
def test_no_file_of_a_run_replaces_an_input(tmp_path, files, capsys, name, extra, message):
    content, style, weights = files
    moved = content.rename(tmp_path / name)
    before = moved.read_bytes()
    code, err = _stylize(capsys, (moved, style, weights), tmp_path / "out.png",
                         "--iterations", 4, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert moved.read_bytes() == before and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("suffix", [".blp", ".xbm"])
def test_an_output_format_pillow_cannot_write_in_colour_is_refused_first(tmp_path, files,
                                                                         capsys, suffix):
    out = tmp_path / f"out{suffix}"
    code, err = _stylize(capsys, files, out, "--iterations", 2)
    assert code == 2 and "Pillow cannot write a colour picture" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_after_a_nan_the_advised_resume_goes_on(tmp_path, files, capsys, monkeypatch):
    # Steps longer than 0.7 in model units make the loss NaN: unit steps hit it every time
    # from the checkpoint; the advised searched step does not.
    import jaxstyle.losses as losses

    real = losses.objective

    def nan_when_far(image, params, targets, config):
        total, parts = real(image, params, targets, config)
        far = jnp.max(jnp.abs(image - jnp.clip(image, -2.1, 2.7))) > 0
        return jnp.where(far, jnp.nan, total), parts

    monkeypatch.setattr(losses, "objective", nan_when_far)
    out = tmp_path / "out.png"
    code, err = _stylize(capsys, files, out, "--iterations", 40, "--preset", "neural-style",
                         "--style-weight", 1e6, "--progress-every", 1, "--checkpoint-every", 0)
    assert code == 2 and "NaN or infinite" in err
    advice = err.strip().split("continue with: ")[1]
    assert advice.startswith("jaxstyle resume") and "--lbfgs-linesearch zoom" in advice
    again = main(["resume", str(tmp_path / "out.png.ckpt"), "-q"])
    assert again == 2 and "NaN" in capsys.readouterr().err  # the same step fails again
    command = advice.split(" (")[0].split()
    assert main(command[1:] + ["-q"]) == 0, capsys.readouterr().err
    assert out.is_file() and np.isfinite(load_image(out)).all()


def test_checkpoints_carry_a_checksum(tmp_path, files, capsys, monkeypatch):
    from jaxstyle import stylize_command

    out = tmp_path / "out.png"
    monkeypatch.setattr(stylize_command.Checkpointing, "due", lambda self, i: (
        os.kill(os.getpid(), signal.SIGINT) if i == 4 else None) or i % 2 == 0)
    assert _ckpt_run(capsys, files, out)[0] == 128 + signal.SIGINT
    ckpt = tmp_path / "out.png.ckpt"
    data = bytearray(ckpt.read_bytes())
    for offset in (len(data) // 4, len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        data[offset] ^= 0xFF  # 4 corrupted bytes inside the arrays
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum does not match"):
        load_checkpoint(ckpt)
    monkeypatch.undo()
    assert main(["resume", str(ckpt), "-q"]) == 2
    assert "checksum does not match" in capsys.readouterr().err


def test_a_first_checkpoint_on_a_full_disk_does_not_claim_a_previous_one(tmp_path,
                                                                          monkeypatch):
    from jaxstyle import files as files_module
    from jaxstyle.checkpoint import RunState

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", full)
    run = RunState(0, np.zeros((2, 2, 3), np.float32), [], {})
    with pytest.raises(CheckpointError, match=r"No space left on device\); none was kept"):
        save_checkpoint(tmp_path / "o.ckpt", Checkpoint(run, StyleOptions(), {}, "o.png"))


def test_another_style_file_is_named_as_another_file(tmp_path, files, capsys, monkeypatch):
    from jaxstyle import stylize_command

    content, style, weights = files
    out = tmp_path / "out.png"
    monkeypatch.setattr(stylize_command.Checkpointing, "due", lambda self, i: (
        os.kill(os.getpid(), signal.SIGINT) if i == 4 else None) or i % 2 == 0)
    assert _ckpt_run(capsys, files, out)[0] == 128 + signal.SIGINT
    monkeypatch.undo()
    other = write_image(tmp_path / "other.png", smooth_image(36, 36, 5))
    code = main([str(a) for a in ["stylize", content, other, "-o", out, "--weights", weights,
                                  "--size", 32, *TINY, "--iterations", 6, "--progress-every", 2,
                                  "--checkpoint-every", 2, "--preset", "neural-style",
                                  "--resume", tmp_path / "out.png.ckpt"]])
    err = capsys.readouterr().err
    assert code == 2 and f"style image 1: {other} is another file than the checkpoint's" in err


def test_transparent_mask_areas_mean_no_style(tmp_path, files, capsys):
    from jaxstyle.images import load_mask
    from jaxstyle.inputs import load_inputs

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere ...
    rgba[:, 20:, 3] = 255  # ... but opaque only on the right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "mask.png")
    mask = load_mask(tmp_path / "mask.png")
    assert mask.shape == (30, 40) and mask[:, :20].max() == 0 and mask[:, 20:].min() == 1
    content, style, _ = files
    inputs = load_inputs([str(style)], str(content), style_masks=[str(tmp_path / "mask.png")])
    np.testing.assert_array_equal(inputs.style_masks[0], mask)


@pytest.mark.parametrize("argument, value, message", [
    ("content", np.zeros((0, 0, 3), np.float32), "content: the image is empty"),
    ("content", smooth_image(24, 32, 0) * 255, "content: float values must be in [0, 1]"),
    ("content", np.zeros((24, 32, 4), np.float32), "content: expected an image [H, W, 3]"),
    ("weights", None, "weights: expected VGGWeights"),
    ("options", {"size": 32}, "options: expected a StyleOptions, got a dict"),
    ("style_masks", [np.ones((24, 32, 2), np.float32)], "style mask 1: expected an image [H, W]"),
])
def test_python_api_arguments_are_checked_by_name(tiny_weights, argument, value, message):
    kwargs = dict(content=smooth_image(24, 32, 0), styles=[smooth_image(32, 32, 1)],
                  weights=tiny_weights, options=StyleOptions(size=32, iterations=1))
    kwargs[argument] = value
    with pytest.raises(JaxstyleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        stylize(**kwargs)


def test_uint8_images_are_converted_not_whitened(tiny_weights):
    content = smooth_image(24, 32, 0)
    options = StyleOptions(size=32, iterations=0)
    as_float = stylize(content, [smooth_image(32, 32, 1)], tiny_weights, options)
    as_uint8 = stylize((content * 255).round().astype(np.uint8), [smooth_image(32, 32, 1)],
                       tiny_weights, options)
    assert as_uint8.image.mean() < 0.9  # not all white
    np.testing.assert_allclose(as_uint8.image, as_float.image, atol=1 / 255)


@pytest.mark.parametrize("field, value, message", [
    ("iterations", 2.5, "iterations: must be a whole number (got 2.5)"),
    ("size", "64", "size: must be a whole number (got '64')"),
])
def test_options_name_the_argument_of_the_wrong_type(field, value, message):
    from jaxstyle import OptionsError

    with pytest.raises(OptionsError) as raised:
        StyleOptions(**{field: value})
    assert str(raised.value) == message


# --- batch -------------------------------------------------------------------------------


@pytest.fixture
def batch_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"p{i}.png", smooth_image(30, 40, i))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder, write_image(tmp_path / "style.png", smooth_image(36, 36, 9))


def _batch(capsys, folder, style, out, weights, *extra):
    code = main([str(a) for a in ["batch", folder, "-s", style, "-o", out, "--weights", weights,
                                  "--size", 32, "--iterations", 2, *TINY[:-1], *extra]])
    return code, capsys.readouterr().err


def test_batch_skips_bad_files_keeps_finished_ones_and_refuses_others(tmp_path, batch_files,
                                                                      tiny_weights_file, capsys):
    folder, style = batch_files
    out = tmp_path / "out"
    code, err = _batch(capsys, folder, style, out, tiny_weights_file)
    assert code == 1 and f"skipped {folder / 'broken.png'}" in err  # the rest were done
    assert sorted(p.name for p in out.glob("*.png")) == ["p0.png", "p1.png", "p2.png"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (folder / "broken.png").unlink()
    code, err = _batch(capsys, folder, style, out, tiny_weights_file)
    assert code == 0 and err.count("already made from these inputs and options") == 3
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    code, err = _batch(capsys, folder, style, out, tiny_weights_file, "--style-strength", 3)
    assert code == 2 and "was not made by this batch's inputs and options" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    code, err = _batch(capsys, folder, style, out, tiny_weights_file, "--style-strength", 3,
                       "--overwrite")
    assert code == 0 and all(p.stat().st_mtime_ns != stamps[p.name] for p in out.glob("*.png"))


@pytest.mark.slow
def test_an_interrupted_batch_keeps_the_groups_it_finished(tmp_path, tiny_weights_file):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "a_small.png", smooth_image(30, 40, 0))  # one size group ...
    write_image(folder / "b_tall.png", smooth_image(40, 24, 1))  # ... and another, run second
    style = write_image(tmp_path / "style.png", smooth_image(36, 36, 9))
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "batch", str(folder), "-s", str(style), "-o",
         str(out), "--weights", str(tiny_weights_file), "--size", "32", "--iterations",
         "100000", "--preset", "neural-style", *TINY[:-1]],
        stderr=subprocess.PIPE, text=True)
    for line in child.stderr:  # the first group is done once its output is logged
        if "wrote" in line:
            break
    child.send_signal(signal.SIGTERM)
    child.stderr.read()
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert (out / "a_small.png").is_file() and not (out / "b_tall.png").exists()


# --- video -------------------------------------------------------------------------------


def _frames(folder: Path, numbers, size=(24, 32)):
    folder.mkdir()
    for n in numbers:
        write_image(folder / f"frame_{n:03d}.png", smooth_image(*size, n))
    return folder


def _video(capsys, frames, out, tmp_path, weights, *extra):
    style = write_image(tmp_path / "style.png", smooth_image(36, 36, 9))
    code = main([str(a) for a in ["video", frames, style, "-o", out, "--weights", weights,
                                  "--size", 0, "--iterations", 2, *TINY, *extra]])
    return code, capsys.readouterr().err


def test_video_refuses_gaps_in_numbering(tmp_path, tiny_weights_file, capsys):
    frames = _frames(tmp_path / "frames", [1, 2, 4, 5])
    code, err = _video(capsys, frames, tmp_path / "out", tmp_path, tiny_weights_file)
    assert code == 2 and "frame 3 is missing (the numbering jumps from 2 to 4)" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_video_takes_only_numbered_frames(tmp_path, tiny_weights_file, capsys):
    frames = _frames(tmp_path / "frames", [1, 2])
    write_image(frames / "cover.png", smooth_image(24, 32, 7))
    style = write_image(tmp_path / "s.png", smooth_image(36, 36, 9))
    code = main([str(a) for a in ["video", frames, style,
                                  "-o", tmp_path / "out", "--weights", tiny_weights_file,
                                  "--size", 0, "--iterations", 1, "--content-layers", "relu2_1",
                                  "--style-layers", "relu1_1"]])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "ignoring cover.png (no frame number in the name)" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frame_00001.png",
                                                                     "frame_00002.png"]


@pytest.mark.slow
def test_odd_sized_video_is_padded_to_what_players_decode(tmp_path, tiny_weights_file, capsys):
    import av

    frames = _frames(tmp_path / "frames", [1, 2], size=(23, 33))
    out = tmp_path / "out.mp4"
    style = write_image(tmp_path / "s.png", smooth_image(36, 36, 9))
    code = main([str(a) for a in ["video", frames, style,
                                  "-o", out, "--weights", tiny_weights_file, "--size", 0,
                                  "--iterations", 1, "--content-layers", "relu2_1",
                                  "--style-layers", "relu1_1"]])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "padded 33x23 to 34x24" in err
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (34, 24)


def test_folders_that_refuse_writes_are_caught_before_work(files, tmp_path, capsys, monkeypatch):
    # Every output folder is probed by writing a file: root passes permission bits, so a folder
    # that refuses the write (a read-only mount) is simulated for root and real for others.
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:
        real = tempfile.TemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == locked:
                raise PermissionError(30, "Read-only file system")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    code, err = _stylize(capsys, files, tmp_path / "o.png", "--report", locked / "r.json")
    assert code == 2 and f"--report {locked / 'r.json'}: cannot write there" in err, err
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (1, 2):
        write_image(frames / f"{i:04d}.png", smooth_image(32, 32, i))
    code = main([str(a) for a in ["video", frames, files[1], "-o", locked / "o.mp4",
                                  "--weights", files[2], "--size", 32, *TINY]])
    err = capsys.readouterr().err
    assert code == 2 and f"folder {locked} is not writable" in err, err
    assert not (tmp_path / "o.png").exists() and not list(locked.iterdir())


# --- round three (issue 40) --------------------------------------------------------------

_EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
%%EndComments
0.5 setgray newpath 0 0 moveto 8 0 lineto 8 8 lineto 0 8 lineto closepath fill
showpage
%%EOF
"""


def _cli(*args, env=None, timeout=300):
    """Runs ``python -m jaxstyle ARGS`` in a child process: (exit code, stderr)."""
    done = subprocess.run([sys.executable, "-m", "jaxstyle", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


@pytest.mark.parametrize("name", ["picture.eps", "eps_renamed.png"])
def test_an_eps_image_never_reaches_ghostscript(tmp_path, files, name):
    # Pillow's EPS plugin runs Ghostscript: a fake `gs` first on PATH would leave a mark.
    content, style, weights = files
    eps = tmp_path / name
    eps.write_bytes(_EPS)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mark = tmp_path / "gs-ran"
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    gs.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "o.png"
    code, err = _cli("stylize", eps, style, "-o", out, "--weights", weights, "--size", 32,
                     *TINY, "--iterations", 1, env=env)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{eps}: is an EPS file" in err and "Traceback" not in err
    assert not mark.exists() and not out.exists()


def test_a_float_tiff_with_nan_pixels_is_refused_naming_the_file(tmp_path, files, capsys):
    gray = np.full((30, 40), 0.5, np.float32)
    gray[3, 4] = np.nan
    tiff = tmp_path / "nan.tif"
    Image.fromarray(gray, "F").save(tiff)
    code, err = _stylize(capsys, (tiff, files[1], files[2]), tmp_path / "o.png",
                         "--iterations", 2)
    assert code == 2 and f"{tiff}: has NaN or infinite pixel values" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.png").exists()


def test_an_odd_ico_is_refused_without_a_warning(tmp_path, files):
    # An icon whose directory says 64x64 around a 16x16 PNG: Pillow's ICO plugin warns
    # ("Image was not the expected size"); icons are not read at all.
    png = tmp_path / "small.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(png)
    data = png.read_bytes()
    header = (b"\0\0\1\0\1\0" + bytes([64, 64, 0, 0]) + (1).to_bytes(2, "little")
              + (32).to_bytes(2, "little") + len(data).to_bytes(4, "little")
              + (22).to_bytes(4, "little"))
    ico = tmp_path / "odd.ico"
    ico.write_bytes(header + data)
    content, style, weights = files
    code, err = _cli("stylize", content, ico, "-o", tmp_path / "o.png", "--weights", weights,
                     "--size", 32, *TINY, "--iterations", 1)
    assert code == 2 and err.strip() == (
        f"jaxstyle: error: {ico}: is an ICO file, which jaxstyle does not read (it reads "
        "PNG, JPEG, WEBP, TIFF, BMP, GIF, PPM)"), err


def _growing_video(path: Path) -> Path:
    """An MJPEG video whose frames 1 and 3 are 32x24 and frame 2 is 2000x1500: each JPEG
    carries its own size, so a decoder meets the large one only at frame 2."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuvj420p"
        large = av.CodecContext.create("mjpeg", "w")
        large.width, large.height, large.pix_fmt = 2000, 1500, "yuvj420p"
        large.time_base = Fraction(1, 25)
        for i, (h, w) in enumerate([(24, 32), (1500, 2000), (24, 32)]):
            frame = av.VideoFrame.from_ndarray((smooth_image(h, w, i) * 255).astype(np.uint8),
                                               format="rgb24").reformat(format="yuvj420p")
            frame.pts = i
            for packet in (large if h > 24 else stream).encode(frame):
                packet.stream, packet.pts, packet.dts = stream, i, i
                out.mux(packet)
    return path


def test_video_max_pixels_holds_for_every_frame(tmp_path, tiny_weights_file, capsys):
    import tracemalloc

    from jaxstyle.frames import VideoError, open_source, read_frames

    clip = _growing_video(tmp_path / "grow.mkv")
    code, err = _video(capsys, clip, tmp_path / "out.mp4", tmp_path, tiny_weights_file,
                       "--max-pixels", 10000)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{clip}: frame 2 is 2000x1500 px, over --max-pixels 10000" in err, err
    assert not (tmp_path / "out.mp4").exists()
    frames = read_frames(open_source(str(clip), 10000))
    tracemalloc.start()  # NumPy's arrays are traced: the large frame is never one
    try:
        assert next(frames).shape == (24, 32, 3)
        with pytest.raises(VideoError, match="frame 2 is 2000x1500 px"):
            next(frames)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2000 * 1500


@pytest.mark.parametrize("extra", [("--size", 32768), ("--size", 2048, "--style-scale", 8)])
def test_sizes_past_int32_are_checked_never_a_traceback(tmp_path, files, capsys, extra):
    # 8 channels (relu1_1 of the tiny network) x 32768 x 24576, and x 16384 x 16384 for the
    # style image: counts past 2**31, once Python ints that overflowed a jitted function's int32.
    code, err = _stylize(capsys, files, tmp_path / "o.png", *extra, "--iterations", 0,
                         "--memory-limit-gb", 1)
    assert code == 2 and "needs more than" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.png").exists()


def test_counts_past_int32_are_floats_in_the_losses():
    from jaxstyle.style_losses import gram_statistics
    from jaxstyle.terms import content_mse, temporal_loss

    features = jax.ShapeDtypeStruct((32768, 32768, 4), jnp.float32)  # 2**32 numbers
    weights = jax.ShapeDtypeStruct((32768, 32768), jnp.float32)
    assert jax.eval_shape(gram_statistics, features).shape == (4, 4)
    assert jax.eval_shape(content_mse, features, features).shape == ()
    assert jax.eval_shape(temporal_loss, features, features, weights).shape == ()


def test_size_advice_stays_within_the_flags_range(tmp_path, files, capsys):
    thin = write_image(tmp_path / "thin.png", np.full((1, 70000, 3), 0.5, np.float32))
    code, err = _stylize(capsys, (thin, files[1], files[2]), tmp_path / "o.png",
                         "--iterations", 0)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is too small for the network" in err and "or more" not in err, err
    assert "--size 32768, the largest, it is still too thin: crop it" in err, err


_GOOD_INPUTS = {"content": {"path": "/c.png", "sha256": "0" * 64},
                "styles": [{"path": "/s.png", "sha256": "1" * 64}], "init_image": None,
                "style_masks": None, "content_mask": None,
                "weights": {"path": "random", "source": "random", "sha256": "random"}}


@pytest.mark.parametrize("inputs, message", [
    ({**_GOOD_INPUTS, "styles": [{"sha256": "1" * 64}]}, "inputs.styles[0]: no path"),
    (["/c.png", "/s.png"], "inputs: expected a mapping, found a list"),
    ({**_GOOD_INPUTS, "styles": "/s.png"}, "inputs.styles: expected a list"),
    ({**_GOOD_INPUTS, "content": {"path": 3}}, "inputs.content: no path"),
    ({**_GOOD_INPUTS, "style_masks": [None]},
     "inputs.style_masks[0]: expected a mapping, found nothing"),
    ({k: v for k, v in _GOOD_INPUTS.items() if k != "content"}, "records no content or style"),
])
def test_crafted_checkpoint_inputs_are_one_line_errors(tmp_path, capsys, inputs, message):
    from jaxstyle.checkpoint import RunState

    ckpt = tmp_path / "o.png.ckpt"  # a valid checksum around a crafted payload
    save_checkpoint(ckpt, Checkpoint(RunState(0, np.zeros((2, 2, 3), np.float32), [], {}),
                                     StyleOptions(), inputs, str(tmp_path / "o.png")))
    assert main(["resume", str(ckpt), "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{ckpt}: " in err and message in err, err


@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_pool_of_no_threads_gets_two(monkeypatch, value):
    from jaxstyle import cpu_pool

    monkeypatch.setattr(cpu_pool, "_jax_started", lambda: False)
    monkeypatch.setenv("PJRT_NPROC", value)
    assert not cpu_pool.host_callbacks_safe()
    cpu_pool.ensure_two_threads()
    assert os.environ["PJRT_NPROC"] == "2"


# Seven CPU seconds (XLA sorts 6.4M values on one thread); the quick suite keeps the same
# sort under PJRT_NPROC=1 (test_style_losses) and the reading of 0 (the test above).
@pytest.mark.slow
def test_pjrt_nproc_0_finishes():
    # PJRT_NPROC=0 was read as unset (so as two CPUs' threads): NumPy's callback hung for good.
    from test_style_losses import ONE_THREAD

    env = {**os.environ, "PJRT_NPROC": "0"}
    try:
        done = subprocess.run([sys.executable, "-c", ONE_THREAD], env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("sorting with PJRT_NPROC=0 hung")
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]


@pytest.mark.parametrize("args, message", [
    (["resume", "."], ".: is a folder, not a checkpoint"),
    (["stylize", "{content}", "{style}", "-o", "{tmp}/out.xyz"],
     "-o {tmp}/out.xyz: cannot tell the image format"),
    (["stylize", "{content}", "{style}", "-o", "{tmp}/nope/out.png"],
     "-o {tmp}/nope/out.png: folder {tmp}/nope does not exist"),
    (["stylize", "{content}", "{style}", "-o", "{tmp}/o.png", "--weights="],
     "--weights: is empty"),
    (["stylize", "{content}", "{style}", "-o", "{tmp}/o.png", "--scales", "32,,48"],
     "--scales: expected comma-separated whole numbers, got '32,,48'"),
    (["stylize", "{content}", "{style}", "-o", "{tmp}/o.png", "--style-blend-weights", "1,,2"],
     "--style-blend-weights: expected comma-separated numbers, got '1,,2'"),
    (["stylize", "{content}", "{style}", "-o", "{tmp}/o.png", "--scale-iterations", "2,3"],
     "--scale-iterations: must be one count when --scales is not given (got 2,3)"),
    (["stylize", "{content}", "{style}", "-o", "{tmp}/o.png", "--weights", "{tmp}/e.onnx"],
     "{tmp}/e.onnx: not a weights file jaxstyle reads: it is empty"),
])
def test_small_usage_errors_name_what_is_wrong(tmp_path, files, capsys, args, message):
    content, style, weights = files
    (tmp_path / "e.onnx").write_bytes(b"")
    names = dict(content=content, style=style, tmp=tmp_path)
    argv = [a.format(**names) for a in args]
    if argv[0] == "stylize" and not any(a.startswith("--weights") for a in argv):
        argv += ["--weights", str(weights)]
    argv += ["--size", "32", *TINY, "--iterations", "1"] if argv[0] == "stylize" else ["-q"]
    try:
        code = main(argv)
    except SystemExit as stopped:  # argparse's own errors exit
        code = stopped.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message.format(**names) in err, err
    assert not (tmp_path / "o.png").exists()


def _interrupt_at(monkeypatch, iteration):
    from jaxstyle import stylize_command

    monkeypatch.setattr(stylize_command.Checkpointing, "due", lambda self, i: (
        os.kill(os.getpid(), signal.SIGINT) if i == iteration else None) or i % 2 == 0)


def _interrupted_run(capsys, files, out, monkeypatch, *extra):
    _interrupt_at(monkeypatch, 4)
    code, err = _stylize(capsys, files, out, "--iterations", 10, "--progress-every", 2,
                         "--checkpoint-every", 2, "--preset", "neural-style", *extra)
    assert code == 128 + signal.SIGINT, err
    monkeypatch.undo()
    return out.with_name(out.name + ".ckpt")


def test_resume_writes_only_the_output_its_run_was_given(tmp_path, files, capsys,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    _interrupted_run(capsys, files, Path("out.png"), monkeypatch)  # -o as typed: relative
    ckpt = tmp_path / "out.png.ckpt"
    saved = load_checkpoint(ckpt)
    assert saved.output == str(tmp_path / "out.png")  # kept absolute
    # A crafted checkpoint (its checksum recomputed) naming someone's file as the output.
    precious = write_image(tmp_path / "precious.png", smooth_image(8, 8, 3))
    before = precious.read_bytes()
    save_checkpoint(ckpt, Checkpoint(saved.run, saved.options, saved.inputs, str(precious),
                                     saved.replaceable))
    assert main(["resume", str(ckpt), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{precious}: is there and is not this run's" in err and "--overwrite" in err, err
    assert precious.read_bytes() == before
    assert main(["resume", str(ckpt), "-q", "--overwrite"]) == 0, capsys.readouterr().err
    assert precious.read_bytes() != before


def test_resume_may_replace_what_its_run_was_told_to(tmp_path, files, capsys, monkeypatch):
    out = write_image(tmp_path / "out.png", smooth_image(8, 8, 3))  # stylize -o names it: replaced
    ckpt = _interrupted_run(capsys, files, out, monkeypatch)
    assert (tmp_path / "out.partial.png").is_file()  # the run's own, recorded
    assert main(["resume", str(ckpt), "-q"]) == 0, capsys.readouterr().err
    assert not ckpt.exists() and not (tmp_path / "out.partial.png").exists()


def test_an_old_relative_output_is_next_to_its_checkpoint(tmp_path, files, capsys,
                                                          monkeypatch):
    out = tmp_path / "x.png"
    ckpt = _interrupted_run(capsys, files, out, monkeypatch)
    saved = load_checkpoint(ckpt)  # as an earlier jaxstyle wrote it: relative, no record
    save_checkpoint(ckpt, Checkpoint(saved.run, saved.options, saved.inputs, "x.png"))
    (tmp_path / "x.partial.png").unlink()
    sub = tmp_path / "sub"
    sub.mkdir()
    decoy = write_image(sub / "x.png", smooth_image(8, 8, 3))
    before = decoy.read_bytes()
    monkeypatch.chdir(sub)
    assert main(["resume", "../x.png.ckpt", "-q"]) == 0, capsys.readouterr().err
    assert decoy.read_bytes() == before and out.is_file() and not ckpt.exists()


def test_resume_to_another_output_takes_the_checkpoint_along(tmp_path, files, capsys,
                                                             monkeypatch):
    out, other = tmp_path / "out.png", tmp_path / "other.png"
    ckpt = _interrupted_run(capsys, files, out, monkeypatch)
    _interrupt_at(monkeypatch, 8)  # the resumed run (from 6) stops after 8
    assert main(["resume", str(ckpt), "-o", str(other), "--checkpoint-every", "2",
                 "-q"]) == 128 + signal.SIGINT
    monkeypatch.undo()
    moved = tmp_path / "other.png.ckpt"
    assert moved.is_file() and not ckpt.exists() and not (tmp_path / "out.partial.png").exists()
    assert main(["resume", str(moved), "-o", str(tmp_path / "third.png"), "-q"]) == 0
    assert (tmp_path / "third.png").is_file() and not moved.exists()
    assert not (tmp_path / "other.partial.png").exists()
    capsys.readouterr()
    code, err = _stylize(capsys, files, out, "--iterations", 1)  # nothing left in the way
    assert code == 0, err


@pytest.mark.parametrize("destination, extra, message", [
    ("existing.msgpack", [], "existing.msgpack: exists; use --force to replace it"),
    ("existing.jpg", ["--force"], "existing.jpg: converted weights are written as .msgpack"),
    ("new.h5", [], "new.h5: converted weights are written as .msgpack"),
])
def test_weights_convert_replaces_nothing_unasked(tmp_path, capsys, destination, extra,
                                                  message):
    from conftest import DATA

    (tmp_path / "existing.msgpack").write_bytes(b"mine")
    write_image(tmp_path / "existing.jpg", smooth_image(8, 8, 1))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    target = tmp_path / destination
    assert main(["weights", "convert", str(DATA / "vgg19_tiny.pth"), str(target),
                 "--preprocessing", "torchvision", *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert main(["weights", "convert", str(DATA / "vgg19_tiny.pth"),
                 str(tmp_path / "existing.msgpack"), "--preprocessing", "torchvision",
                 "--force"]) == 0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "PPM", "MPO"])
def test_every_allowed_format_still_reads(tmp_path, fmt):
    # MPO, what many cameras write, is a JPEG with more pictures after it: read as one.
    from jaxstyle.images import IMAGE_FORMATS

    assert fmt in IMAGE_FORMATS or fmt == "MPO"
    path = tmp_path / f"picture.{fmt.lower()}"
    Image.new("RGB", (8, 6), (10, 200, 30)).save(path, format=fmt)
    image = load_image(path)
    assert image.shape == (6, 8, 3) and abs(image[3, 4, 1] - 200 / 255) < 0.05


def test_a_copy_of_a_checkpoint_resumed_onto_its_own_output_stays(tmp_path, files, capsys,
                                                                  monkeypatch):
    out = tmp_path / "out.png"
    ckpt = _interrupted_run(capsys, files, out, monkeypatch)
    kept = tmp_path / "backup.ckpt"
    kept.write_bytes(ckpt.read_bytes())
    ckpt.unlink()
    assert main(["resume", str(kept), "-q"]) == 0, capsys.readouterr().err
    assert out.is_file() and kept.is_file()


# Found by the fuzzers (tests/image_fuzzer.py, tests/checkpoint_fuzzer.py).

@pytest.mark.parametrize("entry_type", [2, 5, 11, 12])  # ASCII, RATIONAL, FLOAT, DOUBLE
def test_a_tiff_whose_strip_offsets_are_not_integers_is_a_one_line_error(tmp_path, entry_type):
    # Pillow seeks to the offsets as they are: a TypeError escaped (a traceback).
    import io
    import struct

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for at in range(ifd + 2, ifd + 2 + 12 * struct.unpack("<H", data[ifd:ifd + 2])[0], 12):
        if struct.unpack("<H", data[at:at + 2])[0] == 273:  # StripOffsets
            data[at + 2:at + 4] = struct.pack("<H", entry_type)
    path = tmp_path / "offsets.tiff"
    path.write_bytes(bytes(data))
    with pytest.raises(JaxstyleError, match="offsets.tiff: cannot decode image"):
        load_image(path)


LOW_MEMORY_READ = """
import resource, sys
from jaxstyle.errors import ImageError
from jaxstyle.images import load_image
load_image(sys.argv[1])  # imports what decoding imports
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (512 << 20), resource.RLIM_INFINITY))
try:
    load_image(sys.argv[2])
except ImageError as exc:
    print("refused:", exc)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, sets RLIMIT_AS")
def test_a_png_chunk_claiming_gigabytes_is_refused_where_memory_is_bounded(tmp_path):
    # Pillow reads a chunk's stated length at once: 2.2 GB for a 100-byte file, a MemoryError
    # where memory is bounded (a container, a ulimit), which escaped as a traceback.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes, length: int | None = None) -> bytes:
        return (struct.pack(">I", len(data) if length is None else length) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    good = tmp_path / "good.png"
    write_image(good, smooth_image(6, 8, 0))
    pixels = zlib.compress(b"\x00" + bytes(24))
    bad = tmp_path / "claims.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 1, 8, 2,
                                                                      0, 0, 0))
                    + chunk(b"IDAT", pixels, 2_231_369_889))
    done = subprocess.run([sys.executable, "-c", LOW_MEMORY_READ, str(good), str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"refused: {bad}: cannot decode image" in done.stdout, done.stdout


def _crafted_checkpoint(path, **changes):
    """A checkpoint whose payload has `changes` (a key set to None is removed), its checksum
    recomputed: the checksum guards corruption, not intent."""
    import hashlib

    from flax import serialization

    from jaxstyle.checkpoint import RunState

    run = RunState(3, np.zeros((4, 4, 3), np.float32), [np.ones(2)], {"total": [1.0, 0.5]})
    save_checkpoint(path, Checkpoint(run, StyleOptions(), {}, str(path.with_suffix(".png"))))
    outer = serialization.msgpack_restore(path.read_bytes())
    payload = serialization.msgpack_restore(outer["payload"])
    payload.update(changes)
    data = serialization.msgpack_serialize(payload)
    path.write_bytes(serialization.msgpack_serialize(
        {**outer, "sha256": hashlib.sha256(data).hexdigest(), "payload": data}))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"history": [1.0, 2.0]}, "history: expected a mapping, found a list"),
    ({"history": "total"}, "history: expected a mapping, found a string"),
    ({"state": np.ones(3)}, "state: expected a mapping, found ndarray"),
    ({"options": "[" * 100_000 + "]" * 100_000}, "options: nested too deeply"),
    ({"inputs": '{"content": ' * 5000 + "{}" + "}" * 5000}, "inputs: nested too deeply"),
    ({"stage": float("inf")}, "OverflowError"),
    ({"iteration": float("-inf")}, "OverflowError"),
    ({"inputs": '{"extra": 3}'}, "inputs.extra: not an input a run records"),
    ({"state": {"0": [[1.0], [1.0, 2.0]]}}, "ValueError"),  # a ragged leaf: resume's traceback
])
def test_crafted_checkpoint_fields_are_one_line_errors(tmp_path, changes, message):
    path = _crafted_checkpoint(tmp_path / "crafted.ckpt", **changes)
    with pytest.raises(CheckpointError, match="crafted.ckpt: corrupt checkpoint") as refused:
        load_checkpoint(path)
    assert message in str(refused.value) and "\n" not in str(refused.value)
