"""The studio's HTTP side: a Starlette app and `serve` for ``jaxstyle studio``.

The page is static files shipped with the package (no CDN, no build step). It talks to this
JSON API, follows a job through server-sent events (small JSON snapshots, the newest only) and
fetches the newest picture when it is ready for one. Every request first passes
`jaxstyle.studio.guard.Guard`, then `jaxstyle.studio.limits` bounds what it holds; whatever
takes more than a moment (parsing and checking a request, decoding, encoding) runs in a
thread, so the event loop keeps answering every other request.
"""

from __future__ import annotations

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

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.errors import JaxstyleError
from jaxstyle.studio import DEFAULT_PORT, DISK_BUDGET_MB, MAX_UPLOAD_MB
from jaxstyle.studio.allocator import limit_arenas
from jaxstyle.studio.guard import Guard, is_loopback
from jaxstyle.studio.handlers import STATIC, Handlers, StudioConfig
from jaxstyle.weights import find_weights, load_weights


def create_app(config: StudioConfig) -> Guard:
    """The studio as an ASGI app (`Handlers` behind its route table); its lifespan starts and
    stops the worker thread. Its Starlette app's ``state`` holds the ``worker`` and
    ``close_now`` (`Handlers.close_now`)."""
    h = Handlers(config)
    routes = [
        Route("/", h.index),
        Route("/api/state", h.state),
        Route("/api/images", h.upload, methods=["POST"]),
        Route("/api/images/{image}/preview.png", h.image_preview),
        Route("/api/masks", h.upload_mask, methods=["POST"]),
        Route("/api/masks/{mask}/mask.png", h.mask_image),
        Route("/api/check", h.check, methods=["POST"]),
        Route("/api/runs", h.start_run, methods=["POST"]),
        Route("/api/sweeps", h.start_sweep, methods=["POST"]),
        Route("/api/stop", h.stop, methods=["POST"]),
        Route("/api/jobs/{job}/continue", h.continue_run, methods=["POST"]),
        Route("/api/jobs/{job}/events", h.events),
        Route("/api/jobs/{job}/frame.png", h.frame),
        Route("/api/jobs/{job}/image.png", h.result_image),
        Route("/api/jobs/{job}/thumb.png", h.thumbnail),
        Route("/api/jobs/{job}/masks/{name}", h.run_mask),
        Route("/api/jobs/{job}/report.json", h.report),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes, lifespan=h.lifespan,
                    exception_handlers={JaxstyleError: h.bad_input})
    app.state.worker = h.worker
    app.state.close_now = h.close_now
    return Guard(app, config.port, config.host, config.token)


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
