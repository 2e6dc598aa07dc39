"""Retired backends: closed once their in-flight calls end, or after a deadline.

A swap never closes the backend it replaces: requests that leased it keep it until their call
ends. :class:`Retirements` waits for that (``HeldBackend.drained``), at most ``drain_timeout``
seconds so a stuck caller cannot pin a dead connection pool forever, then closes it. Closing a
dead backend may fail or hang: that is logged and bounded, never raised into a slot.
"""

from __future__ import annotations

import asyncio
import logging

from engines.ports import Port

from .slots import HeldBackend

__all__ = ["Retirements"]

log = logging.getLogger("engines.runtime")


class Retirements:
    """The closing of every backend a slot let go of, tracked until it is done."""

    def __init__(self, *, drain_timeout: float, close_timeout: float) -> None:
        self.drain_timeout = drain_timeout
        self.close_timeout = close_timeout
        self._closers: set[asyncio.Task[None]] = set()

    def retire(self, held: HeldBackend) -> None:
        """Mark ``held`` retired and close it in the background once drained (event loop)."""
        held.retire()
        task = asyncio.get_running_loop().create_task(self._close_when_drained(held))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def wait(self) -> None:
        """Until every retired backend has been closed."""
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    async def _close_when_drained(self, held: HeldBackend) -> None:
        try:
            await asyncio.wait_for(held.drained.wait(), self.drain_timeout)
        except TimeoutError:
            log.warning(
                "closing the retired %s backend (revision %s) with %d call(s) still running "
                "after %.0fs",
                held.record.backend.value,
                held.record.revision[:12],
                held.inflight,
                self.drain_timeout,
            )
        await self.close_quietly(held.port)

    async def close_quietly(self, port: Port) -> None:
        """Close ``port``, logging (not raising) a failure or a close that hangs."""
        try:
            await asyncio.wait_for(port.aclose(), self.close_timeout)
        except Exception:  # closing a dead backend must not take the slot down with it
            log.warning("closing backend %r failed", port, exc_info=True)
