"""Fuzzing the weights readers: thousands of mutated ``.pth`` (zip and legacy), converted and ONNX
files, read by `load_weights` in a child process whose memory is bounded (`weights_fuzzer`).

Every file must load or be refused with a `WeightsError` of one line naming the file; nothing
else may escape, the child may not die, and its peak resident memory may grow by at most
`PEAK_BOUND` (the files are a few kB; the readers' own caps allow far more, and the crafted
cases in test_weights.py test those). The default budget, 3,000 cases (the slow-marked `full`
case; the quick suite's `quick` case runs 300), takes about 20 s on a 2-core machine; a longer
one, or another seed:

    JAXSTYLE_FUZZ_CASES=100000 JAXSTYLE_FUZZ_SEED=7 python -m pytest tests/test_weights_fuzz.py

A failing file is kept in the test's temporary folder (``work/failure<N>.<suffix>``), and one that
killed the child is ``work/case.<suffix>``; the seed and the count reproduce the run.
"""

import os
import sys

import pytest
from weights_fuzzer import SUFFIXES, run_child, seed_files

CASES = int(os.environ.get("JAXSTYLE_FUZZ_CASES", "3000"))
QUICK_CASES = int(os.environ.get("JAXSTYLE_FUZZ_CASES", "300"))
"""The quick suite's budget (its every check holds at 300 for seeds 0 to 2); CI runs both."""
SEED = int(os.environ.get("JAXSTYLE_FUZZ_SEED", "0"))
PEAK_BOUND = 256 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the child bounds its memory through /proc and RLIMIT_AS (Linux)")
@pytest.mark.parametrize("cases", [pytest.param(QUICK_CASES, id="quick"),
                                   pytest.param(CASES, id="full", marks=pytest.mark.slow)])
def test_mutated_weights_files_load_or_are_refused_in_one_line(tmp_path, cases):
    seeds = seed_files(tmp_path / "seeds")
    work = tmp_path / "work"
    report = run_child("fuzz", str(tmp_path / "seeds"), str(cases), str(SEED), str(work),
                       timeout=60 + cases / 10)
    assert "died" not in report, f"{report['died']}\nit was reading {work}/case.*"
    assert report["cases"] == cases
    assert report["failure_count"] == 0, report["failures"]
    assert report["peak_growth"] < PEAK_BOUND, report
    # Every format's mutants both load and are refused: they reach past the readers' first check.
    kinds = {kind.removeprefix("small-") for kind in seeds}
    assert kinds <= set(SUFFIXES)
    for kind in kinds:
        counts = report["outcomes"][kind]
        assert counts["ok"] > 0 and counts["refused"] > 0, (kind, counts)
    print(f"{report['cases']} files in {report['seconds']:.1f} s: {report['outcomes']}; peak "
          f"memory growth {report['peak_growth'] / 2**20:.1f} MiB; slowest {report['slowest']}")
