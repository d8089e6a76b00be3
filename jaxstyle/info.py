"""What a machine offers a run: ``jaxstyle info``, the first thing to run on a new machine or GPU.

Devices and backend, the versions of JAX and its companions, whether the persistent compilation
cache is on and where, the converted weights present in the order a run picks them, and which
weights a run would use and from where.
"""

from __future__ import annotations

import importlib.metadata
import os

from jaxstyle import __version__
from jaxstyle.errors import WeightsError

PACKAGES = ("jax", "jaxlib", "flax", "optax", "jaxopt", "numpy")
"""The installed versions `describe_machine` reports."""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(weights_spec: str | None = None) -> list[tuple[str, str]]:
    """``(what, value)`` rows: jaxstyle's and its libraries' versions, JAX's backend and
    devices, the compilation cache, and the weights `weights_spec` resolves to (None: what a
    run without ``--weights`` would use)."""
    import jax

    from jaxstyle.choices import SOURCE_ORDER
    from jaxstyle.compilation_cache import enable_compilation_cache
    from jaxstyle.cpu_pool import ENV, pool_threads
    from jaxstyle.sources import converted_files
    from jaxstyle.weights import describe, find_weights

    rows = [("jaxstyle", __version__)]
    rows += [(package, _version(package)) for package in PACKAGES]
    devices = jax.devices()
    rows.append(("backend", jax.default_backend()))
    rows.append(("devices", ", ".join(f"{d.platform}:{d.id} {d.device_kind}" for d in devices)))
    rows.append(("processes", f"{jax.process_count()} (this is {jax.process_index()})"))
    rows.append(("CPU thread pool", f"{pool_threads()} threads (${ENV}"
                 + (" set)" if os.environ.get(ENV) else " unset: the CPUs this process may use)")))
    cache = enable_compilation_cache()
    rows.append(("compilation cache",
                 f"on, {cache}" if cache else "off (JAXSTYLE_NO_COMPILATION_CACHE is set, or "
                                              "the cache folder cannot be created)"))
    rows.append(("weights order", ", ".join(SOURCE_ORDER) + " (every VGG19 first, the "
                 "checkout's weights/ before the cache)"))
    found = converted_files()
    rows.append(("converted weights", ", ".join(map(str, found)) if found else "none"))
    try:
        path = find_weights(weights_spec)
    except WeightsError as exc:
        rows.append(("weights", f"none: {exc}"))
        return rows
    chosen = ("--weights" if weights_spec else "$JAXSTYLE_WEIGHTS"
              if os.environ.get("JAXSTYLE_WEIGHTS") else "the first converted file found")
    rows.append(("weights", f"{path} ({chosen})"))
    try:
        rows += [("  " + line.split(":", 1)[0], line.split(":", 1)[1].strip())
                 for line in describe(path).splitlines()[1:]]
    except WeightsError as exc:
        rows.append(("  problem", str(exc)))
    return rows


def format_rows(rows: list[tuple[str, str]]) -> str:
    """The rows as aligned text lines."""
    width = max(len(name) for name, _ in rows) + 1
    return "\n".join(f"{name + ':':<{width}} {value}" for name, value in rows)
