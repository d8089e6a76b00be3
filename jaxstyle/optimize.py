"""Minimizing a loss over an image: the run, chunk by chunk, with stop rules and progress.

`minimize` strings compiled chunks of iterations together (`jaxstyle.steps.chunk_functions`),
returning to Python only between chunks: to report `Progress`, to check a `StopRule`, and to
stop at a NaN. The optimizer itself, state in and new state out, is `jaxstyle.steps.optimizer`
(or `jaxstyle.lbfgs.CompactLBFGS` alone); the compiled code and the memory check are
`jaxstyle.compiled`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.compiled import COMPILED, CompileCache, check_memory
from jaxstyle.errors import OptimizationError
from jaxstyle.steps import CHANGE, LoopState, Loss, OptimizerConfig, chunk_functions

STALL_WINDOW = 10
"""Iterations over which a `StopRule` measures progress; it is checked every this many
iterations of a run (whatever the chunk length), so where a run stops does not depend on how
often it reports."""


class StopRule(NamedTuple):
    """When `minimize` ends a run before its iterations, checked every `STALL_WINDOW` iterations
    over the last `STALL_WINDOW` (0 turns a rule off; with both on, either stops).

    Attributes:
      loss: the loss fell by less than this fraction per iteration (a rising loss never stops).
      change: the picture changed by less than this many grey levels per iteration, on
        average over its pixels (for a batch: every image's did).
    """

    loss: float = 0.0
    change: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.loss or self.change)

    def met(self, history: dict[str, list]) -> bool:
        """Whether the run whose history (each entry a loss, or per-image losses for a batch)
        this is should stop now."""
        return bool(self.loss and stalled(history["total"], self.loss)
                    or self.change and settled(history[CHANGE], self.change))


class Continuation(NamedTuple):
    """Where a run continues from; `minimize`'s ``x0`` is the image this state belongs to.

    Attributes:
      state: the optimizer state, a `LoopState` (a `MinimizeResult`'s or a `Progress`'s).
      iteration: iterations already done.
      history: the loss history of those iterations, which the result's continues (None: the
        result's history holds only the new iterations).
      recent: the history of the iterations just before `iteration`, which the stop rule's
        window may reach back into (so that a resumed run stops where the uninterrupted one
        would).
    """

    state: LoopState
    iteration: int = 0
    history: dict[str, list] | None = None
    recent: dict[str, list] | None = None


@dataclass
class Progress:
    """Reported to `minimize`'s callback after each chunk.

    Attributes:
      iteration: iterations done so far.
      total_iterations: iterations asked for.
      x: the current image in model space, float32 [H, W, 3].
      state: the optimizer state (the whole run can continue from ``x`` and ``state``).
      value: the current total loss.
      components: the current loss components.
      evaluations: loss-and-gradient evaluations so far.
      elapsed: seconds since `minimize` started, compilation included.
      history: the loss after each iteration so far, by component.
    """

    iteration: int
    total_iterations: int
    x: jax.Array
    state: Any
    value: float
    components: dict[str, float]
    evaluations: int
    elapsed: float
    history: dict[str, list[float]]


class MinimizeResult(NamedTuple):
    """What `minimize` returns.

    Attributes:
      x: the final image, of ``x0``'s shape.
      state: the final optimizer state (a `LoopState`; the run can continue from ``x`` and it).
      history: the loss after each iteration, by component (per-image lists for a batch).
      evaluations: loss-and-gradient evaluations, counted by the optimizer.
      compile_seconds: seconds spent compiling (or waiting for another thread's compilation).
      run_seconds: the rest of `minimize`'s seconds.
    """

    x: jax.Array
    state: LoopState
    history: dict[str, list[float]]
    evaluations: int
    compile_seconds: float
    run_seconds: float


def minimize(
    loss: Loss,
    x0: jax.Array,
    config: OptimizerConfig,
    iterations: int,
    *,
    stop: StopRule = StopRule(),
    callback: Callable[[Progress], None] | None = None,
    chunk: int = 10,
    chunk_ends: Callable[[int], bool] | None = None,
    resume: Continuation | None = None,
    memory_limit: int | None = None,
    cache: CompileCache | None = None,
) -> MinimizeResult:
    """Minimizes ``loss.fun(x, *loss.args, loss.static) -> (value, aux)`` over the image `x`.

    Args:
      loss: what is minimized, e.g. ``Loss(jaxstyle.objective, loss_config, (params,
        targets))``; with ``batch_axes``, a batch of images (history entries are then
        per-image lists, and `Progress` reports sums over the batch).
      x0: the starting image, float32 [H, W, 3] in model space ([B, H, W, 3] for a batch).
      config: the optimizer.
      iterations: total iterations to reach (counting ``resume.iteration``).
      stop: end the run early once its `StopRule` is met (checked every `STALL_WINDOW`
        iterations, counting from 0, over the history including ``resume.recent``).
      callback: called with a `Progress` after every chunk.
      chunk: most iterations per compiled call; each chunk ends with a `callback` call.
      chunk_ends: ``iteration -> bool``, extra iterations at which a chunk must end (e.g.
        where images are saved).
      resume: the state, iteration and history to continue from (with `x0` its image).
      memory_limit: refuse to start when the estimated peak exceeds this many bytes (default:
        the memory free on the device); 0 disables the check.
      cache: where compiled executables are kept and reused (default
        `jaxstyle.compiled.COMPILED`).

    Returns:
      The final image and state, the loss history by component, evaluations and timings.

    Raises:
      OptimizationError: a loss became NaN or infinite; the message names the loss.
      OutOfMemoryError: the run would not fit in memory (checked before anything is allocated).
    """
    cache = cache or COMPILED
    start = time.perf_counter()  # the memory estimate compiles the run: count it as compilation
    check_memory(loss, x0, config, chunk, memory_limit, cache)
    x, state, compiled_chunk = _start(loss, x0, config, chunk, resume, cache)
    compile_seconds = cache.seconds_since(start)
    done, history, recent = _history_from(resume, state)
    progress = lambda done, x, state: _progress(done, iterations, x, state, start, history)
    while done < iterations:
        n = _chunk_length(done, min(chunk, iterations - done), stop, chunk_ends)
        args = loss.args if loss.chunk_args is None else loss.chunk_args(done)
        x, state, done = _run_chunk(compiled_chunk(x, state, jnp.asarray(n), *args), done,
                                    history, progress)
        if callback is not None:
            callback(progress(done, x, state))
        if stop and done % STALL_WINDOW == 0 and stop.met(
                {k: [*recent.get(k, ()), *history[k]] for k in ("total", CHANGE)}):
            break
    total = time.perf_counter() - start
    return MinimizeResult(x, state, history, num_evaluations(state), compile_seconds,
                          total - compile_seconds)


def _run_chunk(result, done: int, history: dict, progress: Callable[..., Progress]
               ) -> tuple[jax.Array, LoopState, int]:
    """Waits for one chunk's `result` and appends its iterations to `history`: the image,
    state and iterations done after it. Raises `OptimizationError` (its last good image from
    ``progress(done, x, state)``) if the chunk diverged."""
    _wait_in_python(result.steps)
    done += int(result.steps)
    for key, values in result.history.items():
        history[key].extend(np.asarray(values[:int(result.steps)]).tolist())
    if bool(result.diverged):
        raise _diverged(result, done, progress(done, result.x, result.state))
    return result.x, result.state, done


def _history_from(resume: Continuation | None, state) -> tuple[int, dict, dict]:
    """``(iterations done, history to extend, recent history before it)`` of a run that starts
    from `resume` (None: from the beginning) with the optimizer state `state`."""
    done, earlier, recent = (0, {}, {}) if resume is None else (
        resume.iteration, resume.history or {}, resume.recent or {})
    history = {k: list(v) for k, v in earlier.items()}
    for key in ("total", CHANGE, *state.opt.aux):
        history.setdefault(key, [])
    return done, history, recent


def _diverged(result, done: int, last_good: Progress) -> OptimizationError:
    """The error of a chunk whose loss became NaN or infinite after `done` good iterations."""
    bad = sorted(k for k, v in result.bad_aux.items() if not jnp.all(jnp.isfinite(v)))
    return OptimizationError(
        f"the loss became NaN or infinite at iteration {done + 1} "
        f"(bad: {', '.join(bad) or 'total'}); the last good image is from iteration {done}",
        last_good=last_good,
    )


def _start(loss: Loss, x0: jax.Array, config: OptimizerConfig, chunk: int,
           resume: Continuation | None, cache: CompileCache) -> tuple:
    """The image and state a run starts from, and its compiled chunk. The chunks donate their
    image and state buffers: these are copies, which keep the caller's arrays alive."""
    init, run_chunk = chunk_functions(loss.fun, loss.static, config, chunk, loss.batch_axes)
    x0 = jnp.array(x0, copy=True)
    if resume is None:
        state = cache.compile(init, x0, *loss.args)(x0, *loss.args)
    else:
        state = jax.tree_util.tree_map(lambda leaf: jnp.array(leaf, copy=True), resume.state)
    return x0, state, cache.compile(run_chunk, x0, state, jnp.asarray(chunk), *loss.args)


def _chunk_length(done: int, longest: int, stop: StopRule,
                  chunk_ends: Callable[[int], bool] | None) -> int:
    """The next chunk's iterations: `longest`, or fewer to end where the stop rule is checked
    or where `chunk_ends` asks."""
    return next((k for k in range(1, longest + 1) if stop and (done + k) % STALL_WINDOW == 0
                 or chunk_ends is not None and chunk_ends(done + k)), longest)


def _progress(done: int, iterations: int, x: jax.Array, state: LoopState, start: float,
              history: dict[str, list[float]]) -> Progress:
    return Progress(
        iteration=done,
        total_iterations=iterations,
        x=x,
        state=state,
        value=float(jnp.sum(state.opt.value)),
        components={k: float(jnp.sum(v)) for k, v in state.opt.aux.items()},
        evaluations=num_evaluations(state),
        elapsed=time.perf_counter() - start,
        history=history,
    )


def num_evaluations(state: LoopState) -> int:
    """Loss-and-gradient evaluations so far, counted by the optimizer (from a `LoopState`; for a
    batch, per image)."""
    return int(jnp.max(state.opt.num_fun_eval))


def _wait_in_python(value: jax.Array) -> None:
    """Waits for a dispatched computation by polling, not by blocking inside XLA: Python runs
    signal handlers only between its own instructions, so a Ctrl-C during a long chunk is
    heard at once (and a second one can end the process) instead of when the chunk ends."""
    pause = 0.001
    while not value.is_ready():
        time.sleep(pause)
        pause = min(2 * pause, 0.02)


def settled(changes: list, tolerance: float, window: int = STALL_WINDOW) -> bool:
    """Whether the picture changed by less than `tolerance` per iteration on average over the
    last `window` iterations (`changes`: per iteration, a number or one per image of a batch,
    the largest of which counts)."""
    if len(changes) < window:
        return False
    return float(np.mean([np.max(c) for c in changes[-window:]])) < tolerance


def stalled(totals: list, tolerance: float, window: int = STALL_WINDOW) -> bool:
    """Whether the loss (per iteration; a batch's entries are summed) fell by at least 0 and
    by less than `tolerance` per iteration, relative to its last value, over the last `window`
    iterations."""
    if len(totals) <= window:
        return False
    before, now = float(np.sum(totals[-window - 1])), float(np.sum(totals[-1]))
    return 0.0 <= (before - now) / (window * max(abs(now), 1e-30)) < tolerance  # a 0 loss: done


