"""The benchmark scripts run (at tiny sizes), so that they cannot rot before the machine they
are for is at hand."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_accelerator_script_runs_at_a_tiny_size(tiny_weights_file):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "accelerator.py"), "--size", "48",
         "--iterations", "3", "--batches", "1,2", "--batch-iterations", "2", "--largest",
         "64,128", "--weights", str(tiny_weights_file)],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for route in ("neural-style (unit steps)", "fast, float32", "fast, bfloat16", "balanced"):
        assert route in out
    assert "largest single-pass output (longest side, neural-style's route): 128 px" in out
    assert "batch   1:" in out and "batch   2:" in out and "images/s" in out


@pytest.mark.slow
def test_race_times_jaxstyle_to_a_loss(tiny_weights_file, tmp_path):
    """The neural-style-pt race's jaxstyle half (the peer is optional): a fresh process, its
    loss after each iteration, and the first iteration and time it reached a given loss."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import neural_style_pt as race

    examples = ROOT / "examples"
    run = race.run_jaxstyle(str(examples / "chelsea.jpg"), str(examples / "marbled.jpg"),
                            tiny_weights_file, 48, tmp_path / "out.png", {"iterations": 30})
    assert (tmp_path / "out.png").is_file()
    history, marks = run["history"], run["marks"]
    assert marks[-1][0] == len(history) and run["final"] == pytest.approx(history[-1], rel=1e-5)
    assert all(0 < a[1] <= b[1] <= run["wall"] for a, b in zip(marks, marks[1:]))
    target = history[14]
    first = next(i for i, total in enumerate(history, 1) if total <= target)
    iteration, seconds = race.seconds_to_reach(run, target, 1.0)
    chunk = next(k for k, (mark, _) in enumerate(marks) if mark >= first)
    before = marks[chunk - 1][1] if chunk else 0.0
    assert iteration == first and before <= seconds <= marks[chunk][1]
    assert race.seconds_to_reach(run, target, 0.5) <= (iteration, seconds)  # counted half
    assert race.seconds_to_reach(run, min(history) / 2, 1.0) is None


@pytest.mark.slow
def test_race_scores_each_output_at_its_own_size(tiny_weights_file, tmp_path):
    """The two tools round an output's short side differently (coffee.jpg at 384 px: 255x384
    against 256x384): the race's scorer builds the content target at each file's own size,
    after it has compiled its timed gradient. (The expected value is built from the same
    library calls: this checks the shape handling, not the loss.)"""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import neural_style_pt as race

    from jaxstyle import StyleOptions, load_image, load_weights, losses, save_image
    from jaxstyle.resampling import fit_longest_side, resize
    from jaxstyle.targets import content_targets, style_targets

    content, style = str(ROOT / "examples" / "coffee.jpg"), str(ROOT / "examples" / "mosaic.jpg")
    score, gflop, seconds = race.neural_style_scorer(content, style, tiny_weights_file, 48)
    assert gflop > 0 and seconds > 0
    weights = load_weights(tiny_weights_file)
    options = StyleOptions(preset="neural-style")
    pre, config = weights.preprocessing, options.loss_config()
    style_image = load_image(style)
    style_rgb = resize(style_image, *fit_longest_side(style_image.shape, 48))
    styles = (style_targets(weights.params, [pre.to_model(style_rgb)], config),)
    photo = load_image(content)
    h, w = fit_longest_side(photo.shape, 48)
    for rows in (h, h - 1):
        png = tmp_path / f"{rows}.png"
        save_image(png, np.asarray(resize(photo, rows, w)) ** 2)
        x = pre.to_model(load_image(png))
        targets = losses.Targets(
            content_targets(weights.params, pre.to_model(resize(photo, rows, w)), config),
            styles, weights=options.loss_weights())
        want = float(losses.objective(x, weights.params, targets, config)[0])
        assert score(png) == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_bfloat16_benchmark_runs_at_a_tiny_size(tiny_weights_file):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bfloat16.py"), "--size", "48", "--repeats",
         "1", "--iterations", "2", "--weights", str(tiny_weights_file)],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("Winograd bf16 products", "direct bf16", "float32 loss"):
        assert row in done.stdout


@pytest.mark.slow
def test_evaluation_profile_splits_the_loop_by_layer(tiny_weights_file, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "evaluation_profile.py"), "--size", "48",
         "--iterations", "3", "--weights", str(tiny_weights_file), "--content",
         str(ROOT / "examples" / "chelsea.jpg"), "--style", str(ROOT / "examples" / "marbled.jpg"),
         "--json", str(tmp_path / "profile.json")],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "forward products" in lines[1] and lines[-1].startswith("wall time ")
    # The printed table rounds to 0.1 ms, which the tiny network's kernels round to zero: check
    # the unrounded one. Each convolution has its products forward and backward.
    table = json.loads((tmp_path / "profile.json").read_text())["ms_per_evaluation"]
    for layer in ("conv1_1", "conv1_2", "conv2_1", "conv5_1"):
        assert any(line.split()[0] == layer for line in lines[2:-1])
        assert {"forward products", "backward products"} <= set(table[layer])
        assert sum(table[layer].values()) > 0
    losses = next(row for row in table if row.startswith("losses"))
    optimizer = next(row for row in table if row.startswith("optimizer"))
    assert sum(table[losses].values()) > 0 and sum(table[optimizer].values()) > 0


@pytest.mark.slow
def test_convolutions_benchmark_times_every_variant_and_each_one_convolves():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "convolutions.py"), "--shapes",
         "8x6x16,5x4x8x24", "--repeats", "1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if "->" in line]
    assert len(rows) == 2
    for row in rows:
        errors = [float(e) for e in re.findall(r"\(([0-9.e+-]+)\)", row)]
        # direct, im2col, F(2x2), F(4x4), F(6x6): the Cook-Toom F(6x6) convolves correctly too
        assert len(errors) == 5 and max(errors) < 1e-4, row


@pytest.mark.slow
def test_xla_options_benchmark_compares_the_options_and_their_gradients():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "xla_options.py"), "--size", "32", "--rounds",
         "2", "--weights", "random", "--options",
         '{"fast_math": {"xla_cpu_enable_fast_math": true}}'],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {m[0]: float(m[1]) for m in re.findall(r"(\w+): median .* differs by ([0-9.e+-]+)",
                                                  done.stdout)}
    assert set(rows) == {"none", "ynn_convolutions", "fast_math"}, done.stdout
    assert rows["none"] == 0 and rows["ynn_convolutions"] < 1e-5, done.stdout  # the same objective


@pytest.mark.slow
def test_first_picture_times_each_step_before_it(tiny_weights_file):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "first_picture.py"), "--size", "160",
         "--weights", str(tiny_weights_file)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = re.fullmatch(r"first picture at 160 px after ([\d.]+) s: stage_scales ([\d.]+) s, "
                         r"stage_problem ([\d.]+) s, compile_first ([\d.]+) s, run_stage "
                         r"([\d.]+) s, the rest \(checks, memory, plan\) (-?[\d.]+) s\n",
                         done.stdout)
    assert steps, done.stdout
    total, *parts = map(float, steps.groups())
    # Two scales at 160 px (80, then 160): the first compiled before the later is prepared.
    assert all(p > 0 for p in parts[:4]) and sum(parts) == pytest.approx(total, abs=0.03)


@pytest.mark.slow
def test_time_to_picture_reports_each_pairs_scales_time_and_quality(tiny_weights_file, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "time_to_picture.py"), "--size", "96",
         "--only", "chelsea/marbled", "--reference", "0", "--out", str(tmp_path), "--",
         "--weights", str(tiny_weights_file), "--coarsest", "48", "--finest-iterations", "2"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| chelsea/marbled"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # Two scales (48, 96 px) with their iterations, a wall time, and the quality figures.
    assert cells[1].startswith("4 at 48 px") and "2 at 96 px" in cells[1], row
    assert cells[2].endswith("s (cold)") and float(cells[5]) >= 0 and float(cells[6]) > 0


@pytest.mark.slow
def test_studio_soak_runs_stops_continues_sweeps_and_samples(tiny_weights_file):
    """Five runs at two sizes (the fourth stopped at its first picture, the fifth continuing
    it) and five sweeps through a real server; a row of the table and the verdict."""
    pytest.importorskip("starlette", reason="the studio extra is not installed")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "studio_soak.py"), "--runs", "5", "--sizes",
         "32,48", "--iterations", "2", "--weights", str(tiny_weights_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "RSS MB | open files | mappings | run folder MB" in out
    rows = [line.split("|") for line in out.splitlines() if re.match(r"\s+5 \|", line)]
    assert len(rows) == 1 and int(rows[0][3]) > 0 and int(rows[0][4]) > 100, out
    assert re.search(r"verdict: flat: after run 5 -> after run 5: RSS \d+ -> \d+ \(\+0\.0%\)",
                     out)
    assert "jobs: 5 runs (1 stopped at their first picture, 1 continued), 5 sweeps" in out
