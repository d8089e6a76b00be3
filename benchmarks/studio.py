"""The studio's speed and memory: time to the first picture of a first and a second run, how
often the picture refreshes, the server's peak memory; optionally a screenshot of the page.

Starts ``jaxstyle studio`` (the default weights: the converted network found) with an empty XLA
compilation cache, then through its API runs chelsea.jpg in the style of marbled.jpg three
times at the same size: a first run, the same settings again, and the same with another style
strength (half the default's); then coffee.jpg in the style of mosaic.jpg (a nearby shape: its
coarse scale is in chelsea's shape bucket), and, in a new server with the compilation cache the
first one filled, chelsea/marbled again (a person's next session). The first-picture and
whole-run times are the server's own (from submission; the first picture comes after the first
iteration); the refresh interval is the time between new pictures as a client that fetches each
one sees it. Peak memory is the server process's VmHWM.

    python benchmarks/studio.py                               # 384 px, 30 iterations a run
    python benchmarks/studio.py --screenshot docs/studio.png  # and a picture of the page
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2

from jaxstyle.presets import BALANCED_STYLE_STRENGTH

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def start_server(cache: Path, folder: Path, extra: Sequence[str] = ()
                 ) -> tuple[subprocess.Popen, str]:
    """``jaxstyle studio`` (with `extra` flags) on a free port, its XLA compilation cache in
    `cache`, its files in `folder`; the process and its address."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "studio", "--port", "0",
                                "--dir", str(folder), *extra], stderr=subprocess.PIPE,
                               text=True, env=env)
    first = process.stderr.readline()
    if not first.startswith("jaxstyle studio: "):
        raise SystemExit(f"the studio did not start: {first}{process.stderr.read()}")
    threading.Thread(target=lambda: [print("  server:", line.rstrip(), file=sys.stderr)
                                     for line in process.stderr], daemon=True).start()
    return process, first.split(": ", 1)[1].strip()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(client: httpx2.Client, options: dict, pid: int,
        pair: tuple[str, str] = ("chelsea", "marbled")) -> dict:
    """One run of the studio's example images `pair` (content, style) through the API,
    fetching each new picture as the page does; returns its figures (``cores``: the CPU the
    server got, in cores, on a shared machine)."""
    cpu, wall = cpu_seconds(pid), time.perf_counter()
    answer = client.post("/api/runs", json={"content": pair[0], "styles": [pair[1]],
                                            "options": options})
    answer.raise_for_status()
    job = answer.json()["job"]["job"]
    shown, arrivals, last = 0, [], None
    with client.stream("GET", f"/api/jobs/{job}/events", timeout=None) as events:
        for line in events.iter_lines():
            if not line.startswith("data: "):
                continue
            last = json.loads(line[len("data: "):])
            if last["frame"] > shown and last["status"] in ("running", "stopping"):
                picture = client.get(f"/api/jobs/{job}/frame.png")
                shown = int(picture.headers["x-frame"])
                arrivals.append((time.perf_counter(), last["iteration"]))
    cores = (cpu_seconds(pid) - cpu) / (time.perf_counter() - wall)
    report = client.get(f"/api/jobs/{job}/report.json").json()
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals[1:])]  # after the first one
    return {"job": job, "first_picture": last["first_frame"], "status": last["status"],
            "iterations": last["iteration"], "refresh": statistics.median(gaps) if gaps else None,
            "per_iteration": report["timings_seconds"].get("per_iteration"),
            "wall": last["elapsed"], "cores": cores}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def screenshot(url: str, path: Path, size: int) -> None:
    """The page during a run at `size` px, chosen and started through the page itself."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(600_000)
        page.goto(url)
        page.select_option("#content-example", "chelsea")
        page.select_option("#style-example", "marbled")
        page.fill("#opt-size", str(size))
        page.fill("#opt-iterations", "300")
        page.click("#run")
        page.wait_for_selector("#preview[data-seq]")
        def done() -> int:
            text = page.text_content("#stat-iteration")
            return int(text.split("/")[0]) if "/" in text else 0

        while done() < 30:
            page.wait_for_timeout(500)
        page.wait_for_timeout(300)
        page.screenshot(path=str(path), full_page=False)
        page.click("#stop")
        page.wait_for_selector("#status[data-state='stopped']")
        browser.close()


def connect(url: str) -> httpx2.Client:
    """A client of the studio at `url`, once it has opened its network."""
    client = httpx2.Client(base_url=url, timeout=600)
    while client.get("/api/state").json()["network"] is None:
        time.sleep(0.2)
    print(f"network: {client.get('/api/state').json()['network']}")
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    options = {"size": args.size, "iterations": args.iterations}
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(Path(tmp) / "cache", Path(tmp) / "run")
        try:
            client = connect(url)
            pid = process.pid
            figures = [("first run (empty compilation cache)", run(client, options, pid)),
                       ("second run, same settings", run(client, options, pid)),
                       ("third run, another style strength", run(
                           client, {**options, "style_strength": BALANCED_STYLE_STRENGTH / 2},
                           pid)),
                       # 512x341 against chelsea's 451x300: the same coarse shape bucket.
                       ("coffee/mosaic, a nearby shape", run(client, options, pid,
                                                             ("coffee", "mosaic")))]
            print(f"server peak memory (VmHWM): {peak_rss_mb(process.pid):.0f} MB")
        finally:
            process.terminate()
            process.wait(30)
        # A person's next session: a new server, the compilation cache the first one filled.
        process, url = start_server(Path(tmp) / "cache", Path(tmp) / "run2")
        try:
            figures.append(("first run of a new server (warm cache)",
                            run(connect(url), options, process.pid)))
            print(f"chelsea.jpg in the style of marbled.jpg at {args.size} px, "
                  f"{args.iterations} iterations a run, {os.cpu_count()} CPU cores, load average "
                  f"{os.getloadavg()[1]:.1f} over the last 5 minutes")
            print(f"{'run':>36} | first picture | whole run | refresh | per iteration | "
                  "CPU it got")
            for name, f in figures:
                refresh = f"{f['refresh']:.2f} s" if f["refresh"] else "-"
                print(f"{name:>36} | {f['first_picture']:11.2f} s | {f['wall']:7.1f} s | "
                      f"{refresh:>7} | {f['per_iteration']:11.3f} s | {f['cores']:.2f} cores")
            if args.screenshot:
                screenshot(url, args.screenshot, args.size)
                print(f"wrote {args.screenshot}")
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
