"""A snapshot listener on the routing collection, kept from spinning and from spilling tracebacks,
from re-sorting every document on each change, and, for an owner that needs only a digest of
each document, from holding every document.

Google's ``Watch`` reopens a failed stream at once and without limit, and closes itself from a
new thread that re-raises the stream's error. Both are tamed here, for every listener the
gateway (``engines.routing.collection``) opens; re-subscribing a listener that ended is its
owner's job (the registry's supervisor).

Google's ``Watch`` also hands its callback every document in the query's order, so that an
ordered query (``order_by``, ``limit``) sees its results in order: on each snapshot it sorts all
the documents it holds with a Python comparator, and its document tree copies itself for each
changed document. One change in a collection of n documents then costs n log n comparator calls
on the listener's thread, and a first load of n documents n copies of a growing dict. The
gateway's queries have no order (equality filters only) and their owners use the changes, or
the documents of the first snapshot as a set (the registry's reload, the drift listener's
reset): ``_watch.UnorderedWatch`` keeps Google's protocol handling (resume tokens, resets,
reopens) and gives the documents in arrival order, its tree changed in place. It also takes a
document delivered again at the update time it already holds (after a reset; on the emulator,
after every write) as the held snapshot, without decoding its fields again. Benchmark:
``benchmarks/bench_listener.py``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .contract import strip_server_fields

__all__ = [
    "REOPEN_INTERVAL_S",
    "KeptDocument",
    "Listener",
    "first_line",
    "open_listener",
]

log = logging.getLogger(__name__)
REOPEN_INTERVAL_S = 10.0
"""Shortest time between two reopens of a listener's stream by Google's client itself."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def open_listener(
    query: Any,
    on_snapshot: Callable[[list[Any], list[Any], Any], None],
    collection: str,
    on_end: Callable[[str], None],
    quiet: bool = False,
    keep: Callable[[dict[str, Any]], Any] | None = None,
) -> Listener:
    """Start Google's ``Watch`` on ``query`` with its reopens limited and its end reported
    (logged as a warning, or only at debug level when ``quiet``: its owner reports it). With
    ``keep``, each document is held as a :class:`KeptDocument`: ``keep(fields)`` only.

    ``query`` must have no order: its documents are given unordered (see the module's doc)."""
    if getattr(query, "_orders", ()) or getattr(query, "_limit", None) is not None:
        raise ValueError("open_listener gives documents unordered: the query cannot be ordered")
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.collection import CollectionReference
    from google.cloud.firestore_v1.query import Query

    from ._watch import UnorderedWatch

    # What query.on_snapshot does, with this module's Watch and the class each document is
    # held as.
    held: Callable[..., Any] = (
        DocumentSnapshot if keep is None else functools.partial(KeptDocument, keep)
    )
    if isinstance(query, CollectionReference):  # the whole collection: as its on_snapshot does
        query = Query(query)
    watch = UnorderedWatch.for_query(query, on_snapshot, held)  # type: ignore[no-untyped-call]
    _end_quietly(watch, collection, on_end, logging.DEBUG if quiet else logging.WARNING)
    _limit_reopens(watch)
    return Listener(watch)


class KeptDocument:
    """A listened document of which only ``kept`` is held: what the listener's owner keeps of
    it (``keep`` of its fields, server fields removed), never the fields themselves.

    Google's ``Watch`` holds one snapshot of every listened document for as long as it listens,
    to tell each change from the last. It builds them with the class it is given and uses only a
    snapshot's reference and update time (the documents of a query without an order are
    compared by path): an owner that needs a digest of each document (the operator's drift
    listener) then holds no document's fields."""

    __slots__ = ("kept", "read_time", "reference", "update_time")

    def __init__(
        self,
        keep: Callable[[dict[str, Any]], Any],
        *,
        reference: Any,
        data: dict[str, Any],
        read_time: Any,
        update_time: Any,
        **_unused: Any,
    ) -> None:
        self.reference = reference
        self.read_time = read_time
        self.update_time = update_time
        try:
            self.kept = keep(strip_server_fields(data))
        except Exception:  # the owner's failure must not end Google's stream
            log.exception("cannot keep the listened document %s", reference.id)
            self.kept = None

    @property
    def id(self) -> str:
        return str(self.reference.id)


class Listener:
    """A running snapshot listener (see :meth:`RoutingCollection.listen`)."""

    def __init__(self, watch: Any) -> None:
        self.watch = watch
        """Google's ``Watch`` behind it."""

    @property
    def alive(self) -> bool:
        """Running: not closed by Google's client, its consumer thread alive."""
        return not getattr(self.watch, "_closed", False) and bool(
            getattr(self.watch, "is_active", True)
        )

    @property
    def connected(self) -> bool:
        """Is the stream connected right now? Read from the client's private ``_rpc`` (its
        resumable stream): :attr:`alive` stays true while the client retries a stream that
        cannot connect, which an owner must be able to tell and report."""
        return _stream_active(getattr(self.watch, "_rpc", None))

    def close(self) -> None:
        try:
            self.watch.unsubscribe()
        except Exception:  # an already-broken listener: nothing left to stop
            log.debug("closing a Firestore listener failed", exc_info=True)


def _stream_active(rpc: Any) -> bool:
    """Is the current call of Google's resumable stream (a ``Watch``'s ``_rpc``) connected?"""
    call = getattr(rpc, "call", None)
    return bool(call is not None and call.is_active())


def _limit_reopens(watch: Any) -> None:
    """Let the ``Watch``'s stream reopen itself at most once per ``REOPEN_INTERVAL_S``.

    Google's ``Watch`` reopens a failed stream at once and without limit. When the server refuses
    connections, each new stream fails within milliseconds: a spinning thread, and under load the
    reopen runs inside the failed call's own callback, recursing until a ``RecursionError``
    leaves gRPC locks held (a later garbage collection of the channel then waits on them forever).

    Google's resumable stream asks its ``_should_recover`` on every failure, under its own
    lock, and reopens at once when it says yes. Saying no ends the stream and closes the
    ``Watch`` (as any non-recoverable error does), which the caller then restarts with
    backoff. One failure is usually reported twice (by gRPC's callback and by the consumer
    thread reading the stream): when the stream has already been reopened, the second report
    is let through, and Google's ``_reopen`` finds nothing to do. Installed right after the
    ``Watch`` starts: a stream that fails before that is reopened by Google's rules once more."""
    rpc: Any = getattr(watch, "_rpc", None)
    should_recover = getattr(rpc, "_should_recover", None)
    if rpc is None or should_recover is None:  # another client version: nothing to wrap
        log.debug("cannot limit the Firestore listener's reopens (no _rpc._should_recover)")
        return
    last_reopen = float("-inf")

    def limited(exc: Any) -> bool:
        nonlocal last_reopen
        if not should_recover(exc):
            return False
        if _stream_active(rpc):
            return True  # already reopened for this failure
        now = time.monotonic()
        if now - last_reopen < REOPEN_INTERVAL_S:
            return False
        last_reopen = now
        return True

    rpc._should_recover = limited


def _end_quietly(watch: Any, collection: str, on_error: Callable[[str], None], level: int) -> None:
    """When the ``Watch``'s stream ends for good, close the ``Watch`` and log why in one line.

    Google's ``Watch`` closes itself from a new thread that then re-raises the stream's error:
    an "Exception in thread" traceback on stderr each time a listener ends (while Firestore
    refuses connections: at every re-subscription). The caller notices the closed ``Watch``
    either way; ``on_error`` gets that line too."""
    import grpc  # type: ignore[import-untyped]
    from google.api_core import exceptions as gexc

    rpc: Any = getattr(watch, "_rpc", None)
    callbacks = getattr(rpc, "_callbacks", None)
    if not isinstance(callbacks, list):  # another client version: leave Google's handling
        return

    def ended(reason: Any) -> None:
        # None: the stream was closed (by us, or by Google's consumer before it reports the
        # error it got, which it then never passes on); else the gRPC call that failed.
        if reason is None:
            log.debug("the Firestore routing listener on %s ended", collection)
        else:
            if isinstance(reason, grpc.RpcError):
                reason = gexc.from_grpc_error(reason)  # type: ignore[no-untyped-call]
            line = first_line(reason)
            log.log(level, "the Firestore routing listener on %s ended: %s", collection, line)
            on_error(line)
        threading.Thread(target=watch.close, name="routing-firestore-close", daemon=True).start()

    for i, callback in enumerate(callbacks):
        if getattr(callback, "__self__", None) is watch and callback.__name__ == "_on_rpc_done":
            callbacks[i] = ended
