"""The studio's request handlers (`Handlers`), which `jaxstyle.studio.server.create_app`
routes to, and the server's settings (`StudioConfig`)."""


from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.errors import ImageError, JaxstyleError
from jaxstyle.option_fields import RANGES, OptionsError, Range
from jaxstyle.studio import DISK_BUDGET_MB, MAX_UPLOAD_MB, form, limits
from jaxstyle.studio.commands import REPORT, RESULT, SHEET
from jaxstyle.studio.guard import cookie_name
from jaxstyle.studio.jobs import Request as JobRequest
from jaxstyle.studio.jobs import Snapshot
from jaxstyle.studio.limits import TooLarge
from jaxstyle.studio.requests import job_request, read_body, read_json
from jaxstyle.studio.store import RunFolder, display_name, mask_png, preview_png
from jaxstyle.studio.worker import Busy, Worker

STATIC = Path(__file__).parent / "static"

_EVENT_POLL_SECONDS = 0.05  # how often a stream looks for a new snapshot: at most 20 events/s
_KEEPALIVE_SECONDS = 15.0
_THUMB_SIDE = 256
_STOP_SECONDS = 2.0  # how long a stopping server waits for the job's chunk to end
_MORE_ITERATIONS = Range(1, RANGES["iterations"].high)  # what Continue adds
class StudioConfig(NamedTuple):
    """A studio server's settings.

    Attributes:
      folder: the run folder (created if missing).
      port: the port it listens on (the ``Host`` header must carry it).
      host: the address it is bound to; off the loopback interface a token is required.
      weights: ``--weights`` (a file, 'random', or None for the default search).
      token: the token required off the loopback interface (None on it).
      max_pixels: refuse uploads with more pixels than this.
      max_bytes: refuse uploads larger than this.
      log: where one-line messages go.
      run_budget: bytes the finished runs' folders may take; beyond it the oldest runs are
        removed, from the folder and the history.
    """

    folder: Path
    port: int
    host: str = "127.0.0.1"
    weights: str | None = None
    token: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = int(MAX_UPLOAD_MB * 2**20)
    log: Callable[[str], None] = print
    run_budget: int = int(DISK_BUDGET_MB * 2**20)


class Missing(JaxstyleError):
    """A job or result the request names does not exist."""


def public(snapshot: Snapshot | None) -> dict | None:
    """A snapshot as the page gets it."""
    if snapshot is None:
        return None
    return {**snapshot._asdict(), "plot": [list(p) for p in snapshot.plot]}


def error(message: str, status: int = 400, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status)


def options_error(exc: JaxstyleError) -> JSONResponse:
    """An options error for the page: its message, and the field it names (if one)."""
    name = str(exc).partition(":")[0].strip()
    return error(str(exc), field=name if name in form.field_names() else None)


class Handlers:
    """The studio's request handlers over one run folder and its worker thread; `create_app`
    routes to them. ``close_now`` ends every event stream and asks the worker to stop, waiting
    for nothing (a server stopping calls it first, so that open pages do not hold the shutdown
    up)."""

    def __init__(self, config: StudioConfig):
        self.config = config
        self.folder = RunFolder(config.folder, config.max_pixels, config.max_bytes,
                                config.run_budget)
        self.worker = Worker(self.folder, config.weights, config.log)
        self.closing = threading.Event()
        self.encoded: dict[int, tuple[int, bytes]] = {}  # job -> (frame seq, PNG): newest only

    def job_of(self, request: Request):
        job_id = limits.job_id(request.path_params["job"])
        job = None if job_id is None else self.worker.job(job_id)
        if job is None:
            raise Missing("no such job")
        return job

    async def index(self, request: Request) -> Response:
        if self.config.token is not None and "token" in request.query_params:
            response = RedirectResponse("/", 303)  # the token leaves the address bar
            response.set_cookie(cookie_name(self.config.port), self.config.token, httponly=True,
                                samesite="strict")
            return response
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def state(self, request: Request) -> Response:
        current = self.worker.current()
        network = self.worker.network
        return JSONResponse({
            "network": None if network is None else f"{network.network} from {network.source}",
            "network_label": None if network is None else network.label(),
            "network_random": bool(network is not None and network.is_random),
            "network_error": self.worker.network_error,
            "form": form.form_schema(),
            "images": [e.public() for e in self.folder.images()],
            "history": self.worker.records(),
            "job": public(current.snapshot if current else None),
            "limits": {"max_bytes": self.config.max_bytes, "max_pixels": self.config.max_pixels},
        })

    async def received(self, request: Request, default: str,
                       keep) -> tuple[object, Response | None]:
        # An upload's body within the byte limit, checked and kept by `keep` off the event loop:
        # (entry, None), or (None, the error response naming the upload).
        name = display_name(unquote(request.headers.get("x-filename", default)))
        try:
            data = await read_body(request, self.config.max_bytes)
            return await run_in_threadpool(keep, data, name), None
        except TooLarge as exc:
            return None, error(f"{name}: {exc} (the upload limit)", 413)
        except ImageError as exc:
            return None, error(str(exc))

    async def upload(self, request: Request) -> Response:
        entry, refused = await self.received(request, "upload", self.folder.add_upload)
        return refused or JSONResponse({"image": entry.public()})

    async def upload_mask(self, request: Request) -> Response:
        entry, refused = await self.received(request, "mask", self.folder.add_mask)
        return refused or JSONResponse({"mask": {"id": entry.id, "width": entry.width,
                                                 "height": entry.height}})

    async def mask_image(self, request: Request) -> Response:
        try:
            mask = await run_in_threadpool(self.folder.load_mask, request.path_params["mask"])
        except ImageError as exc:
            return error(str(exc), 404)
        return Response(await run_in_threadpool(mask_png, mask), media_type="image/png")

    async def image_preview(self, request: Request) -> Response:
        try:
            data = await run_in_threadpool(self.folder.preview, request.path_params["image"])
        except ImageError as exc:
            return error(str(exc), 404)
        return Response(data, media_type="image/png", headers={"cache-control": "max-age=3600"})

    async def submit(self, job_request_: JobRequest) -> Response:
        try:
            job = self.worker.submit(job_request_)
        except Busy as exc:
            return error(str(exc), 409)
        return JSONResponse({"job": public(job.snapshot)}, 202)

    async def start(self, request: Request, kind: str) -> Response:
        """A new job of `kind` ("run" or "sweep") from the request's JSON."""
        try:
            data = await read_json(request)
            return await self.submit(await run_in_threadpool(job_request, data, kind,
                                                             self.folder))
        except OptionsError as exc:
            return options_error(exc)

    async def start_run(self, request: Request) -> Response:
        return await self.start(request, "run")

    async def start_sweep(self, request: Request) -> Response:
        return await self.start(request, "sweep")

    async def check(self, request: Request) -> Response:
        values = (await read_json(request)).get("options") or {}
        if not isinstance(values, dict):
            raise JaxstyleError("options must be an object")
        try:
            await run_in_threadpool(form.options_from_values, values)
        except OptionsError as exc:
            return options_error(exc)
        return JSONResponse({"error": None})

    async def continue_run(self, request: Request) -> Response:
        job_id = limits.job_id(request.path_params["job"])
        if job_id is None:
            raise Missing("no such job")
        data = await read_json(request)
        more = limits.whole_number("continue: iterations", data.get("iterations"),
                                   _MORE_ITERATIONS)
        return await self.submit(await run_in_threadpool(self.worker.continuation, job_id, more))

    async def stop(self, request: Request) -> Response:
        job = self.worker.stop()
        return JSONResponse({"job": public(job.snapshot if job else None)})

    async def events(self, request: Request) -> Response:
        job = self.job_of(request)

        async def stream():
            sent, quiet = None, 0.0
            while not self.closing.is_set():
                snapshot = job.snapshot
                if snapshot is not sent:
                    yield f"data: {json.dumps(public(snapshot))}\n\n"
                    sent, quiet = snapshot, 0.0
                    if snapshot.finished:
                        return
                elif quiet > _KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await asyncio.sleep(_EVENT_POLL_SECONDS)
                quiet += _EVENT_POLL_SECONDS

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def frame(self, request: Request) -> Response:
        job = self.job_of(request)
        seq, image = job.frame()
        if image is None:
            return error("no picture yet", 404)
        kept = self.encoded.get(job.id)
        if kept is None or kept[0] != seq:
            kept = self.encoded[job.id] = (seq, await run_in_threadpool(preview_png, image))
            for other in [k for k in self.encoded if k != job.id]:
                del self.encoded[other]
        return Response(kept[1], media_type="image/png", headers={"x-frame": str(seq)})

    def run_file(self, request: Request, name: str) -> Path:
        job_id = limits.job_id(request.path_params["job"])
        record = None if job_id is None else self.worker.record(job_id)
        if record is None or record.get("status") == "failed":
            raise Missing("no such result")
        return self.folder.run_dir(record["id"]) / name

    async def result_image(self, request: Request) -> Response:
        path = self.run_file(request, SHEET)
        path = path if path.is_file() else path.with_name(RESULT)
        name = f"jaxstyle-{request.path_params['job']}-{path.name}"
        if request.query_params.get("download"):
            return FileResponse(path, media_type="image/png", filename=name)
        return FileResponse(path, media_type="image/png")

    async def run_mask(self, request: Request) -> Response:
        job_id = limits.job_id(request.path_params["job"])
        record = None if job_id is None else self.worker.record(job_id)
        files = (record or {}).get("mask_files") or {}
        name = request.path_params["name"]
        if name not in [*files.get("style", ()), files.get("content")]:
            raise Missing("no such mask")
        return FileResponse(self.run_file(request, name), media_type="image/png",
                            filename=f"jaxstyle-{request.path_params['job']}-{name}")

    async def thumbnail(self, request: Request) -> Response:
        path = self.run_file(request, SHEET)
        path = path if path.is_file() else path.with_name(RESULT)
        data = await run_in_threadpool(_thumbnail, path)
        return Response(data, media_type="image/png")

    async def report(self, request: Request) -> Response:
        path = self.run_file(request, REPORT)
        return FileResponse(path, media_type="application/json",
                            filename=f"jaxstyle-{request.path_params['job']}-report.json")

    async def bad_input(self, request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, Missing) else 413 if isinstance(exc, TooLarge) else 400
        return error(str(exc), status)

    def close_now(self) -> None:
        self.closing.set()
        self.worker.close(timeout=0)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.worker.start()
        try:
            yield
        finally:
            self.closing.set()
            await run_in_threadpool(self.worker.close, _STOP_SECONDS)



def _thumbnail(path: Path) -> bytes:
    from jaxstyle.images import load_image

    return preview_png(load_image(path), _THUMB_SIDE)


