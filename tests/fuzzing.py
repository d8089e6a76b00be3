"""What the fuzzers share: a child process with bounded memory that reports in JSON lines,
interesting integers, and byte-level mutations.

Each fuzzer (`weights_fuzzer`, `image_fuzzer`, `checkpoint_fuzzer`, `studio_fuzzer`) is a
script its test runs as a child (`run_script`). The child limits its address space
(`RLIMIT_AS`) to what it maps after its imports plus `HEADROOM` (`bounded_memory`), so that
code that allocates without limit fails there instead of taking the machine, and reports its
peak resident memory: the growth since the fuzzing began (``VmHWM``, reset through
``/proc/self/clear_refs``) and the whole process's peak (``resource.getrusage``).
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HEADROOM = 1 << 30  # address space the child may add to what it holds after its imports

# Integers that make readers' arithmetic go wrong: signs, widths' edges, the readers' caps.
INTERESTING = (0, 1, 2, 3, 4, 7, 8, 16, 64, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFF, 2**28, 2**28 + 1, 2**31, 2**32, 2**53, 2**62, 2**63 - 1,
               2**63, 2**64 - 1, -1, -2, -3, -2**31, -2**63, 40000, 50000, 4_000_000, 10**9)


def run_script(script: str | Path, *args: str, timeout: float = 600) -> dict:
    """Runs a fuzzer `script` as a child process with `args` and returns its report: the last
    JSON line it printed, with "results" listing the lines before it and, if the child died (a
    signal, an error outside the code fuzzed), "died" saying how."""
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(script).parent, check=False)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    report = {"results": lines[:-1]} | lines[-1] if lines else {"results": []}
    if done.returncode != 0:
        report = {"results": lines} | {
            "died": f"exit status {done.returncode}; stderr: {done.stderr[-2000:]}"}
    return report


def integer(rng: random.Random) -> int:
    """An `INTERESTING` integer (mostly) or a small one."""
    return rng.choice(INTERESTING) if rng.random() < 0.8 else rng.randrange(-10, 100)


def tree_slots(tree) -> list[tuple[object, object]]:
    """(container, key) of every value in a tree of dicts and lists, for a mutation to pick."""
    found = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            found.append((node, key))
            if isinstance(value, (dict, list)):
                walk(value)

    walk(tree)
    return found


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to four byte-level mutations: bit flips, random bytes, interesting integers, cuts,
    insertions, copies, truncation."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4))):
        i = rng.randrange(len(b) + 1)
        k = rng.choice((1, 2, 4, 8, 16, 64))
        action = rng.randrange(7)
        if action == 0 and i < len(b):
            b[i] ^= 1 << rng.randrange(8)
        elif action == 1 and i < len(b):
            b[i] = rng.randrange(256)
        elif action == 2:
            width = rng.choice((1, 2, 4, 8))
            b[i : i + width] = (integer(rng) % (1 << 8 * width)).to_bytes(width, "little")
        elif action == 3:
            del b[i : i + k]
        elif action == 4:
            b[i:i] = rng.randbytes(k)
        elif action == 5 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + k]
        else:
            del b[i:]
    return bytes(b)


def _status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def peak_rss() -> int:
    """The process's peak resident memory in bytes, imports included (``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@contextlib.contextmanager
def bounded_memory():
    """Limits the address space to what is mapped now plus `HEADROOM` and resets the peak
    resident size; yields a function that returns the peak's growth in bytes since (where the
    peak cannot be reset, its growth beyond the peak so far: an underestimate)."""
    import resource  # POSIX only, like /proc: the tests that use the child skip elsewhere

    start = _status()
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = start["VmSize"] + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY
                                            else min(soft, hard), hard))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the resident size
        base = start["VmRSS"]
    except OSError:
        base = start["VmHWM"]
    yield lambda: _status()["VmHWM"] - base


def summary(cases: int, failures: list[dict], growth: int, started: float, slowest: tuple,
            **fields) -> dict:
    """A fuzzer child's report: `cases` run, what it counted (`fields`), the first failures and
    their kinds (each problem up to its " at " location), memory and time."""
    kinds = Counter(f["problem"].split(" at ")[0][:120] for f in failures)
    return {"cases": cases, **fields, "failures": failures[:30],
            "failure_count": len(failures), "kinds": dict(kinds.most_common()),
            "peak_growth": growth, "peak_rss": peak_rss(),
            "seconds": time.perf_counter() - started, "slowest": slowest}


def main(fuzz) -> None:
    """A fuzzer script's entry: ``SEEDS CASES SEED WORK`` on the command line, its report as
    JSON on standard output (what `run_script` reads)."""
    sys.path.insert(0, str(Path(__file__).parent))
    seeds, cases, seed, work = sys.argv[1:5]
    print(json.dumps(fuzz(seeds, int(cases), int(seed), work)))
