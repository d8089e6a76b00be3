"""Sends the studio's API random and extreme requests, in process (Starlette's test client, as
tests/test_studio.py does) in a child process with bounded memory (`fuzzing.bounded_memory`).

    python tests/studio_fuzzer.py WEIGHTS CASES SEED FOLDER  # CASES requests

Requests are drawn from a `random.Random(SEED)`, so a run is reproduced by its seed and count:
JSON bodies for every POST route (a valid run or sweep request with one field changed, removed
or added; random JSON of any type and depth; raw texts: deep nesting, ``NaN`` and ``Infinity``
literals, numbers past float's range and past Python's 4,300 digits, unicode digits, lone
surrogates, long strings, many keys, bytes that are no UTF-8), random job and image ids in the
GET routes' paths, and random bytes as uploads. No job runs: the worker refuses every request
that passes the checks as if busy (409), so each request costs its checks only.
"""

from __future__ import annotations

import json
import random
import re
import time
import traceback
from collections import Counter
from pathlib import Path

from fuzzing import bounded_memory, integer, main, mutate_bytes, run_script, summary, tree_slots

BASE = "http://127.0.0.1:8765"
POSTS = ("/api/check", "/api/runs", "/api/sweeps", "/api/stop", "/api/jobs/{job}/continue")
GETS = ("/api/jobs/{job}/events", "/api/jobs/{job}/frame.png", "/api/jobs/{job}/image.png",
        "/api/jobs/{job}/thumb.png", "/api/jobs/{job}/report.json",
        "/api/images/{image}/preview.png", "/api/state", "/api/masks/{image}/mask.png",
        "/api/jobs/{job}/masks/style-mask-1.png", "/api/jobs/{job}/masks/{image}")
RAW = ("", "{", "}", "null", "[]", "3", '"x"', "NaN", "Infinity", "-Infinity", "1e400", "-1e400",
       "1" * 5000, "[" * 20_000, "{" * 8000, '{"a": ' * 2000, '{"options": {"size": NaN}}',
       '{"options": {"size": 1e400}}', '{"iterations": Infinity}', '{"iterations": -0}',
       '{"iterations": 1e-400}', '{"iterations": ' + "9" * 5000 + "}", '{"options": "\\ud800"}',
       '{"content": "\\ud800", "styles": ["\\udfff"]}', '{"options": {"\\ud800": 1}}',
       '{"a": 1, "a": 2}', "\ufeff{}", '{"options": {"size": "١٢٨"}}', '{"iterations": "٣"}',
       '{"options": {"style_blend_weights": "1,,2"}}', '{"vary": "seed=' + "1," * 3000 + '1"}')


def run_child(*args: str, timeout: float = 600) -> dict:
    """Runs this file as a child process with `args` and returns its report."""
    return run_script(__file__, *args, timeout=timeout)


def _extreme(rng: random.Random, depth: int = 0):
    """A JSON value of any type, extreme ones often (containers nest up to 8 deep)."""
    if depth < 8 and rng.random() < 0.25:
        if rng.random() < 0.5:
            return [_extreme(rng, depth + 1) for _ in range(rng.randint(1, 4))]
        return {rng.choice(("options", "content", "styles", "vary", "iterations", "size", "",
                            "style_masks", "content_mask")):
                _extreme(rng, depth + 1)}
    return rng.choice((None, True, False, 0, -1, 1, 2**31, 2**63, -2**63, 2**64, 10**300, 0.5,
                       -0.0, 1e308, -1e308, 5e-324, "", " ", "x" * rng.choice((10, 1000, 8000)),
                       "١٢٣", "²", "1,,2", "nan", "inf", "-1", "1e400", "0x10", "true", "\u0000",
                       "../etc/passwd", "gram", "lbfgs", "seed=1,2", integer(rng), [], {}))


def _mutate(tree, rng: random.Random, names: list[str]):
    """A request with one entry somewhere deleted, replaced by an extreme value, or added."""
    node, key = rng.choice(tree_slots(tree))
    action = rng.randrange(4)
    if action == 0 and isinstance(node, dict):
        del node[key]
    elif action == 1 and isinstance(node, dict):
        node[rng.choice(names)] = _extreme(rng)
    elif action == 2 and isinstance(node, dict):
        for k in range(rng.choice((10, 300, 1000))):  # many keys
            node[f"k{k}"] = k
    else:
        node[key] = _extreme(rng)
    return tree


def bodies(rng: random.Random, images: list[str], names: list[str], masks: list[str] = ()):
    """Endless (method, path, body bytes, content type) requests; `masks`: mask ids."""
    from jaxstyle.studio import form

    fields = sorted(form.field_names())
    while True:
        route = rng.random()
        job = rng.choice(("1", "0", "2", "999999999", "1000000000", "²", "٣", "-1", "1.0", "%00",
                          "x" * 300, str(integer(rng)), "..", "%2e%2e"))
        if route < 0.08:
            path = rng.choice(GETS).format(job=job, image=rng.choice([*images, *masks, job]))
            yield "GET", path, b"", None
            continue
        if route < 0.12:
            data = mutate_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(64))), rng)
            yield "POST", rng.choice(("/api/images", "/api/masks")), data, None
            continue
        path = rng.choice(POSTS).format(job=job if rng.random() < 0.5 else "1")
        kind = rng.random()
        if kind < 0.15:
            text = rng.choice(RAW)
            yield "POST", path, text.encode("utf-8", "surrogatepass"), "application/json"
            continue
        if kind < 0.25:
            data = json.dumps(_extreme(rng)).encode()
        else:
            options = {name: rng.choice((_extreme(rng), None, 1, 64, "none", [1, 2]))
                       for name in rng.sample(fields, rng.randint(0, 4))}
            request = {"content": rng.choice(images), "options": options,
                       "styles": rng.sample(images, rng.randint(1, len(images))),
                       "vary": [f"{rng.choice(fields)}="
                                + ",".join(map(str, range(rng.randint(1, 40))))
                                for _ in range(rng.randint(1, 2))],
                       "iterations": rng.choice((1, 10, 10**7, 10**8))}
            if masks and rng.random() < 0.3:
                request["style_masks"] = [rng.choice([*masks, None])
                                          for _ in range(len(request["styles"]))]
                request["content_mask"] = rng.choice([*masks, None, None])
            for _ in range(rng.choice((0, 1, 1, 2, 3))):
                request = _mutate(request, rng, names + fields)
            try:
                data = json.dumps(request).encode()
            except (ValueError, TypeError):
                continue
        if rng.random() < 0.1:
            data = mutate_bytes(data, rng)
        yield "POST", path, data, rng.choice(("application/json", None, "text/plain"))


def _fuzz(weights: str, cases: int, seed: int, folder: str) -> dict:
    import io

    import numpy as np
    from PIL import Image
    from starlette.testclient import TestClient

    from jaxstyle.studio.server import StudioConfig, create_app
    from jaxstyle.studio.worker import Busy, Worker

    def refuse(self, request):
        raise Busy("fuzzing: no job is run")

    Worker.submit = refuse
    config = StudioConfig(Path(folder), 8765, weights=weights, log=lambda message: None)
    rng = random.Random(seed)
    statuses: dict[str, Counter] = {}
    failures, slowest, started = [], (0.0, ""), time.perf_counter()
    i = -1
    with TestClient(create_app(config), base_url=BASE) as client:
        images = []
        for k, size in enumerate(((24, 32), (30, 30))):
            buffer = io.BytesIO()
            pixels = np.random.default_rng(k).integers(0, 256, (*size, 3), np.uint8)
            Image.fromarray(pixels).save(buffer, format="PNG")
            response = client.post("/api/images", content=buffer.getvalue(),
                                   headers={"x-filename": f"seed{k}.png"})
            images.append(response.json()["image"]["id"])
        images += [e["id"] for e in client.get("/api/state").json()["images"]][:2]
        masks = []
        for k, value in enumerate((255, 0)):  # one white mask, one that covers nothing
            buffer = io.BytesIO()
            Image.new("L", (8 + k, 8), value).save(buffer, format="PNG")
            response = client.post("/api/masks", content=buffer.getvalue(),
                                   headers={"x-filename": f"mask{k}.png"})
            masks.append(response.json()["mask"]["id"])
        names = ["content", "styles", "options", "vary", "iterations", "", "extra"]
        with bounded_memory() as growth:
            requests = bodies(rng, images, names, masks)
            for i, (method, path, data, kind) in zip(range(cases), requests):
                headers = {"content-type": kind} if kind else {}
                if path in ("/api/images", "/api/masks"):
                    headers["x-filename"] = rng.choice(("a.png", "%ff", "..%2f..%2fx",
                                                        "%C3%A9" * 300))
                start, problem = time.perf_counter(), None
                try:
                    response = client.request(method, path, content=data or None, headers=headers)
                    status = response.status_code
                    if status >= 500:
                        problem = f"status {status}: {response.text[:300]}"
                    elif status >= 400 and response.headers.get("content-type", "").startswith(
                            "application/json") and not isinstance(
                            response.json().get("error"), str):
                        problem = f"status {status} without a message: {response.text[:300]}"
                except Exception as exc:  # noqa: BLE001 - what the test is for
                    status = "exception"
                    problem = (traceback.format_exception_only(exc)[-1].strip()[:300] + " at "
                               + traceback.format_tb(exc.__traceback__)[-1][:300])
                route = path.split("?")[0]
                route = re.sub(r"/masks/[^/]*$", "/masks/*", route) if "/jobs/" in route else route
                route = "/api/jobs/*/" + route.split("/", 4)[-1] if "/jobs/" in route else (
                    "/api/images/*/preview.png" if route.endswith("preview.png") else
                    "/api/masks/*/mask.png" if route.endswith("mask.png") else route)
                statuses.setdefault(route, Counter())[str(status)] += 1
                if problem is not None:
                    failures.append({"case": i, "method": method, "path": path,
                                     "body": data[:500].decode("utf-8", "replace"),
                                     "problem": problem})
                slowest = max(slowest, (time.perf_counter() - start, f"case {i} ({path})"))
            state = client.get("/api/state").status_code
            return summary(i + 1, failures, growth(), started, slowest,
                           statuses={k: dict(v) for k, v in statuses.items()},
                           state_after=state)


if __name__ == "__main__":
    main(_fuzz)
