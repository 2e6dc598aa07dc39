"""The one error the local stack raises: a component that cannot be built, started or stopped.

It always names the component and, when there is one, the log to read next.
"""

from __future__ import annotations

__all__ = ["StackError"]


class StackError(RuntimeError):
    """A component of the local stack failed to build, start, become healthy or stop."""
