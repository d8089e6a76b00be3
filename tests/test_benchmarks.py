"""The benchmark scripts run (at tiny sizes), so that they cannot rot before the machine they
are for is at hand."""

import subprocess
import sys
from pathlib import Path

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
def test_bfloat16_benchmark_runs_at_a_tiny_size(tiny_weights_file):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bfloat16.py"), "--size", "48", "--repeats",
         "1", "--iterations", "2", "--weights", str(tiny_weights_file)],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("Winograd bf16 products", "direct bf16", "float32 loss"):
        assert row in done.stdout
