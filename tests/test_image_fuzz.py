"""Fuzzing the image readers: thousands of mutated files of every format of `IMAGE_FORMATS`
(bit flips, truncation, header fields, huge dimensions), read by `load_image` and `load_mask` in
a child process whose memory is bounded (`image_fuzzer`).

Every file must load as a float32 picture in [0, 1] within the pixel limit, or be refused with a
`JaxstyleError` of one line naming the file; nothing else may escape, no warning may leak, the
child may not die, and its peak resident memory may grow by at most `PEAK_BOUND` (the files are
read with `image_fuzzer.MAX_PIXELS`, 1,000,000, as the limit: 12 MB decoded). The default
budget, 3,000 cases (the slow-marked `full` case; the quick suite's `quick` case runs 300),
takes about 10 s on a 2-core machine; a longer one, or another seed:

    JAXSTYLE_FUZZ_CASES=20000 JAXSTYLE_FUZZ_SEED=7 python -m pytest tests/test_image_fuzz.py -s

A failing file is kept in the test's temporary folder (``work/failure<N>-<seed>.<format>``), and
one that killed the child is ``work/case.<format>``; the seed and the count reproduce the run.
"""

import os
import sys

import pytest
from image_fuzzer import run_child, seed_files

from jaxstyle.images import IMAGE_FORMATS

CASES = int(os.environ.get("JAXSTYLE_FUZZ_CASES", "3000"))
QUICK_CASES = int(os.environ.get("JAXSTYLE_FUZZ_CASES", "300"))
"""The quick suite's budget (its every check holds at 300 for seeds 0 to 2); CI runs both."""
SEED = int(os.environ.get("JAXSTYLE_FUZZ_SEED", "0"))
PEAK_BOUND = 256 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the child bounds its memory through /proc and RLIMIT_AS (Linux)")
@pytest.mark.parametrize("cases", [pytest.param(QUICK_CASES, id="quick"),
                                   pytest.param(CASES, id="full", marks=pytest.mark.slow)])
def test_mutated_images_load_or_are_refused_in_one_line(tmp_path, cases):
    seed_files(tmp_path / "seeds")
    work = tmp_path / "work"
    report = run_child(str(tmp_path / "seeds"), str(cases), str(SEED), str(work),
                       timeout=60 + cases / 20)
    assert "died" not in report, f"{report['died']}\nit was reading {work}/case.*"
    assert report["cases"] == cases
    assert report["failure_count"] == 0, (report["kinds"], report["failures"])
    assert report["peak_growth"] < PEAK_BOUND, report
    # Every format's mutants both load and are refused: they reach past the readers' first check.
    for fmt in IMAGE_FORMATS:
        counts = report["outcomes"][fmt]
        assert counts["ok"] > 0 and counts["refused"] > 0, (fmt, counts)
    print(f"{report['cases']} images in {report['seconds']:.1f} s: {report['outcomes']}; peak "
          f"memory growth {report['peak_growth'] / 2**20:.1f} MiB (process peak "
          f"{report['peak_rss'] / 2**20:.0f} MiB); slowest {report['slowest']}")
