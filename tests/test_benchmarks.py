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
