"""Writes without transactions, for the gateway (``engines.routing.collection``).

A transaction (begin, read, commit) costs three round trips. A read and a write conditioned on
the update time that read saw give the same guarantee in two: a document changed in between
fails the condition, and is read and decided again. :func:`read_decide_write` is that loop,
bounded, for every such write and delete of the gateway.

A writer also remembers (:class:`LastWrites`), per document, the update time and content of its
own last write or read of a document the writing entry owns in its cluster. While that holds
(the conditioned write proves it), changing the document is that one write and no read: on a
backend switch, the only round trip before an app can see the new backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .contract import digest
from .errors import BackendUnavailable

__all__ = ["ATTEMPTS", "Changed", "LastWrites", "read_decide_write", "unless_changed"]

T = TypeVar("T")

ATTEMPTS = 3
"""Reads and conditioned writes of one document before giving up (it kept changing)."""


class Changed(Exception):
    """A conditioned write found the document changed, created or deleted since it was read."""


@contextmanager
def unless_changed(*, creating: bool = False) -> Iterator[None]:
    """The failed condition of the write inside the block becomes :class:`Changed`: for
    ``create()`` (``creating``) the id is taken; for a write or delete conditioned on an update
    time the document changed or is gone."""
    from google.api_core import exceptions as gexc

    failed: tuple[type[Exception], ...] = (
        (gexc.AlreadyExists,) if creating else (gexc.FailedPrecondition, gexc.NotFound)
    )
    try:
        yield
    except failed as exc:
        raise Changed from exc


def read_decide_write(attempt: Callable[[], T], action: str, done: str) -> T:
    """Run ``attempt`` (read the document, decide, write conditioned on what was read; raise
    :class:`Changed` when the condition fails) until it holds, at most :data:`ATTEMPTS` times;
    then ``BackendUnavailable`` for ``action`` (``done`` says what was being done)."""
    for _ in range(ATTEMPTS):
        try:
            return attempt()
        except Changed:
            continue  # changed since the read: read and decide again
    raise BackendUnavailable(
        f"cannot {action}: the document kept changing while it was {done}; will retry"
    )


class LastWrites:
    """What one writer last wrote or read of its own documents.

    document id → update time (8 bytes), digest of the owner (the cluster and the entry's uid)
    and of the content (16 each): 40 bytes a document. ``owner`` is ``"{cluster}/{uid}"``."""

    def __init__(self) -> None:
        self._known: dict[str, bytes] = {}

    def remember(self, document_id: str, update_time: Any, owner: str, content: bytes) -> None:
        """The document is, as of ``update_time`` (the client's DatetimeWithNanoseconds),
        ``content`` (a digest) owned by ``owner``."""
        stamp = update_time.timestamp_pb()
        nanos = stamp.seconds * 1_000_000_000 + stamp.nanos
        self._known[document_id] = nanos.to_bytes(8, "big") + digest(owner) + content

    def recall(self, document_id: str, owner: str) -> tuple[Any, bytes] | None:
        """(update time, content digest) of the document as last written or read, if it was
        then ``owner``'s."""
        from google.protobuf.timestamp_pb2 import Timestamp

        known = self._known.get(document_id)
        if known is None or known[8:24] != digest(owner):
            return None
        seconds, nanos = divmod(int.from_bytes(known[:8], "big"), 1_000_000_000)
        return Timestamp(seconds=seconds, nanos=nanos), known[24:]

    def forget(self, document_id: str) -> None:
        self._known.pop(document_id, None)
