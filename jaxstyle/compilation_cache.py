"""JAX's persistent compilation cache, so a repeated run at the same size skips compilation."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import platformdirs

_MIN_COMPILE_SECONDS = 0.0  # every compilation: a run makes ~50 small ones, ~60 ms each, 3 s in all


def default_cache_dir() -> Path:
    """``~/.cache/jaxstyle/xla`` on Linux (platformdirs' user cache folder)."""
    return Path(platformdirs.user_cache_dir("jaxstyle")) / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache in `path` (default: `default_cache_dir`).

    The command line calls this at start; library users may call it once themselves (it changes
    JAX's process-wide configuration). Setting ``JAXSTYLE_NO_COMPILATION_CACHE=1`` disables it.

    Returns:
      The cache folder, or None when disabled or the folder cannot be created.
    """
    if os.environ.get("JAXSTYLE_NO_COMPILATION_CACHE"):
        return None
    folder = Path(path) if path else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
