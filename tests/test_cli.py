import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import TINY_LAYER_FLAGS, smooth_image, write_image
from PIL import Image

from jaxstyle.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def images(tmp_path):
    return (write_image(tmp_path / "content.png", smooth_image(30, 40, 0)),
            write_image(tmp_path / "style.jpg", smooth_image(36, 36, 1)))


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def test_stylize_writes_image_and_report(tmp_path, images, tiny_weights_file, capsys):
    content, style = images
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    code, err = _run(capsys, "stylize", content, style, "-o", out, "--weights", tiny_weights_file,
                     "--size", 32, "--iterations", 4, "--progress-every", 2, "--save-every", 2,
                     "--report", report, "--style-blend-weights", "1", "--pooling", "avg")
    assert code == 0, err
    assert Image.open(out).size == (32, 24)
    assert (tmp_path / "out_00002.png").is_file()
    data = json.loads(report.read_text())
    assert data["options"]["objective"]["pooling"] == "avg"
    assert data["options"]["optimization"]["iterations"] == 4
    assert len(data["history"]["total"]) == 4 and data["evaluations"] == 5
    assert set(data["final_losses"]) >= {"total", "content", "style", "tv"}
    assert data["timings_seconds"]["per_iteration"] > 0
    assert set(data["quality"]["style_gram"]) == set(data["options"]["objective"]["style_layers"])
    assert data["quality"]["style_gram_ratio"] > 0 and "relu4_2" in data["quality"]["content"]
    assert "wrote" in err
    assert err.strip().splitlines()[-1].startswith("quality: style distance ")


def test_random_weights_are_labelled(tmp_path, images, capsys):
    content, style = images
    code, err = _run(capsys, "stylize", content, style, "-o", tmp_path / "o.png",
                     "--weights", "random", "--size", 16, "--iterations", 1,
                     "--content-layers", "relu1_1", "--style-layers", "relu1_1,relu2_1")
    assert code == 0, err
    assert "random (He init, seed 0) -- NOT pretrained" in err
    with Image.open(tmp_path / "o.png") as written:
        assert "VGG19, random (He init, seed 0), NOT pretrained" in written.text["Description"]


BAD_CASES = {
    "missing content": (["{missing}", "{style}"], [], "no such file"),
    "not an image": (["{text}", "{style}"], [], "not an image"),
    "truncated image": (["{truncated}", "{style}"], [], "cannot decode image"),
    "unknown layer": (["{content}", "{style}"], ["--style-layers", "relu1_1,relu9_1"],
                      "unknown layer 'relu9_1'"),
    "negative weight": (["{content}", "{style}"], ["--style-weight=-3"],
                        "--style-weight: must be in [0, 1e+12] (got -3.0)"),
    "size too small": (["{content}", "{style}"], ["--size", "8"],
                       "--size: the output of 8x6 px is too small for the network"),
    "size too small (the fix)": (["{content}", "{style}"], ["--size", "8"],
                                 "use --size 21 or more"),
    "tile too small": (["{content}", "{style}"], ["--tile-size", "20"],
                       "--tile-size: must be in [32, 32768] (got 20)"),
    "scale iterations mismatch": (["{content}", "{style}"], ["--scales", "32,64",
                                                             "--scale-iterations", "1,2,3"],
                                  "--scale-iterations: must be one count, or one per scale (2)"),
    "output folder missing": (["{content}", "{style}"], ["-o", "{tmp}/nope/out.png"],
                              "does not exist"),
    "output is an input": (["{content}", "{style}"], ["-o", "{content}"],
                           "refusing to overwrite the input"),
    "unknown extension": (["{content}", "{style}"], ["-o", "{tmp}/out.xyz"], "extension"),
    "blend weights mismatch": (["{content}", "{style}"], ["--style-blend-weights", "1,2"],
                               "2 weights for 1 style image"),
    "bad weights file": (["{content}", "{style}"], ["--weights", "{text}"], "weights"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exits_2_with_one_line_and_no_output(case, tmp_path, images, capsys,
                                                       tiny_weights_file):
    content, style = images
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(content.read_bytes()[:200])
    names = dict(content=content, style=style, missing=tmp_path / "missing.png", text=text,
                 truncated=truncated, tmp=tmp_path)
    positional, extra, message = BAD_CASES[case]
    argv = ["stylize", *[p.format(**names) for p in positional]]
    extra = [e.format(**names) for e in extra]
    if "-o" not in extra:
        extra += ["-o", str(tmp_path / "out.png")]
    if "--weights" not in extra:
        extra += ["--weights", str(tiny_weights_file)]
    before = sorted(tmp_path.rglob("*"))
    code, err = _run(capsys, *argv, *extra, "--iterations", 2)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxstyle: error:"), err
    assert message in lines[0]
    assert sorted(tmp_path.rglob("*")) == before
    assert content.read_bytes()[:4] == b"\x89PNG"


def test_output_folder_that_is_a_file(tmp_path, images, capsys, tiny_weights_file):
    # Runs as root too (CI): a file where the output's folder should be.
    content, style = images
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    code, err = _run(capsys, "stylize", content, style, "-o", blocker / "o.png",
                     "--weights", tiny_weights_file)
    assert code == 2 and f"folder {blocker} is a file, not a folder" in err
    assert blocker.read_text() == "not a folder"


def test_unwritable_output_folder(tmp_path, images, capsys, tiny_weights_file, monkeypatch):
    # The check writes a probe file; root passes permission bits, so a folder that refuses the
    # write is simulated for root (what a read-only mount does) and real for other users.
    import tempfile

    content, style = images
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:
        real = tempfile.TemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == locked:
                raise PermissionError(30, "Read-only file system")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    code, err = _run(capsys, "stylize", content, style, "-o", locked / "o.png",
                     "--weights", tiny_weights_file)
    assert code == 2 and f"folder {locked} is not writable" in err


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["stylize", "--iterations", "many", "a.png", "b.png", "-o", "c.png"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_checkout_entry_point_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "stylize", "missing.png", "missing2.png",
         "-o", str(tmp_path / "o.png")], capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "jaxstyle: error: missing.png: no such file"


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "jaxstyle", "stylize", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    from jaxstyle.presets import BALANCED_STYLE_STRENGTH

    assert "--style-strength" in text and f"{BALANCED_STYLE_STRENGTH:g} for balanced" in text


def test_help_is_grouped_shows_each_default_once_and_loads_no_jax():
    from jaxstyle.flags import option_flags
    from jaxstyle.option_fields import HEADINGS

    code = ("import sys; from jaxstyle.cli import build_parser; "
            "text = build_parser()._subparsers._group_actions[0].choices['stylize'].format_help();"
            "print(text); print('JAX LOADED' if 'jax.numpy' in sys.modules else 'no jax')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("no jax"), result.stderr
    headings = [line[:-1] for line in result.stdout.splitlines() if line.endswith(":")]
    assert [h for h in headings if h in HEADINGS] == [g for g in HEADINGS if g != "video"]
    for spec in option_flags():
        assert spec.kwargs["help"].count("(default:") <= 1, spec.flag
    assert "(default: auto)" not in result.stdout



def test_resume_help_says_the_step_defaults_to_the_runs_own_and_video_names_every_format():
    from jaxstyle.choices import RESUMABLE_OPTIONS, VIDEO_SUFFIXES
    from jaxstyle.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    resume = {a.dest: a for a in commands["resume"]._actions}
    for dest in RESUMABLE_OPTIONS:
        assert resume[dest].default is None  # None keeps the checkpoint's value
        assert "set by --preset" not in resume[dest].help
        assert resume[dest].help.endswith("resume's default: the run's own")
    video_help = " ".join(commands["video"].format_help().split())
    assert f"({', '.join(VIDEO_SUFFIXES)}:" in video_help

def test_zero_iterations_say_nothing_was_optimized(tmp_path, images, tiny_weights_file, capsys):
    content, style = images
    code, err = _run(capsys, "stylize", content, style, "-o", tmp_path / "o.png", "--weights",
                     tiny_weights_file, "--size", 64, "--iterations", 0, *TINY_LAYER_FLAGS)
    assert code == 0, err
    assert "after 0 iterations (nothing optimized" in err
    assert "upscaled from the content's 40x30" in err  # 64 px from a 40 px photo


def test_sweep_writes_a_contact_sheet_of_every_combination(tmp_path, images, tiny_weights_file,
                                                          capsys):
    content, style = images
    sheet = tmp_path / "sheet.png"
    code, err = _run(capsys, "sweep", content, style, "-o", sheet, "--weights", tiny_weights_file,
                     "--vary", "style_weight=10,1000", "--vary", "style-loss=gram,mean_cov",
                     "--size", 32, "--iterations", 3, *TINY_LAYER_FLAGS)
    assert code == 0, err
    assert err.count("] style_weight=") == 4 and "[4/4] style_weight=1000.0, style_loss=" in err
    with Image.open(sheet) as written:
        width, height = written.size
        assert "VGG19" in written.text["Description"]
    assert width >= 2 * 32 and height >= 2 * 24 + 2 * 3 * 12  # 2 x 2 cells with captions


def test_a_second_sweep_on_a_running_sweeps_sheet_is_refused_by_name(tmp_path, images,
                                                                     tiny_weights_file, capsys,
                                                                     monkeypatch):
    # A sweep holds its sheet's lock while it runs, as every command holds its outputs': a
    # second sweep started during its first cell is refused before any work, naming the sheet.
    from jaxstyle import sweeps
    from jaxstyle.locks import lock_path

    content, style = images
    sheet = tmp_path / "sheet.png"
    args = ["sweep", content, style, "-o", sheet, "--weights", tiny_weights_file, "--vary",
            "style_weight=10,1000", "--size", 32, "--iterations", 2, *TINY_LAYER_FLAGS, "-q"]
    second, stylize = [], sweeps.stylize

    def start_another_then_stylize(*args_, **kwargs):
        if not second:  # the first sweep's first cell is running (the second's runs none)
            second.append(None)
            second[0] = _run(capsys, *args)
        return stylize(*args_, **kwargs)

    monkeypatch.setattr(sweeps, "stylize", start_another_then_stylize)
    code, err = _run(capsys, *args)
    assert code == 0, err
    (code, err), = second
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{sheet}: another jaxstyle run (pid {os.getpid()}) is writing it" in err
    assert sheet.is_file() and not lock_path(sheet).exists()


def test_a_stop_request_ends_a_sweep_after_its_cell_with_nothing_written(tmp_path, images,
                                                                          tiny_weights_file,
                                                                          capsys, monkeypatch):
    # Ctrl-C during a cell: the cell finishes, the sweep ends there with 130, and neither a
    # sheet of some cells nor a temporary or lock file is left.
    from jaxstyle import sweeps

    content, style = images
    sheet = tmp_path / "sheet.png"
    cells, stylize = [], sweeps.stylize

    def stylize_then_interrupt(*args, **kwargs):
        cells.append(kwargs)
        result = stylize(*args, **kwargs)
        if len(cells) == 1:  # once: a second SIGINT quits at once, as a second Ctrl-C does
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(sweeps, "stylize", stylize_then_interrupt)
    code, err = _run(capsys, "sweep", content, style, "-o", sheet, "--weights",
                     tiny_weights_file, "--vary", "style_weight=10,100,1000", "--size", 32,
                     "--iterations", 2, *TINY_LAYER_FLAGS)
    assert code == 128 + signal.SIGINT, err
    assert len(cells) == 1 and "stopping after the current chunk" in err
    assert err.count("] style_weight=") == 1  # the cell done was shown
    assert err.rstrip().endswith(f"interrupted after 1 run of 3; nothing written to {sheet}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png", "style.jpg"]


@pytest.mark.parametrize("vary, message", [
    ("style_weight", "expected OPTION=VALUE,VALUE,..."),
    ("colour=1,2", "--vary unknown option 'colour'"),
    ("style_weight=a,b", "--vary style_weight: 'a' is not a valid value"),
    ("style_loss=gram,fancy", "--vary style_loss: expected one of"),
    ("style_weight=-1,2", "--vary style_weight: must be in [0, 1e+12] (got -1.0)"),
    ("flow=dis,farneback", "--vary flow: an option of jaxstyle video"),
])
def test_sweep_bad_values_are_one_line_errors(tmp_path, images, tiny_weights_file, capsys,
                                              vary, message):
    content, style = images
    code, err = _run(capsys, "sweep", content, style, "-o", tmp_path / "s.png", "--weights",
                     tiny_weights_file, "--vary", vary, "--size", 32, "--iterations", 2)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "s.png").exists()


def test_info_names_backend_versions_cache_and_weights(tiny_weights_file, capsys, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["info", "--weights", str(tiny_weights_file)]) == 0
    rows = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    rows = {name.strip(): value.strip() for name, value in rows.items()}
    assert rows["backend"] == "cpu" and rows["devices"].startswith("cpu:0")
    assert rows["jax"] == jax.__version__ and rows["jaxlib"]
    assert rows["compilation cache"] == f"on, {tmp_path / 'cache' / 'jaxstyle' / 'xla'}"
    assert rows["weights"] == f"{tiny_weights_file} (--weights)"
    assert rows["network"] == "VGG19" and rows["widths"] == "[8, 16, 32, 64, 64]"
    assert main(["info", "--weights", str(tmp_path / "missing.msgpack")]) == 0
    assert "weights file not found" in capsys.readouterr().out
