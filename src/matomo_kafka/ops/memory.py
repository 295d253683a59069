"""Fewer malloc arenas, for a lower peak RSS.

glibc's malloc gives each thread that allocates its own arena (up to 8 per core), and each
arena keeps some of what its thread freed. A run's Matomo slots, parse thread and Kafka
threads each hold pages of ~3.4 MB in turn, so at MATOMO_MAX_CONCURRENCY=4 those arenas
kept ~20-30 MB more at the peak than two shared arenas do, for no CPU time measured
(docs/performance.md). Set with mallopt before the run's threads start, as the environment
variable MALLOC_ARENA_MAX would at process start; a MALLOC_ARENA_MAX the user sets wins.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: mallopt's parameter number for the arena count (glibc's malloc.h).
M_ARENA_MAX = -8

#: Arenas the run's threads share.
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Caps glibc's malloc arenas (Linux with glibc only; elsewhere nothing is done). True
    when the cap was set."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc's, in the process already
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
