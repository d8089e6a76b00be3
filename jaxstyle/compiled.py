"""Compiled code kept for reuse, and what a run's compiled code needs in memory.

`COMPILED` keeps the executables `jaxstyle.optimize.minimize` runs (a process-wide
`CompileCache`); `estimate_memory` reads XLA's memory analysis of a run's compiled chunk, and
`check_memory` refuses a run that would not fit before anything is allocated.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstyle.errors import OutOfMemoryError
from jaxstyle.steps import Loss, OptimizerConfig, chunk_functions


class CompileCache:
    """Compiled executables kept for reuse in this process, and how long compiling took.

    A long-lived process that sees many shapes keeps the `size` most recently used (two per
    shape a run uses); `minimize` and `estimate_memory` use `COMPILED` unless given another.
    ``COMPILED.clear()`` frees them all. Threads may share it: an executable one thread is
    compiling is waited for, not compiled twice, by another that asks for it (the driver
    compiles a run's next scale in the background while the current one runs).
    """

    def __init__(self, size: int = 16):
        self.size = size
        self.executables: collections.OrderedDict = collections.OrderedDict()
        # (finished at, seconds, thread id): compiling, or waiting for another thread's.
        self.log: list[tuple[float, float, int]] = []
        self._pending: dict = {}
        self._lock = threading.Lock()

    def compile(self, jitted: Callable, *args):
        """`jitted` compiled ahead of time for these arguments' shapes and dtypes."""
        leaves, treedef = jax.tree_util.tree_flatten(args)
        key = (jitted, treedef, tuple((jnp.shape(a), jnp.result_type(a)) for a in leaves))
        with self._lock:
            if key in self.executables:
                self.executables.move_to_end(key)
                return self.executables[key]
            pending = self._pending.get(key)
            mine = pending is None
            if mine:
                pending = self._pending[key] = concurrent.futures.Future()
        t0 = time.perf_counter()
        if not mine:
            try:
                return pending.result()  # raises what compiling it raised
            finally:
                self._logged(t0)
        try:
            executable = jitted.lower(*args).compile()
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            self.executables[key] = executable
            del self._pending[key]
            while len(self.executables) > self.size:
                self.executables.popitem(last=False)
        self._logged(t0)
        pending.set_result(executable)
        return executable

    def _logged(self, t0: float) -> None:
        now = time.perf_counter()
        with self._lock:
            self.log.append((now, now - t0, threading.get_ident()))
            del self.log[:-1000]

    def seconds_since(self, start: float) -> float:
        """Seconds this thread spent compiling, or waiting for another thread's compilation,
        since `start` (a `time.perf_counter` reading)."""
        me = threading.get_ident()
        with self._lock:
            return sum(seconds for finished, seconds, thread in self.log
                       if finished >= start and thread == me)

    def clear(self) -> None:
        """Drops every executable and traced function kept."""
        with self._lock:
            self.executables.clear()
            self.log.clear()
        chunk_functions.cache_clear()


COMPILED = CompileCache()
"""The process's `CompileCache`."""


class MemoryEstimate(NamedTuple):
    """Peak bytes a run needs, from XLA's memory analysis of its compiled chunk.

    Attributes:
      total: arguments (image, optimizer state, network, targets) + outputs + XLA temporaries.
      state: the optimizer state's share (the L-BFGS history: 2 x history x image size).
      temporaries: XLA's working memory (activations kept for the backward pass, ...).
    """

    total: int
    state: int
    temporaries: int


def estimate_memory(loss: Loss, x0: jax.Array, config: OptimizerConfig, chunk: int,
                    cache: CompileCache | None = None) -> MemoryEstimate:
    """Estimates a run's peak memory without allocating it.

    Args:
      loss: what is minimized; its `args` may be `jax.ShapeDtypeStruct`s.
      x0: the starting image (or its `jax.ShapeDtypeStruct`), float32 [H, W, 3].
      config: the optimizer.
      chunk: the run's chunk length (`jaxstyle.optimize.minimize`'s ``chunk``).
      cache: where the compiled init and chunk are kept for `minimize` to reuse (default
        `COMPILED`).
    """
    cache = cache or COMPILED
    init, run_chunk = chunk_functions(loss.fun, loss.static, config, chunk, loss.batch_axes)
    compiled_init = cache.compile(init, x0, *loss.args)
    # The state as init will lay it out (shape, dtype and sharding), without computing it.
    state = jax.tree_util.tree_map(
        lambda aval, sharding: jax.ShapeDtypeStruct(aval.shape, aval.dtype, sharding=sharding),
        jax.eval_shape(init, x0, *loss.args), compiled_init.output_shardings,
    )
    compiled = cache.compile(run_chunk, x0, state, jnp.asarray(chunk), *loss.args)
    analysis = compiled.memory_analysis()
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(state))
    total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
    return MemoryEstimate(int(total), int(state_bytes), int(analysis.temp_size_in_bytes))


ADVICE = ("use a smaller size, scales to finish large sizes with fewer iterations, a shorter "
          "lbfgs_history, or optimizer=adam (no history)")
"""What an `OutOfMemoryError` suggests, naming `jaxstyle.StyleOptions` fields (`ADVISED`)."""

ADVISED = ("size", "scales", "lbfgs_history", "optimizer")
"""The options `ADVICE` names: the error carries them (`jaxstyle.errors.JaxstyleError.options`)
for the command line to write as flags."""


def check_memory(loss: Loss, x0: jax.Array, config: OptimizerConfig, chunk: int,
                 memory_limit: int | None = None, cache: CompileCache | None = None,
                 compile: bool = True) -> None:
    """Refuses a run that would not fit, before anything is allocated: `estimate_memory`
    against `memory_limit` bytes (None: what the device has free; 0: no check). `x0` and
    ``loss.args`` may be `jax.ShapeDtypeStruct`s, so a run can be checked before its targets
    are computed. `compile` False checks only what needs no compilation (the optimizer state's
    size).

    Raises:
      OutOfMemoryError: the estimate and its parts, and what to change (`ADVICE`).
    """
    if memory_limit == 0:
        return
    limit = memory_limit or available_memory()
    if not limit:
        return
    # The optimizer state's size needs no compilation: a run whose state alone does not fit
    # is refused at once.
    state = sum(leaf.size * leaf.dtype.itemsize
                for leaf in jax.tree_util.tree_leaves(state_like(loss, x0, config, chunk)))
    if state > limit:
        raise OutOfMemoryError(f"this run needs more than {_size(state)} (its optimizer state "
                               f"alone) but {_size(limit)} is available: {ADVICE}",
                               options=ADVISED)
    if not compile:
        return
    need = estimate_memory(loss, x0, config, chunk, cache)
    if need.total > limit:
        rest = need.total - need.state - need.temporaries
        raise OutOfMemoryError(
            f"this run needs about {_size(need.total)} (optimizer state {_size(need.state)}, "
            f"network activations {_size(need.temporaries)}, network, targets and image "
            f"{_size(rest)}) but {_size(limit)} is available: {ADVICE}", options=ADVISED)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def available_memory() -> int | None:
    """Bytes free for a run on the default device: the GPU/TPU's free memory, or the host's
    MemAvailable on CPU; None when unknown."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def state_like(loss: Loss, x0: jax.Array, config: OptimizerConfig, chunk: int):
    """The structure, shapes and dtypes of the optimizer state `minimize` would start from (a
    `jaxstyle.steps.LoopState` of `jax.ShapeDtypeStruct`s), computing nothing."""
    init, _ = chunk_functions(loss.fun, loss.static, config, chunk, loss.batch_axes)
    return jax.eval_shape(init, x0, *loss.args)
