"""At most two malloc arenas in the studio's process, so that its resident memory levels off.

glibc gives threads malloc arenas of their own (up to eight per core), and memory freed in an
arena stays there for that arena's later allocations. In the studio, the worker and XLA's
threads allocate and free image-sized buffers run after run, each arena keeping its own high
water mark, so resident memory crept up for 40-60 runs before it levelled off: 2285 -> 2523 MB
(+10.4 %) from run 20 to run 40 of `benchmarks/studio_soak.py`'s session, with no compiled
geometry new (the mappings flat). Under ``MALLOC_ARENA_MAX=2`` the same runs read 1823 -> 1861
MB (+2.1 %), and with `limit_arenas` (the same, set from inside the process) 1962 -> 1940 MB.
"""

from __future__ import annotations

import ctypes
import os
import sys

ARENAS = 2
"""The most malloc arenas the studio's process makes (glibc's default: 8 per core)."""
_M_ARENA_MAX = -8  # mallopt's parameter for it, from glibc's <malloc.h>


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Asks the C library to make at most `arenas` malloc arenas from now on (those already
    made stay), unless ``MALLOC_ARENA_MAX`` is set, which glibc has read already.

    Args:
      arenas: the most arenas, >= 1.

    Returns:
      Whether the limit took effect: False on a system whose C library is not glibc (or has
      no ``mallopt``), or where ``MALLOC_ARENA_MAX`` decides.

    Raises:
      ValueError: `arenas` < 1.
    """
    if arenas < 1:
        raise ValueError(f"arenas: must be >= 1 (got {arenas})")
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_ARENA_MAX, arenas) == 1
