"""Keeping the operator's resident memory close to what it actually uses (the allocator calls:
glibc only, elsewhere no-ops; the TLS buffers: any platform).

Two glibc behaviours inflate RSS after a burst of reconciles: each thread gets its own malloc
arena, and freed memory inside the heap stays resident until ``malloc_trim`` gives it back.

The Docker image runs Python on jemalloc instead (``LD_PRELOAD``, ``PYTHONMALLOC=malloc``); there
both calls reach glibc's idle allocator and change nothing, and jemalloc returns freed pages by
itself (``MALLOC_CONF`` in the Dockerfile).

Whatever the allocator, each TLS connection asyncio opens holds a read buffer of 256 KiB, filled
with zeros, so resident, for as long as it is open; a burst opens every pooled API connection
(``--api-connections``, 64 by default): 16 MiB of buffers at the burst's peak.
:func:`small_tls_buffers` makes new connections' buffers 64 KiB: larger answers (a page of the
list) are read in more pieces, nothing is lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

__all__ = ["TLS_READ_BUFFER", "limit_arenas", "small_tls_buffers", "trim"]

_M_ARENA_MAX = -8

TLS_READ_BUFFER = 64 * 1024
"""Bytes of the read buffer of each TLS connection asyncio opens (its default: 256 KiB)."""


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


def small_tls_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Read buffers of ``size`` bytes for the TLS connections asyncio opens from now on (its
    ``SSLProtocol.max_size``: the size of the buffer each connection allocates, and of each read
    from it)."""
    from asyncio import sslproto

    sslproto.SSLProtocol.max_size = size
