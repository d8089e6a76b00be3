"""The studio's API, in process (Starlette's test client): the form from StyleOptions, runs that
stop and continue exactly, sweeps, bad uploads, and the guards at the door."""

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY_LAYERS, smooth_image
from PIL import Image

pytest.importorskip("starlette", reason="the studio extra is not installed")
from starlette.testclient import TestClient

from jaxstyle import StyleOptions, load_image, stylize
from jaxstyle.compiled import COMPILED
from jaxstyle.flags import as_flags
from jaxstyle.images import load_mask, to_uint8
from jaxstyle.option_fields import RANGES
from jaxstyle.options import OPTION_FIELDS
from jaxstyle.studio import form
from jaxstyle.studio.server import StudioConfig, create_app
from jaxstyle.studio.store import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
# Small and quick: the tiny VGG19's shallow layers at 32 px, a chunk every 2 iterations.
SMALL = {"preset": "neural-style", "size": 32, "progress_every": 2,
         **{name: list(layers) for name, layers in TINY_LAYERS.items()}}


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def client_for(tmp_path, tiny_weights_file):
    """Makes a started studio's test client (``with``: the worker thread runs)."""
    def make(**changes):
        config = StudioConfig(tmp_path / "studio", PORT, weights=str(tiny_weights_file),
                              log=lambda message: None)._replace(**changes)
        return TestClient(create_app(config), base_url=BASE)

    return make


@pytest.fixture
def client(client_for):
    with client_for() as c:
        yield c


def upload(client, image: np.ndarray, name: str) -> str:
    response = client.post("/api/images", content=png(image), headers={"x-filename": name})
    assert response.status_code == 200, response.text
    return response.json()["image"]["id"]


def inputs(client) -> dict:
    return {"content": upload(client, smooth_image(24, 32, 0), "content.png"),
            "styles": [upload(client, smooth_image(30, 30, 1), "style.png")]}


def follow(client, job: int) -> list[dict]:
    """Every snapshot the job's event stream sends; the stream ends when the job does."""
    found = []
    with client.stream("GET", f"/api/jobs/{job}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[len("data: "):]))
    assert found and found[-1]["status"] in ("done", "stopped", "failed"), found[-1:]
    return found


def start(client, path: str, request: dict) -> int:
    response = client.post(path, json=request)
    assert response.status_code == 202, response.text
    return response.json()["job"]["job"]


def test_form_is_read_from_style_options(client):
    schema = client.get("/api/state").json()["form"]
    fields = OPTION_FIELDS
    assert [f["name"] for f in schema["fields"]] == [n for n in form.FORM_OPTIONS if n in fields]
    for shown in [*schema["fields"], schema["blend"]]:
        field = fields[shown["name"]]
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        assert shown["default"] == default
        assert shown["help"] == as_flags(field.metadata["help"])
        assert shown["choices"] == list(field.metadata["choices"] or ())
        bounds = RANGES.get(shown["name"])  # the form's min and max are the options' own
        assert (shown["min"], shown["max"]) == ((bounds.low, bounds.high) if bounds
                                                else (None, None))
    assert schema["sweep"]["options"] and "size" not in schema["sweep"]["options"]
    # Values come back through the command line's parser.
    assert form.options_from_values({"size": "64", "style_loss": "mean_cov", "iterations": 7,
                                     "style_blend_weights": [1, 3], "preset": ""}) == \
        StyleOptions(size=64, style_loss="mean_cov", iterations=7, style_blend_weights=(1.0, 3.0))


def test_bad_options_name_their_field(client):
    refused = client.post("/api/check", json={"options": {"size": -5}})
    assert refused.status_code == 400 and refused.json()["field"] == "size"
    assert "size" in refused.json()["error"]
    wrong = client.post("/api/check", json={"options": {"style_loss": "nonsense"}})
    assert wrong.status_code == 400 and wrong.json()["field"] == "style_loss"
    assert client.post("/api/check", json={"options": {"size": 64}}).json()["error"] is None
    # A run whose inputs the CLI would refuse is refused before it is queued.
    request = {**inputs(client), "options": {**SMALL, "size": 1, "iterations": 2}}
    too_small = client.post("/api/runs", json=request)  # relu2_1 needs 2 px a side
    assert too_small.status_code == 400 and "too small" in too_small.json()["error"]


def test_stop_then_continue_ends_where_the_uninterrupted_run_does(client, tiny_weights,
                                                                  tmp_path, monkeypatch):
    from jaxstyle import pipeline

    calls = []  # (resume's iteration, the first iteration the callback saw) per stylize call

    def watched(*args, callback, resume=None, **kwargs):
        seen = []
        calls.append((resume and resume.iteration, seen))
        return stylize(*args, callback=lambda p: (seen.append(p.iteration), callback(p)),
                       resume=resume, **kwargs)

    monkeypatch.setattr(pipeline, "stylize", watched)
    request = {**inputs(client), "options": {**SMALL, "iterations": 40}}
    job = start(client, "/api/runs", request)
    client.post("/api/stop")  # before its first chunk ends: it stops after that chunk
    stopped = follow(client, job)
    assert stopped[-1]["status"] == "stopped" and stopped[-1]["iteration"] == 1
    record = stopped[-1]["record"]
    assert record["status"] == "stopped" and record["quality"]["style_gram_ratio"] > 0
    kept = Image.open(io.BytesIO(client.get(f"/api/jobs/{job}/image.png").content))
    assert kept.size == (32, 24)

    state = client.get("/api/state").json()
    assert [r["id"] for r in state["history"]] == [job] and state["history"][0]["can_continue"]
    again = start(client, f"/api/jobs/{job}/continue", {"iterations": 9})
    snapshots = follow(client, again)
    assert snapshots[-1]["status"] == "done" and snapshots[-1]["iteration"] == 10
    # It went on from the stopped run's state: iterations 2..10 only, not 1..10 again.
    assert [(resumed, seen[0]) for resumed, seen in calls] == [(None, 1), (1, 2)]
    frames = [s["frame"] for s in snapshots]
    assert frames == sorted(frames) and frames[-1] >= 3

    # Bit for bit the run that was never stopped (the PNGs hold 8 bits of it).
    content_file, style_file = tmp_path / "c.png", tmp_path / "s.png"
    content_file.write_bytes(png(smooth_image(24, 32, 0)))
    style_file.write_bytes(png(smooth_image(30, 30, 1)))
    options = form.options_from_values({**SMALL, "iterations": 10})
    whole = stylize(load_image(content_file), [load_image(style_file)], tiny_weights, options)
    result = np.asarray(Image.open(io.BytesIO(client.get(f"/api/jobs/{again}/image.png").content)))
    np.testing.assert_array_equal(result, to_uint8(whole.image))

    report = client.get(f"/api/jobs/{again}/report.json").json()
    assert report["resumed_from_iteration"] == 1 and report["status"] == "done"
    assert len(report["history"]["total"]) == 10
    assert report["history"]["total"] == pytest.approx(whole.history["total"])
    assert "jaxstyle stylize uploads/" in report["command"] and "--iterations 10" in report[
        "command"]
    frame = client.get(f"/api/jobs/{again}/frame.png")
    assert frame.headers["x-frame"] == str(frames[-1])
    assert Image.open(io.BytesIO(frame.content)).size == (32, 24)
    thumb = client.get(f"/api/jobs/{again}/thumb.png")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    history = client.get("/api/state").json()["history"]
    assert [r["id"] for r in history] == [again, job]
    assert history[0]["continued_from"] == job and history[0]["settings"]["iterations"] == 10
    assert history[0]["can_continue"] and not history[1]["can_continue"]  # the newest only
    refused = client.post(f"/api/jobs/{job}/continue", json={"iterations": 5})
    assert refused.status_code == 400 and "newest run" in refused.json()["error"]


def test_previews_change_no_pixel(client, tiny_weights, tmp_path):
    # The studio ends chunks early to show pictures; with a stop rule on (the balanced preset
    # stops once the picture settles: here at 1 grey level per iteration, which the tiny
    # network's picture reaches well within 300) and chunks of 3, the run still stops where and
    # as the library's own does.
    values = {"size": 32, "iterations": 300, "progress_every": 3, "preset": "balanced",
              "stop_change": 1.0, **{name: list(layers) for name, layers in TINY_LAYERS.items()}}
    job = start(client, "/api/runs", {**inputs(client), "options": values})
    snapshots = follow(client, job)
    content_file, style_file = tmp_path / "c.png", tmp_path / "s.png"
    content_file.write_bytes(png(smooth_image(24, 32, 0)))
    style_file.write_bytes(png(smooth_image(30, 30, 1)))
    alone = stylize(load_image(content_file), [load_image(style_file)], tiny_weights,
                    form.options_from_values(values))
    assert snapshots[-1]["iteration"] == len(alone.history["total"]) < 300, "no early stop"
    result = np.asarray(Image.open(io.BytesIO(client.get(f"/api/jobs/{job}/image.png").content)))
    np.testing.assert_array_equal(result, to_uint8(alone.image))


def test_a_second_job_while_one_runs_is_refused(client):
    request = {**inputs(client), "options": {**SMALL, "iterations": 100_000}}
    job = start(client, "/api/runs", request)
    refused = client.post("/api/runs", json=request)
    assert refused.status_code == 409
    assert f"run {job} is still running" in refused.json()["error"]
    assert client.post("/api/sweeps", json={**request, "vary": ["style_weight=1,2"]}
                       ).status_code == 409
    client.post("/api/stop")
    assert follow(client, job)[-1]["status"] == "stopped"
    next_job = start(client, "/api/runs", {**request, "options": {**SMALL, "iterations": 2}})
    assert follow(client, next_job)[-1]["status"] == "done"


def test_a_second_run_at_the_same_size_compiles_nothing(client):
    # COMPILED's log, in every thread (seconds_since counts the calling thread's, and the runs
    # compile in the worker's).
    compiled_since = lambda start: [entry for entry in COMPILED.log if entry[0] >= start]
    request = {**inputs(client), "options": {**SMALL, "iterations": 4}}
    first = follow(client, start(client, "/api/runs", request))[-1]
    began = time.perf_counter()
    changed = {**request, "options": {**request["options"], "iterations": 6}}
    second = follow(client, start(client, "/api/runs", changed))[-1]
    assert first["status"] == second["status"] == "done"
    assert compiled_since(began) == [], "the second run compiled again"
    # Nor does one with other weights: they are traced arguments of the compiled objective.
    weighted = {**request, "options": {**request["options"], "style_strength": 3.0,
                                       "style_weight": 7.0, "content_weight": 2.0}}
    third = follow(client, start(client, "/api/runs", weighted))[-1]
    assert third["status"] == "done" and third["loss"] != first["loss"]
    assert compiled_since(began) == [], "a run with other weights compiled again"


def test_sweep_writes_a_contact_sheet(client):
    request = {**inputs(client), "options": {**SMALL, "iterations": 3},
               "vary": ["style_weight=1,1000"]}
    job = start(client, "/api/sweeps", request)
    snapshots = follow(client, job)
    assert snapshots[-1]["status"] == "done" and snapshots[-1]["iteration"] == 2
    sheet = Image.open(io.BytesIO(client.get(f"/api/jobs/{job}/image.png").content))
    assert sheet.width >= 2 * 32
    report = client.get(f"/api/jobs/{job}/report.json").json()
    assert [c["settings"]["style_weight"] for c in report["cells"]] == [1.0, 1000.0]
    assert report["command"].startswith("jaxstyle sweep ") and "--vary" in report["command"]
    record = client.get("/api/state").json()["history"][0]
    assert record["kind"] == "sweep" and record["vary"] == {"style_weight": [1.0, 1000.0]}
    bad = client.post("/api/sweeps", json={**request, "vary": ["style_weight"]})
    assert bad.status_code == 400 and "OPTION=VALUE" in bad.json()["error"]


def upload_mask(client, mask: np.ndarray, name: str = "mask.png") -> str:
    """Uploads a float [H, W] mask as a grey PNG, as the page sends its painted regions."""
    response = client.post("/api/masks", content=png(np.repeat(mask[..., None], 3, -1)),
                           headers={"x-filename": name})
    assert response.status_code == 200, response.text
    return response.json()["mask"]["id"]


# The tiny network's content loss is minute: from noise and weighed this much, where it counts
# shows in the picture.
REGIONS = {**SMALL, "init": "noise", "content_weight": 1e7}


def test_a_run_with_painted_regions_is_the_cli_run_with_those_masks(client, tiny_weights,
                                                                    tmp_path):
    request = {**inputs(client), "options": {**REGIONS, "iterations": 6}}
    plain = follow(client, start(client, "/api/runs", request))[-1]["record"]
    # Half the size of the content (24 x 32): resized to it, as the command line does.
    left = np.zeros((12, 16), np.float32)
    left[:, :8] = 1.0
    keep = np.ones((12, 16), np.float32)
    keep[:4] = 0.0
    masked_request = {**request, "style_masks": [upload_mask(client, left)],
                      "content_mask": upload_mask(client, keep)}
    job = start(client, "/api/runs", masked_request)
    record = follow(client, job)[-1]["record"]
    assert record["status"] == "done"
    assert record["style_masks"] == masked_request["style_masks"]
    assert record["content_mask"] == masked_request["content_mask"]
    assert record["mask_files"] == {"style": ["style-mask-1.png"], "content": "content-mask.png"}
    where = f"runs/{job:04d}"
    assert (f"--style-masks {where}/style-mask-1.png --content-mask {where}/content-mask.png"
            in record["command"])

    files = {}
    for name in ("style-mask-1.png", "content-mask.png"):
        got = client.get(f"/api/jobs/{job}/masks/{name}")
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        files[name] = tmp_path / name
        files[name].write_bytes(got.content)
    np.testing.assert_array_equal(np.asarray(Image.open(files["style-mask-1.png"])),
                                  (left * 255).astype(np.uint8))
    assert client.get(f"/api/jobs/{job}/masks/report.json").status_code == 404
    assert client.get(f"/api/jobs/{plain['id']}/masks/style-mask-1.png").status_code == 404
    shown = client.get(f"/api/masks/{record['content_mask']}/mask.png")  # to paint it again
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(shown.content))),
                                  (keep * 255).astype(np.uint8))

    # Bit for bit `stylize` with the masks the command line reads from those files.
    content_file, style_file = tmp_path / "c.png", tmp_path / "s.png"
    content_file.write_bytes(png(smooth_image(24, 32, 0)))
    style_file.write_bytes(png(smooth_image(30, 30, 1)))
    alone = stylize(load_image(content_file), [load_image(style_file)], tiny_weights,
                    form.options_from_values(request["options"]),
                    style_masks=[load_mask(files["style-mask-1.png"])],
                    content_mask=load_mask(files["content-mask.png"]))
    result = np.asarray(Image.open(io.BytesIO(client.get(f"/api/jobs/{job}/image.png").content)))
    np.testing.assert_array_equal(result, to_uint8(alone.image))
    no_content_mask = stylize(load_image(content_file), [load_image(style_file)], tiny_weights,
                              form.options_from_values(request["options"]),
                              style_masks=[load_mask(files["style-mask-1.png"])])
    assert (result != to_uint8(no_content_mask.image)).any(), "the content mask changed nothing"
    without = np.asarray(Image.open(io.BytesIO(
        client.get(f"/api/jobs/{plain['id']}/image.png").content)))
    assert (result != without).any(), "the masks changed nothing"


@pytest.mark.slow
def test_the_neural_neighbour_preset_is_offered_and_runs_with_a_region(client, tiny_weights,
                                                                         tmp_path):
    schema = client.get("/api/state").json()["form"]
    fields = {f["name"]: f for f in schema["fields"]}
    assert "neural-neighbour" in fields["preset"]["choices"]
    assert (fields["content_alpha"]["min"], fields["content_alpha"]["max"]) == (0, 1)
    assert "content_alpha" in schema["sweep"]["options"]
    values = {"preset": "neural-neighbour", "size": 32, "iterations": 4, "progress_every": 2,
              "stop_change": 0, "content_alpha": 0.5}
    left = np.zeros((12, 16), np.float32)
    left[:, :8] = 1.0
    request = {**inputs(client), "options": values, "style_masks": [upload_mask(client, left)]}
    job = start(client, "/api/runs", request)
    record = follow(client, job)[-1]["record"]
    assert record["status"] == "done", record
    assert "--preset neural-neighbour" in record["command"]
    assert "--content-alpha 0.5" in record["command"]

    # Bit for bit `stylize` with the mask the command line reads from the run's file.
    files = [tmp_path / name for name in ("c.png", "s.png", "m.png")]
    files[0].write_bytes(png(smooth_image(24, 32, 0)))
    files[1].write_bytes(png(smooth_image(30, 30, 1)))
    files[2].write_bytes(client.get(f"/api/jobs/{job}/masks/style-mask-1.png").content)
    alone = stylize(load_image(files[0]), [load_image(files[1])], tiny_weights,
                    form.options_from_values(values), style_masks=[load_mask(files[2])])
    result = np.asarray(Image.open(io.BytesIO(client.get(f"/api/jobs/{job}/image.png").content)))
    np.testing.assert_array_equal(result, to_uint8(alone.image))


@pytest.mark.slow
def test_the_command_of_a_run_with_regions_makes_the_same_picture(client, tmp_path):
    request = {**inputs(client), "options": {**REGIONS, "iterations": 4}}
    request["styles"].append(upload(client, smooth_image(20, 28, 2), "second.png"))
    top = np.zeros((24, 32), np.float32)
    top[:10] = 1.0
    job = start(client, "/api/runs", {**request, "style_masks": [upload_mask(client, top), None],
                                      "content_mask": upload_mask(client, 1 - top)})
    record = follow(client, job)[-1]["record"]
    assert record["mask_files"]["style"] == ["style-mask-1.png", "style-mask-2.png"]
    words = shlex.split(record["command"])
    words[words.index("-o") + 1] = str(tmp_path / "again.png")
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *words[1:]],
                          cwd=tmp_path / "studio", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    studio = np.asarray(Image.open(io.BytesIO(client.get(f"/api/jobs/{job}/image.png").content)))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "again.png")), studio)
    # A style left unpainted applies everywhere: its file is white.
    white = client.get(f"/api/jobs/{job}/masks/style-mask-2.png").content
    assert np.asarray(Image.open(io.BytesIO(white))).min() == 255

    more = follow(client, start(client, f"/api/jobs/{job}/continue", {"iterations": 2}))
    assert more[-1]["record"]["style_masks"] == record["style_masks"]
    assert "--content-mask runs/" in more[-1]["record"]["command"]


@pytest.mark.parametrize("change, status, message", [
    ({"style_masks": ["nope"]}, 400, "no mask 'nope' on this server"),
    ({"style_masks": [None, None]}, 400, "style_masks: give one mask (or null) for each of the 1"),
    ({"style_masks": "left"}, 400, "style_masks: give one mask"),
    ({"content_mask": 7}, 400, "content_mask: give a mask's id"),
    ({"style_masks": ["black"]}, 400, "style mask 1 covers nothing"),
    ({"content_mask": "black"}, 400, "content mask covers nothing"),
    ({"vary": ["style_weight=1,2"], "style_masks": ["white"]}, 400, "a sweep takes no masks"),
])
def test_bad_masks_in_a_run_are_refused_with_one_line(client, change, status, message):
    ids = {"black": upload_mask(client, np.zeros((8, 8), np.float32)),
           "white": upload_mask(client, np.ones((8, 8), np.float32))}
    change = {k: [ids.get(m, m) for m in v] if isinstance(v, list) and k != "vary"
              else ids.get(v, v) if isinstance(v, str) else v for k, v in change.items()}
    path = "/api/sweeps" if "vary" in change else "/api/runs"
    refused = client.post(path, json={**inputs(client), "options": {**SMALL, "iterations": 2},
                                      **change})
    assert refused.status_code == status, refused.text
    assert message in refused.json()["error"] and "\n" not in refused.json()["error"]
    assert client.get("/api/state").json()["job"] is None  # nothing was queued


@pytest.mark.parametrize("name, data, limits, status, message", [
    ("notes.txt", b"just some text", {}, 400, "notes.txt: not an image"),
    ("cut.png", None, {}, 400, "cut.png: cannot decode image"),
    ("big.png", png(smooth_image(40, 40, 4)), {"max_pixels": 1000}, 400,
     "40x40 pixels is over the limit of 1000"),
    ("heavy.png", b"\x89PNG" + bytes(5000), {"max_bytes": 2000}, 413, "over the limit"),
    ("empty.png", b"", {}, 400, "empty"),
])
def test_bad_mask_uploads_get_a_message(client_for, name, data, limits, status, message):
    with client_for(**limits) as c:
        response = c.post("/api/masks", content=truncated_png() if data is None else data,
                          headers={"x-filename": name})
        assert response.status_code == status, response.text
        assert message in response.json()["error"] and "\n" not in response.json()["error"]
        assert c.get("/api/state").status_code == 200


def truncated_png() -> bytes:
    return png(smooth_image(40, 40, 3))[:300]


@pytest.mark.parametrize("name, data, limits, status, message", [
    ("notes.txt", b"just some text", {}, 400, "notes.txt: not an image"),
    ("drawing.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", {}, 400,
     "drawing.eps: not an image"),
    ("cut.png", None, {}, 400, "cut.png: cannot decode image"),
    ("big.png", png(smooth_image(40, 40, 4)), {"max_pixels": 1000}, 400,
     "40x40 pixels is over the limit of 1000"),
    ("heavy.png", b"\x89PNG" + bytes(5000), {"max_bytes": 2000}, 413, "over the limit"),
    ("empty.png", b"", {}, 400, "empty"),
])
def test_bad_uploads_get_a_message_and_the_server_keeps_running(client_for, tmp_path, name,
                                                                data, limits, status, message):
    with client_for(**limits) as c:
        response = c.post("/api/images", content=truncated_png() if data is None else data,
                          headers={"x-filename": name})
        assert response.status_code == status
        assert message in response.json()["error"]
        assert str(tmp_path) not in response.json()["error"], "a server path leaked"
        assert c.get("/api/state").status_code == 200
        assert upload(c, smooth_image(20, 20, 5), "fine.png")
    leftovers = [p for p in (tmp_path / "studio" / "uploads").iterdir() if p.name != "fine.png"]
    assert all(not p.name.startswith(".incoming") for p in leftovers)


def test_every_format_the_readers_take_is_an_upload(client):
    # One list (images.IMAGE_FORMATS): the studio's own left out PPM, which the CLI reads.
    from jaxstyle.images import IMAGE_FORMATS

    for fmt in IMAGE_FORMATS:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 6), (10, 200, 30)).save(buffer, format=fmt)
        response = client.post("/api/images", content=buffer.getvalue(),
                               headers={"x-filename": f"picture.{fmt.lower()}"})
        assert response.status_code == 200, (fmt, response.text)
        assert response.json()["image"]["width"] == 8


def test_requests_from_elsewhere_are_refused(client):
    assert client.get("/api/state").status_code == 200
    rebound = client.get("/api/state", headers={"host": "evil.example:8765"})
    assert rebound.status_code == 403 and "Host" in rebound.json()["error"]
    foreign = client.post("/api/stop", headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403 and "another site" in foreign.json()["error"]
    other_port = client.post("/api/stop", headers={"origin": "http://127.0.0.1:9999"})
    assert other_port.status_code == 403
    cross = client.get("/api/state", headers={"sec-fetch-site": "cross-site"})
    assert cross.status_code == 403
    assert client.post("/api/stop", headers={"origin": BASE}).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers[
        "content-security-policy"]
    assert "<script" in page.text
    assert not re.search(r'(src|href)="(https?:)?//', page.text), "loads from elsewhere"


def test_off_loopback_a_token_is_required(client_for):
    with client_for(host="0.0.0.0", token="the-token") as c:
        assert c.get("/api/state", headers={"host": "studio.lan:8765"}).status_code == 403
        assert c.get("/api/state?token=wrong").status_code == 403
        assert c.get("/api/state?token=the-token").status_code == 200
        entry = c.get("/?token=the-token", follow_redirects=False)
        assert entry.status_code == 303 and entry.headers["location"] == "/"
        assert "httponly" in entry.headers["set-cookie"].lower()
        assert c.get("/api/state").status_code == 200  # the cookie now
        c.cookies.clear()
        assert c.get("/api/state").status_code == 403


def test_the_client_never_names_a_path(client):
    assert client.get("/api/images/..%2F..%2Fetc%2Fpasswd/preview.png").status_code == 404
    assert client.get("/api/images/chelsea.jpg/preview.png").status_code == 404
    request = {"content": "../../../etc/passwd", "styles": ["/etc/hostname"], "options": {}}
    refused = client.post("/api/runs", json=request)
    assert refused.status_code == 400 and "no image" in refused.json()["error"]
    for path in ("/api/jobs/7/report.json", "/api/jobs/..%2F..%2Fx/image.png",
                 "/api/jobs/1/events", "/api/jobs/-1/frame.png"):
        assert client.get(path).status_code == 404, path


def test_examples_are_offered(client):
    images = {i["id"]: i for i in client.get("/api/state").json()["images"]}
    if not (ROOT / "examples" / "chelsea.jpg").is_file():
        pytest.skip("no examples/ beside the package")
    assert images["chelsea"]["example"] and images["chelsea"]["width"] == 451
    assert client.get("/api/images/chelsea/preview.png").status_code == 200


def test_cli_serves_the_page_on_loopback_and_opens_it(tiny_weights_file, tmp_path):
    import httpx2

    opened = tmp_path / "opened.txt"  # --open runs $BROWSER, here a script that notes the URL
    browser = f"{sys.executable} -c 'import sys; open(sys.argv[1], \"w\").write(sys.argv[2])'"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "studio", "--port", "0", "--weights",
         str(tiny_weights_file), "--dir", str(tmp_path / "run"), "--open"],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BROWSER": f"{browser} {opened} %s"})
    try:
        first = process.stderr.readline()
        assert first.startswith("jaxstyle studio: http://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        page = httpx2.get(url, timeout=120)
        assert page.status_code == 200 and "jaxstyle studio" in page.text
        assert httpx2.get(url + "static/app.js", timeout=120).status_code == 200
        deadline = time.monotonic() + 120  # the file exists before the script has written it
        while not (opened.exists() and opened.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert opened.read_text() == url
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        _, log = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in log, log


@pytest.mark.parametrize("flags, message", [
    (["--dir", "{file}"], "--dir {file}: cannot be the run folder"),
    (["--host", ""], "--host: is empty"),
    (["--host", " "], "--host: is empty"),
    (["--max-upload-mb", "inf"], "--max-upload-mb: must be a number > 0 (got inf)"),
    (["--disk-budget-mb", "0"], "--disk-budget-mb: must be a number > 0 (got 0.0)"),
    (["--weights", "{file}"], "--weights {file}: {file}: not a weights file jaxstyle reads"),
    (["--weights", "{file}.missing"], "--weights {file}.missing: weights file not found"),
])
def test_bad_studio_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    from jaxstyle.cli import main

    file = tmp_path / "notes.txt"
    file.write_text("not a folder")
    code = main(["studio", "--port", "0", "--weights", "random",
                 *[f.format(file=file) for f in flags]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message.format(file=file) in err[0], err
    assert file.read_text() == "not a folder"


# Issue 40: every request bounded before work, and nothing heavy on the event loop.

def test_oversized_requests_are_refused_at_once_naming_the_limit(client):
    from jaxstyle.studio import limits

    request = {**inputs(client), "options": {**SMALL, "iterations": 2}}
    axes = [f"style_weight={','.join(str(v) for v in range(1, 301))}",
            f"content_weight={','.join(str(v) for v in range(1, 301))}"]
    began = time.perf_counter()
    huge = client.post("/api/sweeps", json={**request, "vary": axes})
    assert time.perf_counter() - began < 5, "the grid was built before the limit was checked"
    assert huge.status_code == 400
    assert f"at most {limits.MAX_AXIS_VALUES} values" in huge.json()["error"], huge.json()
    # Each axis within its limit, the grid over its own.
    side = limits.MAX_AXIS_VALUES
    wide = [f"style_weight={','.join(str(v) for v in range(1, side + 1))}",
            f"content_weight={','.join(str(v) for v in range(1, side + 1))}"]
    cells = client.post("/api/sweeps", json={**request, "vary": wide})
    assert cells.status_code == 400
    assert f"{side * side} cells" in cells.json()["error"]
    assert f"at most {limits.MAX_SWEEP_CELLS}" in cells.json()["error"]
    three = client.post("/api/sweeps", json={**request, "vary": ["seed=1,2"] * 3})
    assert three.status_code == 400 and "one or two options" in three.json()["error"]
    many = client.post("/api/runs", json={**request,
                                          "styles": request["styles"] * (limits.MAX_STYLES + 1)})
    assert many.status_code == 400
    assert f"at most {limits.MAX_STYLES} style images" in many.json()["error"]
    body = client.post("/api/check", content=b'{"options": {}, "x": "' + b"a" * 100_000 + b'"}',
                       headers={"content-type": "application/json"})
    assert body.status_code == 413 and "over the limit" in body.json()["error"]
    assert client.get("/api/state").status_code == 200


@pytest.mark.parametrize("path", ["/api/check", "/api/runs", "/api/sweeps",
                                  "/api/jobs/1/continue"])
def test_deeply_nested_json_is_refused_not_a_crash(client, path):
    from jaxstyle.studio import limits

    huge = client.post(path, content=b"[" * 30_000 + b"]" * 30_000,
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "over the limit" in huge.json()["error"]
    brackets = limits.MAX_JSON_BYTES // 2 - 1  # within the body's limit
    deep = client.post(path, content=b"[" * brackets + b"]" * brackets,
                       headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "nested deeper than" in deep.json()["error"]
    unclosed = client.post(path, content=b'{"options": ' * 1000,
                           headers={"content-type": "application/json"})
    assert unclosed.status_code == 400 and "nested deeper than" in unclosed.json()["error"]
    quoted = client.post(path, content=b'{"options": {"x": "' + b"[" * 5000 + b'"}}',
                         headers={"content-type": "application/json"})
    assert quoted.status_code == 400 and "nested" not in quoted.json()["error"]  # in a string


@pytest.mark.parametrize("job", ["²", "٣", "1²", "9" * 5000, "+1", "1_0", "0x1", "-0"])
def test_job_ids_are_ascii_digits_only(client, job):
    for path in ("image.png", "thumb.png", "report.json", "events", "frame.png"):
        assert client.get(f"/api/jobs/{job}/{path}").status_code == 404, path
    refused = client.post(f"/api/jobs/{job}/continue", json={"iterations": 5})
    assert refused.status_code in (400, 404), refused.text


@pytest.mark.parametrize("body, message", [
    (b'{"iterations": Infinity}', "not a finite number"),
    (b'{"iterations": -Infinity}', "not a finite number"),
    (b'{"iterations": NaN}', "not a finite number"),
    (b'{"iterations": 1e400}', "not a finite number"),
    (b'{"iterations": 1e300}', "iterations: must be a whole number in [1, 10000000]"),
    (b'{"iterations": 2.5}', "iterations: must be a whole number"),
    (b'{"iterations": true}', "iterations: must be a whole number"),
    (b'{"iterations": "5"}', "iterations: must be a whole number"),
    (b'{"iterations": 0}', "iterations: must be a whole number in [1, 10000000]"),
])
def test_continue_takes_a_finite_whole_number_in_range(client, body, message):
    refused = client.post("/api/jobs/1/continue", content=body,
                          headers={"content-type": "application/json"})
    assert refused.status_code == 400 and message in refused.json()["error"], refused.text


def test_options_from_json_are_finite_and_in_the_clis_range(client):
    for body in (b'{"options": {"style_weight": Infinity}}', b'{"options": {"size": 1e400}}'):
        refused = client.post("/api/check", content=body,
                              headers={"content-type": "application/json"})
        assert refused.status_code == 400 and "not a finite number" in refused.json()["error"]
    high = client.post("/api/check", json={"options": {"style_weight": 1e300}})
    assert high.status_code == 400 and high.json()["field"] == "style_weight"
    assert RANGES["style_weight"].describe() in high.json()["error"]


def test_state_answers_while_a_large_request_is_being_checked(client, monkeypatch):
    # Stands for checking a large allowed sweep: the check holds its thread until /api/state
    # has answered (or 10 s), so a check run on the event loop would keep /api/state waiting.
    import threading

    from jaxstyle.studio import limits, requests

    answered = threading.Event()
    checking = threading.Event()

    def slow_check(*args, **kwargs):
        if not checking.is_set():  # the first cell's check
            checking.set()
            answered.wait(10)

    monkeypatch.setattr(requests, "check_inputs", slow_check)
    request = {**inputs(client), "options": {**SMALL, "iterations": 2},
               "vary": [f"seed={','.join(str(v) for v in range(limits.MAX_AXIS_VALUES))}"]}
    result = {}
    sweep = threading.Thread(target=lambda: result.update(
        response=client.post("/api/sweeps", json=request)))
    sweep.start()
    try:
        assert checking.wait(30), "the check never started"
        began = time.perf_counter()
        state = client.get("/api/state")
        waited = time.perf_counter() - began
        assert state.status_code == 200
    finally:
        answered.set()
        sweep.join(60)
    assert waited < 1.0, f"/api/state waited {waited:.1f} s behind the sweep's check"
    assert result["response"].status_code == 202, result["response"].text
    client.post("/api/stop")
    follow(client, result["response"].json()["job"]["job"])


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims `width` x `height` pixels, with a tiny body."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def test_an_upload_whose_header_claims_ten_gigapixels_is_refused(client):
    refused = client.post("/api/images", content=bomb_png(), headers={"x-filename": "bomb.png"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"].startswith("bomb.png: ")
    assert "over the limit of 100,000,000 pixels" in refused.json()["error"]
    assert client.get("/api/state").status_code == 200


def test_decoded_images_are_bounded_in_bytes_not_entries(tmp_path, monkeypatch):
    # A 100-megapixel upload is 1.2 GB decoded (float32 RGB), and eight were kept: the caches
    # are bounded in bytes instead (scaled down here: 4 MB for the decoded images, 1 MB for the
    # previews, images of 1 to 12 MB decoded).
    import gc
    import tracemalloc

    from jaxstyle.studio import store

    budget = 4 * 2**20
    monkeypatch.setattr(store, "DECODED_CACHE_BYTES", budget, raising=False)
    monkeypatch.setattr(store, "PREVIEW_CACHE_BYTES", budget // 4, raising=False)
    folder = store.RunFolder(tmp_path / "studio", max_pixels=10**8, max_bytes=10**8)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        ids = []
        for seed, side in enumerate([400, 400, 600, 1000, 300, 300, 400]):
            data = io.BytesIO()
            Image.fromarray(to_uint8(smooth_image(side, side, seed))).save(
                data, format="PNG", compress_level=1)
            ids.append(folder.add_upload(data.getvalue(), f"{seed}.png").id)
            del data
        for image_id in ids:
            folder.preview(image_id)
            assert folder.load(image_id).shape[2] == 3
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * budget, f"{held / 2**20:.1f} MB held for a {budget / 2**20:.0f} MB budget"


@pytest.mark.parametrize("moment", ["idle", "compiling", "running"])
def test_first_ctrl_c_ends_the_studio_at_once_and_removes_its_folder(tiny_weights_file,
                                                                     tmp_path, moment):
    import httpx2

    temp = tmp_path / "tmp"
    temp.mkdir()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "studio", "--port", "0", "--weights",
         str(tiny_weights_file)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(temp)})
    try:
        first = process.stderr.readline()
        assert first.startswith("jaxstyle studio: http://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        assert [p.name[:16] for p in temp.iterdir()] == ["jaxstyle-studio-"]
        ids = []
        for seed, (h, w) in enumerate([(24, 32), (30, 30)]):
            sent = httpx2.post(url + "api/images", content=png(smooth_image(h, w, seed)),
                               headers={"x-filename": f"{seed}.png"}, timeout=120)
            assert sent.status_code == 200, sent.text
            ids.append(sent.json()["image"]["id"])
        if moment != "idle":
            request = {"content": ids[0], "styles": ids[1:],
                       "options": {**SMALL, "iterations": 1_000_000}}
            deadline = time.monotonic() + 120
            while True:  # the worker answers once its network has loaded
                started = httpx2.post(url + "api/runs", json=request, timeout=120)
                if started.status_code == 202 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert started.status_code == 202, started.text
        while moment == "running":  # the first picture: compiled and iterating
            job = httpx2.get(url + "api/state", timeout=120).json()["job"]
            if job["frame"] > 0 or time.monotonic() > deadline:
                assert job["frame"] > 0, job
                break
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, once
        began = time.monotonic()
        try:
            _, log = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, log = process.communicate()
    took = time.monotonic() - began
    assert took < 5, f"{took:.1f} s after Ctrl-C\n{log}"
    assert process.returncode == 130, log
    assert "Fatal Python error" not in log and "Traceback" not in log, log
    assert not list(temp.iterdir()), (list(temp.rglob("*")), log)


def test_two_tabs_see_one_run_at_a_time_and_the_same_state(client):
    """Two pages on one server (two clients, one of them without the lifespan: the same app
    and worker): the second sees the first's run, is refused its own while it runs, may stop
    it, and both list the same history; two submissions at once start exactly one job."""
    other = TestClient(client.app, base_url=BASE)
    request = {**inputs(client), "options": {**SMALL, "iterations": 100_000}}
    job = start(client, "/api/runs", request)
    seen = other.get("/api/state").json()["job"]
    assert seen["job"] == job and seen["status"] in ("queued", "running")
    refused = other.post("/api/runs", json=request)
    assert refused.status_code == 409 and f"run {job} is still running" in refused.json()["error"]
    assert other.post("/api/stop").json()["job"]["job"] == job
    assert follow(client, job)[-1]["status"] == follow(other, job)[-1]["status"] == "stopped"
    assert client.get("/api/state").json()["history"] == other.get("/api/state").json()["history"]
    more = start(other, f"/api/jobs/{job}/continue", {"iterations": 2})
    assert client.get("/api/state").json()["job"]["job"] == more
    assert follow(client, more)[-1]["status"] == "done"

    short = {**request, "options": {**SMALL, "iterations": 2}}
    answers = [None, None]
    def post(i, tab):
        answers[i] = tab.post("/api/runs", json=short)
    tabs = [threading.Thread(target=post, args=(i, tab)) for i, tab in enumerate((client, other))]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join()
    assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 202).json()["job"]["job"]
    assert follow(other, winner)[-1]["status"] == "done"
    ids = [r["id"] for r in other.get("/api/state").json()["history"]]
    assert ids == [winner, more, job]


def test_over_the_disk_budget_the_oldest_runs_leave_the_folder_and_history(client_for,
                                                                          tmp_path):
    """A budget of one byte keeps only what the page still needs: the newest run (which can be
    continued); every older run's folder is removed and its history entry with it."""
    with client_for(run_budget=1) as c:
        request = {**inputs(c), "options": {**SMALL, "iterations": 2}}
        jobs = []
        for _ in range(3):
            jobs.append(start(c, "/api/runs", request))
            follow(c, jobs[-1])
        runs = tmp_path / "studio" / "runs"
        assert sorted(p.name for p in runs.iterdir()) == [f"{jobs[-1]:04d}"]
        assert [r["id"] for r in c.get("/api/state").json()["history"]] == [jobs[-1]]
        assert c.get(f"/api/jobs/{jobs[0]}/image.png").status_code == 404
        assert c.get(f"/api/jobs/{jobs[-1]}/image.png").status_code == 200
        assert not (runs / f"{jobs[0]:04d}").exists()  # a 404 creates no folder


def test_evict_removes_the_oldest_runs_not_kept_until_the_budget_holds(tmp_path):
    folder = RunFolder(tmp_path, 100, 100, run_budget=250)
    for run_id in range(1, 6):
        (folder.run_dir(run_id) / "result.png").write_bytes(b"x" * 100)
    assert folder.evict(keep={1}) == [2, 3, 4]
    assert sorted(p.name for p in folder.runs.iterdir()) == ["0001", "0005"]
    assert folder.run_bytes() == 200 and folder.evict(keep=()) == []
    assert RunFolder(tmp_path, 100, 100, run_budget=0).evict(keep={5}) == [1]


@pytest.mark.slow
def test_jax_caches_are_cleared_past_the_geometries_kept(client, monkeypatch):
    """jax's own jit caches keep the compiled code of at most `_GEOMETRIES` input geometries:
    a job bringing one more clears them first, and runs (and compiles) as before."""
    from jaxstyle.studio import worker

    cleared = []
    real = jax.clear_caches
    monkeypatch.setattr(worker, "_GEOMETRIES", 1)
    monkeypatch.setattr(worker.jax, "clear_caches", lambda: (cleared.append(1), real()))
    request = {**inputs(client), "options": {**SMALL, "iterations": 2}}
    for size, clears in ((32, 0), (32, 0), (40, 1), (40, 1), (32, 2)):
        job = start(client, "/api/runs", {**request, "options": {**SMALL, "iterations": 2,
                                                                  "size": size}})
        assert follow(client, job)[-1]["status"] == "done"
        assert len(cleared) == clears, (size, cleared)


def test_a_run_seen_finished_does_not_block_the_next(client, monkeypatch):
    """Once a job's stream says it finished, a new job is accepted at once, even while the
    worker is still recording the old one (slowed here in its disk-budget step)."""
    from jaxstyle.studio.store import RunFolder as Folder

    evict = Folder.evict
    monkeypatch.setattr(Folder, "evict", lambda self, keep: (time.sleep(1.0), evict(self, keep))[1])
    request = {**inputs(client), "options": {**SMALL, "iterations": 2}}
    first = start(client, "/api/runs", request)
    assert follow(client, first)[-1]["status"] == "done"
    second = start(client, "/api/runs", request)  # 409 while the worker still held the first
    assert client.get("/api/state").json()["job"]["job"] == second
    assert follow(client, second)[-1]["status"] == "done"
    assert [r["id"] for r in client.get("/api/state").json()["history"]] == [second, first]
    more = start(client, f"/api/jobs/{second}/continue", {"iterations": 2})  # its state is kept
    assert follow(client, more)[-1]["status"] == "done"


ARENAS = """
import ctypes, sys, threading
from jaxstyle.studio.allocator import limit_arenas
print(limit_arenas(2) if sys.argv[1] == "limit" else None)
together = threading.Barrier(8)
def work():  # eight threads allocating at once: glibc gives each an arena of its own
    together.wait()
    for _ in range(50):
        kept = [bytearray(300_000) for _ in range(4)]
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()  # to stderr: a line 'Arena N:' for each arena
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_the_studio_limits_malloc_arenas(monkeypatch):
    from jaxstyle.studio.allocator import limit_arenas

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    arenas = {}
    for how in ("default", "limit"):
        done = subprocess.run([sys.executable, "-c", ARENAS, how], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        arenas[how] = (done.stdout.strip(),
                       sum(line.startswith("Arena ") for line in done.stderr.splitlines()))
    assert arenas["limit"] == ("True", 2) and arenas["default"][1] > 2, arenas
    with pytest.raises(ValueError, match="arenas: must be >= 1"):
        limit_arenas(0)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # glibc read it at start: it decides
    assert limit_arenas() is False
