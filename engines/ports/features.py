"""Optional abilities an adapter may claim, in the manner of Dapr's ``state/feature.go``.

Each adapter declares ``features: frozenset[Feature]``. The conformance suites hold adapters to
their word both ways: a claimed ability must work, an unclaimed one must raise
:class:`~engines.ports.errors.NotSupported` — never half-work.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Feature"]


class Feature(StrEnum):
    # DocumentStore
    READ_YOUR_WRITES = "read_your_writes"
    """``get`` returns what ``put`` wrote. Every real store claims it; ``noop`` does not."""
    QUERY = "query"
    """``query(collection, field, value)``: equality on a top-level field."""
    TRANSACTION = "transaction"
    """``update(collection, id, fn)``: atomic read-modify-write (``fn`` may be retried)."""
    INCREMENT = "increment"
    """``increment(collection, id, field, amount)``: atomic add, returns the new value."""
