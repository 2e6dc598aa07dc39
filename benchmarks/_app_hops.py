"""The engines app's own part of a switch, hop by hop, for the two switch benchmarks.

A switch reaches the app as a change of its routing registry (on the listener's thread); the
slot's worker then builds the new backend on the event loop, pings it, and swaps it in. The
benchmarks see the two ends (the registry's listeners, the slot's ``switched_at``); this module
sees the middle through the one seam the app offers for it, the backend factory: it is the
app's production factory (:func:`engines.runtime.adapter_factory`), and it notes when each build
starts and ends and when the ping of what it built starts and ends, on the wall clock.

So the app's time from the change to the swap splits into the hand-off to the event loop (the
listener thread -> the slot's worker starting its build), the build itself (client
construction, no I/O), the ping (the one read a switch must make: the floor's own part) and the
swap after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engines.ports import Port
from engines.routing.model import RoutingRecord
from engines.runtime import adapter_factory

__all__ = ["AppTimes", "TimedFactory"]


@dataclass
class AppTimes:
    """Wall-clock times of one build of a revision and of the ping of what it built."""

    build_start: float
    build_end: float
    ping_start: float = float("nan")
    ping_end: float = float("nan")


class TimedFactory:
    """The app's production factory, noting the times of each build and of its ping."""

    def __init__(self) -> None:
        self._inner = adapter_factory(allow_test_backends=False)
        self._times: dict[str, AppTimes] = {}
        self._lock = threading.Lock()

    def __call__(self, record: RoutingRecord, tenant: str) -> Port:
        start = time.time()
        port = self._inner(record, tenant)
        times = AppTimes(start, time.time())
        with self._lock:
            self._times[record.revision] = times
        ping: Callable[[], Awaitable[None]] = port.ping

        async def timed_ping() -> None:
            times.ping_start = time.time()
            try:
                await ping()
            finally:
                times.ping_end = time.time()

        port.ping = timed_ping  # type: ignore[method-assign]
        return port

    def last(self, revision: str) -> AppTimes:
        """The times of the newest build of ``revision`` (forgotten once read)."""
        with self._lock:
            return self._times.pop(revision)
