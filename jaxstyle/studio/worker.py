"""The studio's one worker thread: it runs one job at a time in the server's process, and keeps
the network, the style targets and the compiled functions warm between jobs.

JAX does not survive ``fork``, so jobs run in a thread, not a child process. What a job shows
the page is its `jaxstyle.studio.jobs.Snapshot` and newest picture.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from jaxstyle.errors import JaxstyleError
from jaxstyle.images import load_mask
from jaxstyle.inputs import Inputs
from jaxstyle.options import StyleOptions
from jaxstyle.pipeline import Network, Outcome, network_of, run_command
from jaxstyle.run_state import RunState
from jaxstyle.stages import continued
from jaxstyle.studio import form
from jaxstyle.studio.commands import RESULT, SHEET, StudioRun, StudioSweep, save_masks
from jaxstyle.studio.jobs import Job, Request, thin_plot
from jaxstyle.studio.store import RunFolder
from jaxstyle.studio.transport import PageTransport
from jaxstyle.weights import resolve_weights, usage_line

_STYLE_CACHES = 4  # style-target caches kept (one per set of styles and options)
_TERM_WEIGHTS = ("style_strength", "content_weight", "style_weight", "tv_weight",
                 "style_layer_weights", "temporal_weight")
"""Options that only weigh the objective's terms (`StyleOptions.loss_weights`): the style
targets do not depend on them (the blend weights, which do, are not among them)."""
_GEOMETRIES = 16
"""Distinct input geometries (the size option and the inputs' shapes) whose compiled code
jax's own jit caches keep (the style targets, the quality measures, resizing: each XLA:CPU
executable holds memory and memory mappings). A job bringing one more clears those caches
first; the run's own executables are bounded apart (`jaxstyle.compiled.COMPILED`, 16)."""


class Busy(JaxstyleError):
    """A job was submitted while another runs."""


class Worker:
    """Runs jobs one at a time in its own thread.

    Args:
      folder: the server's run folder.
      weights: ``--weights`` as the command line takes it (a file, 'random' or None: the
        default search); loaded once, in the thread, when the worker starts.
      log: where one-line messages go (the server's console).
    """

    def __init__(self, folder: RunFolder, weights: str | None, log: Callable[[str], None]):
        self.folder, self.weights_spec, self.log = folder, weights, log
        self.network = None
        self.network_error: str | None = None
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._jobs: OrderedDict[int, Job] = OrderedDict()  # those the history still shows
        self._last_id = 0
        self._records: OrderedDict[int, dict] = OrderedDict()
        self._states: dict[int, tuple[Request, RunState]] = {}  # newest run's, to continue
        self._style_caches: OrderedDict[tuple, dict] = OrderedDict()
        self._geometries: set[tuple] = set()  # seen since jax's caches were last cleared
        self._wake = threading.Condition(self._lock)
        self._pending: Job | None = None
        self._current: Job | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="jaxstyle-studio-worker",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Asks the running job to stop after its chunk and the thread to end, and waits for
        that up to `timeout` seconds (0: not at all); returns whether the thread has ended (a
        compilation, a chunk or loading the network cannot be cut short)."""
        with self._lock:
            self._closing = True
            for job in (self._pending, self._current):
                if job is not None:
                    job.stop.set()
            self._wake.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # What the server asks.

    def submit(self, request: Request) -> Job:
        """Queues a job, or refuses it while another is queued or running.

        Raises:
          Busy: a job is running (the message says which and how far it is).
          JaxstyleError: the network could not be loaded, or the request cannot continue.
        """
        if self.network_error:
            raise JaxstyleError(self.network_error)
        with self._lock:
            # A job the page has seen finish no longer blocks, though the worker may still be
            # recording it (its history entry, the disk budget): the next job waits for that.
            running = self._pending or self._current
            if running is not None and not running.snapshot.finished:
                s = running.snapshot
                raise Busy(f"{s.kind} {s.job} is still running ({s.iteration}/{s.total}): "
                           "stop it or wait for it to finish, then try again")
            for earlier in self._jobs.values():
                earlier.forget_picture()  # the history keeps their files; memory keeps one
            self._last_id += 1
            job = Job(self._last_id, request)
            self._jobs[job.id] = job
            self._pending = job
            self._wake.notify_all()
        return job

    def job(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def current(self) -> Job | None:
        with self._lock:
            return self._pending or self._current

    def stop(self) -> Job | None:
        """Asks the running job to stop after its chunk; returns it (None: nothing runs)."""
        job = self.current()
        if job is not None:
            job.stop.set()
            if not job.snapshot.finished:
                job.update(status="stopping", message="stopping after this chunk",
                           stop_asked=job.snapshot.stop_asked
                           or time.perf_counter() - job.submitted)
        return job

    def records(self) -> list[dict]:
        """The history of this session's jobs, newest first."""
        with self._lock:
            return [dict(r, can_continue=r["id"] in self._states)
                    for r in reversed(self._records.values())]

    def record(self, job_id: int) -> dict | None:
        with self._lock:
            found = self._records.get(job_id)
            return dict(found, can_continue=job_id in self._states) if found else None

    def continuation(self, job_id: int, more: int) -> Request:
        """The request that runs job `job_id` for `more` iterations from where it ended, with its
        optimizer state.

        Raises:
          JaxstyleError: that job's state is not kept (only the newest run's is), or `more` < 1.
        """
        if more < 1:
            raise JaxstyleError(f"continue: iterations must be >= 1 (got {more})")
        with self._lock:
            kept = self._states.get(job_id)
        if kept is None:
            raise JaxstyleError(f"run {job_id} cannot be continued: only the newest run keeps its "
                                "optimizer state")
        request, state = kept
        options = continued(request.options, self.folder.load(request.content).shape,
                            state.stage, state.iteration, more)
        return request._replace(options=options, resume=(job_id, state))

    # The thread.

    def _loop(self) -> None:
        try:
            network, _ = resolve_weights(self.weights_spec, StyleOptions().seed)
            # On the device once, for every job: from NumPy, each job converted the kernels
            # again, with a small program per kernel shape (`jnp.asarray`) to look up.
            self.network = dataclasses.replace(network, params=jax.device_put(network.params))
            # What start-up made (modules, JAX's and Flax's machinery) lives as long as the
            # server: out of the collector's way, a job's collections are cheaper (tracing
            # makes many; about 0.15 s of a new server's first picture at load 10).
            gc.freeze()
            self.log(usage_line(self.network))
        except Exception as exc:  # noqa: BLE001 -- shown on the page; the server keeps serving
            self.network_error = f"the network could not be loaded: {exc}"
            self.log(self.network_error)
        finally:
            self.ready.set()
        while True:
            with self._lock:
                while self._pending is None and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                job, self._pending = self._pending, None
                self._current = job
            try:
                self._run(job)
            except JaxstyleError as exc:
                self._finish(job, None, status="failed", message=str(exc))
            except Exception as exc:  # noqa: BLE001 -- a bug must not take the server down
                self.log(f"job {job.id} failed: {type(exc).__name__}: {exc}")
                self._finish(job, None, status="failed", message=f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._current = None

    def _run(self, job: Job) -> None:
        request = job.request
        if self.network is None:
            raise JaxstyleError(self.network_error or "no network")
        content = self.folder.load(request.content)
        styles = [self.folder.load(i) for i in request.styles]
        self._bound_jit_caches((request.options.plan.size, request.options.objective.style_scale,
                                content.shape, *(s.shape for s in styles)))
        entries = [self.folder.image(i) for i in (request.content, *request.styles)]
        inputs = {"content": self._describe(entries[0]),
                  "styles": [self._describe(e) for e in entries[1:]]}
        folder = self.folder.run_dir(job.id)
        start = self._start_sweep if request.kind == "sweep" else self._start_run
        outcome = start(job, content, styles, inputs, folder)
        job.show(outcome.image)
        record = self._record(job, outcome)
        message = (f"stopped at {outcome.iteration}" if outcome.status == "stopped"
                   else "finished") + (f"; {record['summary']}" if record.get("summary") else "")
        self._finish(job, outcome.state, status=outcome.status, iteration=outcome.iteration,
                     message=message, frame=job.frame()[0], eta=0.0, record=record)

    def _start_run(self, job: Job, content: np.ndarray, styles: list[np.ndarray], inputs: dict,
                   folder: Path) -> Outcome:
        request, options = job.request, job.request.options
        where = self.folder.relative(folder)
        style_files, content_file = save_masks(
            folder, None if request.style_masks is None else [
                None if m is None else self.folder.load_mask(m) for m in request.style_masks],
            None if request.content_mask is None else self.folder.load_mask(request.content_mask))
        # The run reads the files it saved, as the command line it shows would.
        style_masks = [load_mask(folder / n, self.folder.max_pixels) for n in style_files]
        content_mask = None if content_file is None else load_mask(folder / content_file,
                                                                   self.folder.max_pixels)
        inputs["command"] = form.command_line(
            options, inputs["content"]["file"], [s["file"] for s in inputs["styles"]],
            f"{where}/{RESULT}", self._weights_arg(),
            style_masks=[f"{where}/{n}" for n in style_files],
            content_mask=content_file and f"{where}/{content_file}")
        job.mask_files = {"style": list(style_files), "content": content_file}
        resume = request.resume[1] if request.resume else None
        job.update(status="running", total=options.optimization.iterations,
                   message="starting: the targets, and compiling the first time at a size")
        if resume is not None:
            # The job keeps which run it continues, not that run's state (hundreds of MB).
            job.request = request._replace(resume=(request.resume[0], None))
            job.update(iteration=resume.iteration, plot=thin_plot(tuple(
                (i + 1, v) for i, v in enumerate(resume.history.get("total", ())))))
        images = Inputs(styles=styles, content=content, style_masks=style_masks or None,
                        content_mask=content_mask)
        run = StudioRun(options=options, inputs=images, folder=folder, fields=inputs,
                        resume=resume, style_cache=self._style_cache(request))
        return run_command(run, PageTransport(job, options.performance.progress_every),
                           self._network())

    def _start_sweep(self, job: Job, content: np.ndarray, styles: list[np.ndarray],
                     inputs: dict, folder: Path) -> Outcome:
        request = job.request
        inputs["command"] = form.command_line(
            request.options, inputs["content"]["file"], [s["file"] for s in inputs["styles"]],
            f"{self.folder.relative(folder)}/{SHEET}", self._weights_arg(),
            command="sweep", extra=[word for axis in request.axes for word in _vary(*axis)])
        job.update(status="running", total=math.prod(len(v) for _, v in request.axes),
                   message="the first cell is running")
        sweep = StudioSweep(options=request.options, inputs=Inputs(styles=styles, content=content),
                            axes=request.axes, output=folder / SHEET, fields=inputs)
        return run_command(sweep, PageTransport(job, request.options.performance.progress_every),
                           self._network())

    def _finish(self, job: Job, state: RunState | None, **changes) -> None:
        """Keeps a job's history entry and state, then shows it finished with `changes` (so a
        page that sees it finished finds both, and can start the next job)."""
        snapshot = job.snapshot._replace(**changes)
        with self._lock:
            if state is not None:
                self._states = {job.id: (job.request, state)}  # the newest run's only: its size
            self._records[job.id] = snapshot.record or {
                "id": job.id, "kind": job.request.kind, "status": snapshot.status,
                "message": snapshot.message, **_inputs(job.request),
                "options": form.values(job.request.options),
                "settings": form.settings(job.request.options)}
            keep = {job.id, *self._states}
        # Over the disk budget, the oldest runs leave the folder and the history together.
        removed = self.folder.evict(keep)
        with self._lock:
            for run_id in removed:
                self._records.pop(run_id, None)
                self._jobs.pop(run_id, None)
        job.update(**changes)

    def _record(self, job: Job, outcome: Outcome) -> dict:
        """The history entry of a finished job (what the page lists and reloads)."""
        request, report = job.request, outcome.report
        quality = report.get("quality")
        record = {
            "id": job.id, "kind": request.kind, "status": outcome.status, **_inputs(request),
            "mask_files": job.mask_files,
            "options": form.values(request.options), "settings": form.settings(request.options),
            "iteration": outcome.iteration, "continued_from": request.resume[0]
            if request.resume else None, "seconds": time.perf_counter() - job.submitted,
            "size": list(outcome.image.shape[:2]),
        }
        if report.get("command"):
            record["command"] = report["command"]
        if request.kind == "sweep":
            record["vary"] = report["vary"]
        if quality:
            record["quality"] = {
                "style_gram_ratio": quality["style_gram_ratio"],
                "style_sliced_wasserstein_ratio": quality["style_sliced_wasserstein_ratio"],
                "content": float(np.mean(list(quality["content"].values())))}
            record["losses"] = report["final_losses"]
            record["summary"] = (f"style x{quality['style_gram_ratio']:.3g} Gram, "
                                 f"x{quality['style_sliced_wasserstein_ratio']:.3g} SW; "
                                 f"content {record['quality']['content']:.3g}")
        return record

    def _bound_jit_caches(self, geometry: tuple) -> None:
        """Clears jax's jit caches when `geometry` would be the (`_GEOMETRIES` + 1)th distinct
        one since they were last cleared (in this thread, between jobs: nothing compiles)."""
        if geometry not in self._geometries and len(self._geometries) >= _GEOMETRIES:
            jax.clear_caches()
            self._geometries.clear()
            self.log(f"studio: cleared jax's compiled-code caches after {_GEOMETRIES} input "
                     "sizes")
        self._geometries.add(geometry)

    def _network(self) -> Network:
        """The network the worker keeps open, as the pipeline takes it."""
        return network_of(self.network, self._weights_arg() or "")

    def _weights_arg(self) -> str | None:
        return None if self.weights_spec is None else str(self.weights_spec)

    def _describe(self, entry) -> dict:
        return {"name": entry.name, "sha256": entry.sha256,
                "file": self.folder.relative(entry.path)}

    def _style_cache(self, request: Request) -> dict:
        """The style targets kept for these styles and options (`stylize`'s ``style_cache``).

        Everything but the iteration count and the terms' weights (`_TERM_WEIGHTS`, put back to
        the preset's) goes into the key: style targets depend on the layers, losses, scales,
        sizes and blend weights, and a superfluous miss only costs a forward pass.
        """
        # With regions each style has its own targets; without, they are blended into one.
        key = (request.styles, request.style_masks is not None,
               request.options.replace(iterations=0, **dict.fromkeys(_TERM_WEIGHTS)))
        with self._lock:
            cache = self._style_caches.setdefault(key, {})
            self._style_caches.move_to_end(key)
            while len(self._style_caches) > _STYLE_CACHES:
                self._style_caches.popitem(last=False)
        return cache


def _inputs(request: Request) -> dict:
    """A request's inputs as its history entry names them (ids, as the page knows them)."""
    return {"content": request.content, "styles": list(request.styles),
            "style_masks": None if request.style_masks is None else list(request.style_masks),
            "content_mask": request.content_mask}


def _vary(name: str, values: tuple) -> list[str]:
    """``--vary`` for an axis, as ``jaxstyle sweep`` takes it (';' between list values)."""
    texts = [",".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in values]
    separator = ";" if any(isinstance(v, tuple) for v in values) else ","
    return ["--vary", f"{name}={separator.join(texts)}"]


