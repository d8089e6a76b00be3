"""jaxlib's CPU thread pool and NumPy host callbacks on a machine with one CPU.

On CPUs the distribution losses and quality figures sort with NumPy through a host callback
(`jaxstyle.style_losses`). jaxlib copies a callback's operand on its CPU client's thread pool
while the callback itself holds one of that pool's threads; with a single thread (one
schedulable CPU, or ``PJRT_NPROC=1``) that copy can never run and the process hangs for good
(jax 0.10.2: the quality line of a 30x40 px run, or an operand still being computed). The
command line gives the pool a second thread before JAX starts (`ensure_two_threads`); library
callers who started JAX on one CPU without it get XLA's slower sort instead
(`host_callbacks_safe`).
"""

from __future__ import annotations

import os
import sys

ENV = "PJRT_NPROC"
"""The environment variable that sets the size of jaxlib's CPU thread pool."""


def pool_threads() -> int:
    """The threads jaxlib's CPU client gives its pool: ``PJRT_NPROC`` if set to a whole
    number (0 or less: none, which hangs the first host callback), else the CPUs this process
    may run on."""
    try:
        return max(0, int(os.environ.get(ENV, "")))
    except ValueError:
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def host_callbacks_safe() -> bool:
    """Whether a host callback is sure to finish: the pool has two threads or more."""
    return pool_threads() >= 2


def _jax_started() -> bool:
    """Whether JAX has created its backends (and so read ``PJRT_NPROC``) in this process."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # a JAX without it: assume started, and change nothing
        return True
    return backends_are_initialized()


def ensure_two_threads() -> None:
    """Sets ``PJRT_NPROC=2`` where the pool would have a single thread, so that host callbacks
    cannot hang. Does nothing once JAX has started its backends, which read the variable once:
    the variable then keeps saying what the pool has, which `host_callbacks_safe` reads."""
    if not host_callbacks_safe() and not _jax_started():
        os.environ[ENV] = "2"
