"""Typed errors every port raises, whatever the backend behind it.

They extend the routing error tree (:mod:`engines.routing.errors`) so one ``except RoutingError``
catches everything a backend can do. Adapters translate their vendor's exceptions into these
types at the boundary and chain them (``raise BackendUnavailable(...) from exc``); the conformance
suites check errors *by type*, which is what forces every adapter to translate::

    RoutingError                       (engines.routing.errors)
    ├── BackendUnavailable             the backend cannot be reached / answered with a server error
    └── PortError                      a port operation was refused
        ├── NotFound                   the named blob (or document) does not exist
        ├── InvalidArgument            a bad name, key, limit or value; the message says which
        ├── NotSupported               an optional ability the adapter does not claim (Feature)
        └── Conflict                   the operation lost a race or a precondition failed
            └── LockNotHeld            a lease is no longer held (expired, released or taken over)
"""

from __future__ import annotations

from engines.routing.errors import BackendUnavailable, RoutingError

__all__ = [
    "BackendUnavailable",
    "Conflict",
    "InvalidArgument",
    "LockNotHeld",
    "NotFound",
    "NotSupported",
    "PortError",
]


class PortError(RoutingError):
    """Base of the errors a port operation raises (besides ``BackendUnavailable``)."""


class NotFound(PortError, LookupError):
    """The named item does not exist."""


class InvalidArgument(PortError, ValueError):
    """An argument breaks the port's rules (name syntax, limits, JSON-only values)."""


class NotSupported(PortError, NotImplementedError):
    """An optional ability this adapter does not declare in its ``features``."""


class Conflict(PortError):
    """The operation lost a race or a precondition did not hold."""


class LockNotHeld(Conflict):
    """The lease is not held any more: it expired, was released or another owner took it."""
