"""Keeping the operator's resident memory close to what it actually uses (glibc only; elsewhere
every function is a no-op).

Two glibc behaviours inflate RSS after a burst of reconciles: each thread gets its own malloc
arena, and freed memory inside the heap stays resident until ``malloc_trim`` gives it back.

The Docker image runs Python on jemalloc instead (``LD_PRELOAD``, ``PYTHONMALLOC=malloc``); there
both calls reach glibc's idle allocator and change nothing, and jemalloc returns freed pages by
itself (``MALLOC_CONF`` in the Dockerfile).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

__all__ = ["limit_arenas", "trim"]

_M_ARENA_MAX = -8


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None  # not glibc: nothing to tune


def limit_arenas(arenas: int = 2) -> None:
    """Two malloc arenas for all threads (as MALLOC_ARENA_MAX=2, without the environment)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)


def trim() -> bool:
    """Return freed heap pages to the kernel; True if some were."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
