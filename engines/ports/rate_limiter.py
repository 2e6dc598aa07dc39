"""RateLimiter: fixed-window counting, atomic across every caller of the same backend.

``hit(key, limit=, window_s=)`` counts one hit in the key's current window; the window opens at
the first hit and lasts ``window_s``. Hits past ``limit`` are refused (and counted, so a client
hammering a closed window gains nothing). Under N parallel callers exactly ``limit`` are allowed.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from .base import Port, check_key, check_positive
from .errors import InvalidArgument

__all__ = ["Decision", "RateLimiter", "check_hit"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    """Hits still allowed in this window after this one (0 when refused)."""
    reset_after: float
    """Seconds until the window closes and the count starts again."""


class RateLimiter(Port):
    @abstractmethod
    async def hit(self, key: str, *, limit: int, window_s: float) -> Decision:
        """Count one hit for ``key`` and say whether it is allowed."""


def check_hit(key: str, limit: int, window_s: float) -> None:
    check_key(key)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(f"limit must be a positive integer, got {limit!r}")
    check_positive(window_s, "window_s")
    if window_s < 0.001:
        raise InvalidArgument("window_s must be at least 0.001 (1 ms)")
