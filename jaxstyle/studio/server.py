"""The studio's HTTP side: a Starlette app and `serve` for ``jaxstyle studio``.

The page is static files shipped with the package (no CDN, no build step). It talks to this
JSON API, follows a job through server-sent events (small JSON snapshots, the newest only) and
fetches the newest picture when it is ready for one. Every request first passes
`jaxstyle.studio.guard.Guard`, then `jaxstyle.studio.limits` bounds what it holds; whatever
takes more than a moment (parsing and checking a request, decoding, encoding) runs in a
thread, so the event loop keeps answering every other request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.errors import ImageError, JaxstyleError
from jaxstyle.option_fields import RANGES, OptionsError, Range
from jaxstyle.studio import DEFAULT_PORT, DISK_BUDGET_MB, MAX_UPLOAD_MB, form, limits
from jaxstyle.studio.allocator import limit_arenas
from jaxstyle.studio.commands import REPORT, RESULT, SHEET
from jaxstyle.studio.guard import Guard, cookie_name, is_loopback
from jaxstyle.studio.jobs import Request as JobRequest
from jaxstyle.studio.jobs import Snapshot
from jaxstyle.studio.limits import TooLarge
from jaxstyle.studio.requests import job_request, read_body, read_json
from jaxstyle.studio.store import RunFolder, display_name, mask_png, preview_png
from jaxstyle.studio.worker import Busy, Worker
from jaxstyle.weights import find_weights, load_weights

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


def create_app(config: StudioConfig) -> Guard:
    """The studio as an ASGI app; its lifespan starts and stops the worker thread.

    Its Starlette app's ``state`` holds the ``worker`` and ``close_now``, which ends every event
    stream and asks the worker to stop, waiting for nothing (a server stopping calls it first,
    so that open pages do not hold the shutdown up).
    """
    folder = RunFolder(config.folder, config.max_pixels, config.max_bytes, config.run_budget)
    worker = Worker(folder, config.weights, config.log)
    closing = threading.Event()
    encoded: dict[int, tuple[int, bytes]] = {}  # job -> (frame seq, PNG): the newest only

    def job_of(request: Request):
        job_id = limits.job_id(request.path_params["job"])
        job = None if job_id is None else worker.job(job_id)
        if job is None:
            raise Missing("no such job")
        return job

    async def index(request: Request) -> Response:
        if config.token is not None and "token" in request.query_params:
            response = RedirectResponse("/", 303)  # the token leaves the address bar
            response.set_cookie(cookie_name(config.port), config.token, httponly=True,
                                samesite="strict")
            return response
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def state(request: Request) -> Response:
        current = worker.current()
        network = worker.network
        return JSONResponse({
            "network": None if network is None else f"{network.network} from {network.source}",
            "network_label": None if network is None else network.label(),
            "network_random": bool(network is not None and network.is_random),
            "network_error": worker.network_error,
            "form": form.form_schema(),
            "images": [e.public() for e in folder.images()],
            "history": worker.records(),
            "job": public(current.snapshot if current else None),
            "limits": {"max_bytes": config.max_bytes, "max_pixels": config.max_pixels},
        })

    async def received(request: Request, default: str, keep) -> tuple[object, Response | None]:
        # An upload's body within the byte limit, checked and kept by `keep` off the event loop:
        # (entry, None), or (None, the error response naming the upload).
        name = display_name(unquote(request.headers.get("x-filename", default)))
        try:
            data = await read_body(request, config.max_bytes)
            return await run_in_threadpool(keep, data, name), None
        except TooLarge as exc:
            return None, error(f"{name}: {exc} (the upload limit)", 413)
        except ImageError as exc:
            return None, error(str(exc))

    async def upload(request: Request) -> Response:
        entry, refused = await received(request, "upload", folder.add_upload)
        return refused or JSONResponse({"image": entry.public()})

    async def upload_mask(request: Request) -> Response:
        entry, refused = await received(request, "mask", folder.add_mask)
        return refused or JSONResponse({"mask": {"id": entry.id, "width": entry.width,
                                                 "height": entry.height}})

    async def mask_image(request: Request) -> Response:
        try:
            mask = await run_in_threadpool(folder.load_mask, request.path_params["mask"])
        except ImageError as exc:
            return error(str(exc), 404)
        return Response(await run_in_threadpool(mask_png, mask), media_type="image/png")

    async def image_preview(request: Request) -> Response:
        try:
            data = await run_in_threadpool(folder.preview, request.path_params["image"])
        except ImageError as exc:
            return error(str(exc), 404)
        return Response(data, media_type="image/png", headers={"cache-control": "max-age=3600"})

    async def submit(job_request_: JobRequest) -> Response:
        try:
            job = worker.submit(job_request_)
        except Busy as exc:
            return error(str(exc), 409)
        return JSONResponse({"job": public(job.snapshot)}, 202)

    async def start_run(request: Request) -> Response:
        try:
            data = await read_json(request)
            return await submit(await run_in_threadpool(job_request, data, "run", folder))
        except OptionsError as exc:
            return options_error(exc)

    async def start_sweep(request: Request) -> Response:
        try:
            data = await read_json(request)
            return await submit(await run_in_threadpool(job_request, data, "sweep", folder))
        except OptionsError as exc:
            return options_error(exc)

    async def check(request: Request) -> Response:
        values = (await read_json(request)).get("options") or {}
        if not isinstance(values, dict):
            raise JaxstyleError("options must be an object")
        try:
            await run_in_threadpool(form.options_from_values, values)
        except OptionsError as exc:
            return options_error(exc)
        return JSONResponse({"error": None})

    async def continue_run(request: Request) -> Response:
        job_id = limits.job_id(request.path_params["job"])
        if job_id is None:
            raise Missing("no such job")
        data = await read_json(request)
        more = limits.whole_number("continue: iterations", data.get("iterations"),
                                   _MORE_ITERATIONS)
        return await submit(await run_in_threadpool(worker.continuation, job_id, more))

    async def stop(request: Request) -> Response:
        job = worker.stop()
        return JSONResponse({"job": public(job.snapshot if job else None)})

    async def events(request: Request) -> Response:
        job = job_of(request)

        async def stream():
            sent, quiet = None, 0.0
            while not closing.is_set():
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

    async def frame(request: Request) -> Response:
        job = job_of(request)
        seq, image = job.frame()
        if image is None:
            return error("no picture yet", 404)
        kept = encoded.get(job.id)
        if kept is None or kept[0] != seq:
            kept = encoded[job.id] = (seq, await run_in_threadpool(preview_png, image))
            for other in [k for k in encoded if k != job.id]:
                del encoded[other]
        return Response(kept[1], media_type="image/png", headers={"x-frame": str(seq)})

    def run_file(request: Request, name: str) -> Path:
        job_id = limits.job_id(request.path_params["job"])
        record = None if job_id is None else worker.record(job_id)
        if record is None or record.get("status") == "failed":
            raise Missing("no such result")
        return folder.run_dir(record["id"]) / name

    async def result_image(request: Request) -> Response:
        path = run_file(request, SHEET)
        path = path if path.is_file() else path.with_name(RESULT)
        name = f"jaxstyle-{request.path_params['job']}-{path.name}"
        if request.query_params.get("download"):
            return FileResponse(path, media_type="image/png", filename=name)
        return FileResponse(path, media_type="image/png")

    async def run_mask(request: Request) -> Response:
        job_id = limits.job_id(request.path_params["job"])
        record = None if job_id is None else worker.record(job_id)
        files = (record or {}).get("mask_files") or {}
        name = request.path_params["name"]
        if name not in [*files.get("style", ()), files.get("content")]:
            raise Missing("no such mask")
        return FileResponse(run_file(request, name), media_type="image/png",
                            filename=f"jaxstyle-{request.path_params['job']}-{name}")

    async def thumbnail(request: Request) -> Response:
        path = run_file(request, SHEET)
        path = path if path.is_file() else path.with_name(RESULT)
        data = await run_in_threadpool(_thumbnail, path)
        return Response(data, media_type="image/png")

    async def report(request: Request) -> Response:
        path = run_file(request, REPORT)
        return FileResponse(path, media_type="application/json",
                            filename=f"jaxstyle-{request.path_params['job']}-report.json")

    async def bad_input(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, Missing) else 413 if isinstance(exc, TooLarge) else 400
        return error(str(exc), status)

    def close_now() -> None:
        closing.set()
        worker.close(timeout=0)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            closing.set()
            await run_in_threadpool(worker.close, _STOP_SECONDS)

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/images", upload, methods=["POST"]),
        Route("/api/images/{image}/preview.png", image_preview),
        Route("/api/masks", upload_mask, methods=["POST"]),
        Route("/api/masks/{mask}/mask.png", mask_image),
        Route("/api/check", check, methods=["POST"]),
        Route("/api/runs", start_run, methods=["POST"]),
        Route("/api/sweeps", start_sweep, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Route("/api/jobs/{job}/continue", continue_run, methods=["POST"]),
        Route("/api/jobs/{job}/events", events),
        Route("/api/jobs/{job}/frame.png", frame),
        Route("/api/jobs/{job}/image.png", result_image),
        Route("/api/jobs/{job}/thumb.png", thumbnail),
        Route("/api/jobs/{job}/masks/{name}", run_mask),
        Route("/api/jobs/{job}/report.json", report),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={JaxstyleError: bad_input})
    app.state.worker = worker
    app.state.close_now = close_now
    return Guard(app, config.port, config.host, config.token)


def _thumbnail(path: Path) -> bytes:
    from jaxstyle.images import load_image

    return preview_png(load_image(path), _THUMB_SIDE)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) and listening (port 0: any free port).

    Raises:
      JaxstyleError: the address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise JaxstyleError(f"--host {host} --port {port}: cannot listen there "
                            f"({exc.strerror or exc}); --port 0 takes any free port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: Guard):
    """A uvicorn server for the studio that, once a signal asks it to stop, first ends the
    page's event streams and asks the worker to stop (uvicorn would otherwise wait for the
    streams, and only then tell the app)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            app.app.state.close_now()
            await super().shutdown(sockets)

    return Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                 timeout_graceful_shutdown=1))


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, weights: str | None = None,
          folder: str | None = None, open_browser: bool = False,
          max_pixels: int = DEFAULT_MAX_PIXELS, max_upload_mb: float = MAX_UPLOAD_MB,
          log: Callable[[str], None] = print, disk_budget_mb: float = DISK_BUDGET_MB) -> int:
    """``jaxstyle studio``: serves the page until interrupted; returns the exit code.

    Args:
      host: the address to bind; anything but the loopback interface requires a token, which
        is printed in the address.
      port: the port (0: any free one).
      weights: as ``--weights``.
      folder: the run folder (default: a new folder in the temporary directory).
      open_browser: open the page in the default browser once listening.
      max_pixels: refuse uploads with more pixels than this; max_upload_mb: or more MiB.
      log: where the address and one-line messages go.
      disk_budget_mb: MiB the finished runs' folders may take (`StudioConfig.run_budget`).

    Raises:
      KeyboardInterrupt: stopped by Ctrl-C (or SIGTERM). If the worker is still inside a
        compilation or a chunk a few seconds after the signal, the process ends at once
        instead (status 128 + the signal's number), its temporary folder removed: XLA cannot
        be interrupted, and Python cannot end with a thread still running in it.
    """
    _check_arguments(host, weights, folder, max_upload_mb, disk_budget_mb)
    sock = listen(host, port)
    port = sock.getsockname()[1]
    token = None if is_loopback(host) else secrets.token_urlsafe(24)
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="jaxstyle-studio-"))
    server = None
    try:
        url = _address(host, port, token)
        config = StudioConfig(root, port, host, weights, token, max_pixels,
                              int(max_upload_mb * 2**20), log, int(disk_budget_mb * 2**20))
        app = create_app(config)
        _announce(log, url, token, root, kept=bool(folder))
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        server = _uvicorn_server(app)
        server.run(sockets=[sock])
    finally:
        signals = server._captured_signals if server is not None else []
        stuck = bool(signals) and not app.app.state.worker.close(timeout=0)
        if not folder:
            shutil.rmtree(root, ignore_errors=True)
        if stuck:
            log("jaxstyle: interrupted")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signals[0])
    if server._captured_signals:
        # uvicorn re-raises the signal that stopped it once shut down, which normally ends
        # here as KeyboardInterrupt; if that was lost (seen once, under load), still say so.
        raise KeyboardInterrupt
    return 0


def _check_arguments(host: str, weights: str | None, folder: str | None, max_upload_mb: float,
                     disk_budget_mb: float) -> None:
    """`serve`'s arguments checked before it listens: each error names its flag.

    Raises:
      JaxstyleError: an empty host, a budget that is not a number > 0, a weights file that
        cannot be loaded, or a run folder that cannot be made.
    """
    if not host.strip():  # the socket would bind every interface, and the address shows none
        raise JaxstyleError("--host: is empty (give an address: 127.0.0.1 for this machine "
                            "only, 0.0.0.0 for every interface)")
    if not 0 < disk_budget_mb < math.inf:
        raise JaxstyleError(f"--disk-budget-mb: must be a number > 0 "
                            f"(got {disk_budget_mb})")
    if not 0 < max_upload_mb < math.inf:
        raise JaxstyleError(f"--max-upload-mb: must be a number > 0 (got {max_upload_mb})")
    limit_arenas()  # before the worker and XLA's threads allocate: see jaxstyle.studio.allocator
    if weights not in (None, "random"):
        # An explicit file fails here, not later on the page: the default search may still
        # find nothing, which the page says (so a first user learns it in the browser).
        try:
            load_weights(find_weights(weights))
        except JaxstyleError as exc:
            raise JaxstyleError(f"--weights {weights}: {exc}") from None
    if folder:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JaxstyleError(f"--dir {folder}: cannot be the run folder "
                                f"({exc.strerror or exc})") from None


def _address(host: str, port: int, token: str | None) -> str:
    """The page's address: the host as the browser takes it (this machine's name when bound to
    every interface), with the token where one is required."""
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def _announce(log: Callable[[str], None], url: str, token: str | None, root: Path,
              kept: bool) -> None:
    """The lines that tell where the studio is and where its runs go (`kept`: a folder the
    user chose, which outlives the server)."""
    log(f"jaxstyle studio: {url}")
    if token:
        log("  listening beyond this machine: the page needs the token in this address; "
            "anyone with the address can use the studio")
    log(f"  run folder: {root}" + ("" if kept else
        " (removed when the server stops; --dir chooses a folder to keep)")
        + "; Ctrl-C stops the server")
