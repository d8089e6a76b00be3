"""A page that lasts: many short studio runs in one server, its memory, files and mappings.

Starts ``jaxstyle studio`` (the default weights: the converted network found, unless
``--weights``) and drives it over HTTP as the page does: `--runs` runs of a few iterations each,
cycling through `--sizes`, three example styles and three style strengths; every tenth run is
stopped after its first picture and the next one continues it; five sweeps of two cells are
spread over the session. After every run (and sweep) it samples the server process's resident
memory (VmRSS in /proc/PID/status), open files (/proc/PID/fd) and memory mappings (lines of
/proc/PID/maps), and the run folder's size on disk. It prints a row every 20 runs and the
verdict: whether RSS and the mapping count at the end are within 10 % of their level after the
first 20 runs (the first 20 see every size and style once, so compiling is mostly done).

    python benchmarks/studio_soak.py                      # 200 runs at 64, 96, 128, 160 px
    python benchmarks/studio_soak.py --runs 40 --sizes 64,96
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from studio import start_server  # benchmarks/studio.py, beside this script

from jaxstyle.presets import BALANCED_STYLE_STRENGTH

ROOT = Path(__file__).resolve().parents[1]

STYLES = ("marbled", "mosaic", "strokes")
STRENGTHS = (BALANCED_STYLE_STRENGTH, BALANCED_STYLE_STRENGTH / 2, BALANCED_STYLE_STRENGTH * 2)
SWEEPS = 5
EVERY = 20  # runs between rows of the table, and the baseline's run
TOLERANCE = 0.10  # the verdict: the end within 10 % of the level after the first `EVERY` runs


def sample(pid: int, folder: Path) -> dict:
    """The server process's RSS (MB), open files, mappings, and the run folder's MB on disk."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    with open(f"/proc/{pid}/maps") as maps:
        mappings = sum(1 for _ in maps)
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    return {"rss": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")), "maps": mappings,
            "disk": disk}


def follow(client: httpx2.Client, job: int, stop_after_picture: bool = False) -> dict:
    """Reads a job's snapshots until it ends (asking it to stop at its first picture if told);
    returns the last one."""
    last = None
    with client.stream("GET", f"/api/jobs/{job}/events", timeout=None) as events:
        for line in events.iter_lines():
            if not line.startswith("data: "):
                continue
            last = json.loads(line[len("data: "):])
            if stop_after_picture and last["frame"] and last["status"] == "running":
                client.post("/api/stop").raise_for_status()
                stop_after_picture = False
    return last


def submit(client: httpx2.Client, path: str, body: dict) -> int:
    answer = client.post(path, json=body)
    if answer.status_code != 202:
        raise SystemExit(f"{path}: {answer.status_code} {answer.text}")
    return answer.json()["job"]["job"]


def soak(client: httpx2.Client, pid: int, folder: Path, runs: int, sizes: list[int],
         iterations: int, log=print) -> list[dict]:
    """Runs the session; returns one sample per run or sweep, each with what it was."""
    samples: list[dict] = []
    # After which runs the sweeps come, evenly spread (two after one run in a short session).
    sweep_after = collections.Counter(max(1, runs * (k + 1) // (SWEEPS + 1))
                                      for k in range(SWEEPS))
    started, stopped = time.perf_counter(), None
    try:
        for i in range(runs):
            stopped = one_run(client, pid, folder, i, runs, sizes, iterations, samples, stopped,
                              sweep_after, started)
            if (i + 1) % EVERY == 0 or i + 1 == runs:
                log(row(samples[-1]))
    except KeyboardInterrupt:  # Ctrl-C: the figures so far, and the verdict on them
        if samples:
            log(row(samples[-1]))
        log(f"interrupted during run {len(samples) and samples[-1]['run'] + 1}")
    return samples


def one_run(client: httpx2.Client, pid: int, folder: Path, i: int, runs: int,
            sizes: list[int], iterations: int, samples: list[dict], stopped: int | None,
            sweep_after: collections.Counter, started: float) -> int | None:
    """Run `i` (and the sweeps after it), each sampled into `samples`; returns the job that
    the next continue continues."""
    size, style = sizes[i % len(sizes)], STYLES[(i // len(sizes)) % len(STYLES)]
    strength = STRENGTHS[(i // (len(sizes) * len(STYLES))) % len(STRENGTHS)]
    request = {"content": "chelsea", "styles": [style],
               "options": {"size": size, "iterations": iterations,
                           "style_strength": strength}}
    if i % 10 == 4 and stopped is not None:  # the newest run, a sweep or not between
        kind = "continued"
        job = submit(client, f"/api/jobs/{stopped}/continue", {"iterations": iterations})
        last = follow(client, job)
    elif i % 10 == 3:
        request["options"]["iterations"] = 50 * iterations  # stopped long before its end
        job = submit(client, "/api/runs", request)
        last = follow(client, job, stop_after_picture=True)
        kind, stopped = "stopped", job
    else:
        job = submit(client, "/api/runs", request)
        last = follow(client, job)
        kind = "run"
    if last["status"] not in ("done", "stopped"):
        raise SystemExit(f"run {i + 1} ({kind}) {last['status']}: {last['message']}")
    samples.append({"run": i + 1, "what": kind, "job": job, "size": size,
                    "seconds": time.perf_counter() - started, **sample(pid, folder)})
    for _ in range(sweep_after[i + 1]):
        job = submit(client, "/api/sweeps", {**request, "vary": [
            f"style_strength={STRENGTHS[1]:g},{STRENGTHS[2]:g}"]})
        last = follow(client, job)
        if last["status"] != "done":
            raise SystemExit(f"sweep after run {i + 1}: {last['status']}: {last['message']}")
        samples.append({"run": i + 1, "what": "sweep", "job": job, "size": size,
                        "seconds": time.perf_counter() - started, **sample(pid, folder)})
    return stopped


HEADER = (f"{'runs':>5} | {'minutes':>7} | {'RSS MB':>7} | {'open files':>10} | "
          f"{'mappings':>8} | {'run folder MB':>13}")


def row(s: dict) -> str:
    return (f"{s['run']:5d} | {s['seconds'] / 60:7.1f} | {s['rss']:7.0f} | {s['fds']:10d} | "
            f"{s['maps']:8d} | {s['disk']:13.1f}")


def verdict(samples: list[dict]) -> tuple[bool, str]:
    """Whether RSS and the mapping count at the end are within `TOLERANCE` of their level
    after the first `EVERY` runs (or after the first run, in a session shorter than that)."""
    runs = [s for s in samples if s["what"] != "sweep"]
    base = runs[min(EVERY, len(runs)) - 1]
    end = samples[-1]
    parts, ok = [], True
    for key, name in (("rss", "RSS"), ("maps", "mappings")):
        change = end[key] / base[key] - 1
        ok &= abs(change) <= TOLERANCE
        parts.append(f"{name} {base[key]:.0f} -> {end[key]:.0f} ({change:+.1%})")
    word = "flat" if ok else "GROWING"
    return ok, (f"verdict: {word}: after run {base['run']} -> after run {end['run']}: "
                f"{', '.join(parts)}; within {TOLERANCE:.0%}: {'yes' if ok else 'no'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sizes", default="64,96,128,160",
                        help="comma-separated sizes (longest side, px), cycled through")
    parser.add_argument("--iterations", type=int, default=4, help="iterations of each run")
    parser.add_argument("--weights", default=None, help="as for jaxstyle studio")
    parser.add_argument("--disk-budget-mb", type=float, default=None,
                        help="the server's run-folder budget (jaxstyle studio's flag)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.runs < 1 or not sizes or min(sizes) < 16:
        parser.error("--runs must be >= 1 and --sizes at least 16 px each")
    extra = [] if args.weights is None else ["--weights", args.weights]
    if args.disk_budget_mb is not None:
        extra += ["--disk-budget-mb", str(args.disk_budget_mb)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        process, url = start_server(Path(tmp) / "cache", folder, extra)
        try:
            client = httpx2.Client(base_url=url, timeout=600)
            while (state := client.get("/api/state").json())["network"] is None:
                if state["network_error"]:
                    raise SystemExit(state["network_error"])
                time.sleep(0.2)
            print(f"network: {state['network']}; {args.runs} runs of {args.iterations} "
                  f"iterations at {args.sizes} px, styles {', '.join(STYLES)}, {SWEEPS} sweeps; "
                  f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[1]:.1f}")
            print(f"at start: {row({'run': 0, 'seconds': 0, **sample(process.pid, folder)})}")
            print(HEADER)
            samples = soak(client, process.pid, folder, args.runs, sizes, args.iterations)
            kinds = [s["what"] for s in samples]
            print(f"jobs: {len(kinds) - kinds.count('sweep')} runs ({kinds.count('stopped')} "
                  f"stopped at their first picture, {kinds.count('continued')} continued), "
                  f"{kinds.count('sweep')} sweeps of 2 cells")
            ok, text = verdict(samples)
            print(text)
        finally:
            process.terminate()
            process.wait(30)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
