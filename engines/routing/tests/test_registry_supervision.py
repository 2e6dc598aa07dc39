"""The Firestore registry's listener is supervised: a dead listener is re-subscribed, and the table
converges on the store's current state, including deletions made while nobody was listening.

Against the real Firestore emulator. Google's ``Watch`` ends for good by calling its own
``close()`` (from ``_on_rpc_done`` when the RPC ends with a non-recoverable error, or when its
consumer thread dies). The emulator cannot be made to send a non-recoverable stream error on
demand, so the test ends the real ``Watch`` the same way, with ``close()``; that is the only
stand-in, everything else is real. While it closes the listener and deletes an entry, the test
holds the registry's lock so the supervisor cannot re-subscribe before the deletion: the
deletion is then, deterministically, one made while no listener ran (the new listener's first
snapshot simply lacks the document and never reports it as removed).

The outage of the emulator itself (stop, start) is covered end to end, readiness included, in
``engines/chat/tests/test_registry_outage.py``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from devstack import free_port
from devstack.testing import record as kind_record
from devstack.testing import wait_for
from engines.routing import FirestoreRoutingRegistry, RoutingRecord
from engines.routing._listener import _limit_reopens

pytestmark = pytest.mark.firestore


def record(tenant: str, collection: str = "kpis") -> RoutingRecord:
    return kind_record("kpi", "firestore", {"collection": collection}, tenant=tenant, env="prod")


@pytest.fixture
def registries(firestore_emulator: Any) -> Iterator[tuple[FirestoreRoutingRegistry, Any]]:
    """A supervised registry (checks every 50 ms) and a writer (another pod) on one collection."""
    collection = f"routing_{uuid.uuid4().hex[:10]}"
    reg = FirestoreRoutingRegistry(
        collection=collection, env="prod", supervise_interval=0.05, restart_backoff=(0.05, 1.0)
    )
    writer = FirestoreRoutingRegistry(collection=collection)
    reg.start()
    assert reg.wait_ready(15), "first snapshot never arrived"
    yield reg, writer
    reg.close()


def test_dead_listener_is_resubscribed_and_converges(
    registries: tuple[FirestoreRoutingRegistry, Any],
) -> None:
    reg, writer = registries
    kept, deleted = record("kept"), record("deleted")
    writer.create(kept)
    writer.create(deleted)
    wait_for(
        lambda: reg.get(deleted.key) == deleted and reg.get(kept.key) == kept,
        what="both entries in the cache",
    )
    assert reg.healthy

    with reg._lock:  # the supervisor cannot re-subscribe until the deletion is done
        watch = reg._watch
        assert watch is not None
        watch.watch.close()  # the RPC ended for good: what Watch._on_rpc_done does
        assert not watch.alive
        assert not reg.healthy  # a dead listener: the cache may be stale
        assert writer.delete(deleted.key) is True  # while nobody listens
        updated = record("kept", collection="kpis_v2")
        writer.update(updated)

    wait_for(lambda: reg.restarts >= 1 and reg.healthy, timeout=15, what="re-subscribed")
    assert reg._watch is not watch
    # the new listener's first snapshot is a full reload: the deletion made while no listener
    # ran is applied, and so is the update
    wait_for(lambda: reg.get(updated.key) == updated, what="update made while down")
    assert reg.get(deleted.key) is None
    assert [r.tenant for r in reg.list()] == ["kept"]

    # and the new listener follows later changes
    late = record("late")
    writer.create(late)
    wait_for(lambda: reg.get(late.key) == late, what="change after the restart")
    writer.delete(kept.key)
    wait_for(lambda: reg.get(kept.key) is None, what="deletion after the restart")


def test_closed_registry_is_not_resubscribed(
    registries: tuple[FirestoreRoutingRegistry, Any],
) -> None:
    reg, writer = registries
    reg.close()
    assert not reg.healthy and reg._watch is None and reg.restarts == 0
    writer.create(record("after-close"))
    reg.start()  # a closed registry can be started again, and reloads in full
    wait_for(
        lambda: reg.get(record("after-close").key) is not None and reg.healthy,
        what="reloaded after start",
    )
    assert reg.restarts == 0


def test_refused_connections_do_not_spin_the_listener(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that refuses connections (a port nothing listens on: real refusals, no stand-in).
    Google's ``Watch`` alone reopened its stream about 6,000 times in 8 s there, and under load
    recursively, until a ``RecursionError`` in gRPC's callback thread left locks held. Each
    listener now reopens by itself at most once; after that the supervisor re-subscribes with
    its backoff, so the number of reopens follows the number of listeners."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "routing-test")
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    caplog.set_level(logging.DEBUG, logger="google.api_core.bidi")
    reg = FirestoreRoutingRegistry(
        collection="routing_entries", supervise_interval=0.05, restart_backoff=(0.2, 0.4)
    )
    reg.start()
    try:
        wait_for(lambda: reg.restarts >= 3, timeout=30, what="three re-subscriptions")
        assert not reg.healthy
    finally:
        reg.close()
    reopens = sum("Re-opening stream" in r.getMessage() for r in caplog.records)
    listeners = reg.restarts + 1
    # One reopen per listener, plus at most one more for a stream that failed in the moment
    # before its listener's limit was installed; without the limit, thousands.
    assert reopens <= 2 * listeners, f"{reopens} reopens by {listeners} listeners"
    # No thread ends with an exception: not the RecursionError of the unthrottled reopens, and
    # not Google's re-raise of the refusal when a Watch closes (a traceback per re-subscription).
    assert not crashed, crashed


class _StreamCall:
    """Stands in for a gRPC streaming call in Google's real ``ResumableBidiRpc``: neither the
    emulator nor Firestore can be made to reset one stream on demand, nor to report the reset
    through both of gRPC's paths in a chosen order."""

    def __init__(self) -> None:
        self.active = True
        self.failure: Exception | None = None
        self.done_callbacks: list[Any] = []

    def add_done_callback(self, fn: Any) -> None:
        self.done_callbacks.append(fn)

    def is_active(self) -> bool:
        return self.active

    def cancel(self) -> None:
        self.active = False

    def fail(self, failure: Exception) -> None:
        self.active, self.failure = False, failure

    def __iter__(self) -> _StreamCall:
        return self

    def __next__(self) -> str:
        if self.failure is not None:
            raise self.failure
        return "response"


def test_one_reset_reported_twice_is_one_reopen_and_the_stream_lives_on() -> None:
    """A stream reset reaches Google's resumable stream twice: the consumer thread's read
    raises, and gRPC runs the call's done callback. Both ask whether to recover; the second ask
    must not count as a second reopen (closing the Watch there would make every routine reset
    cost a full re-read of the collection)."""
    from google.api_core import bidi, exceptions

    calls: list[_StreamCall] = []

    def start_rpc(requests: Any, metadata: Any = None) -> _StreamCall:
        calls.append(_StreamCall())
        return calls[-1]

    rpc = bidi.ResumableBidiRpc(
        start_rpc, should_recover=lambda exc: isinstance(exc, exceptions.ServiceUnavailable)
    )
    ended: list[Any] = []
    rpc.add_done_callback(ended.append)
    _limit_reopens(SimpleNamespace(_rpc=rpc))
    rpc.open()
    reset = exceptions.ServiceUnavailable("stream reset")
    calls[0].fail(reset)
    assert rpc.recv() == "response"  # the consumer's read: recovered on a new stream
    for fn in calls[0].done_callbacks:  # gRPC's report of the same failure
        fn(reset)
    assert (len(calls), ended, rpc.call is calls[1], calls[1].is_active()) == (2, [], True, True)

    calls[1].fail(reset)  # a second failure within REOPEN_INTERVAL_S: the listener ends
    with pytest.raises(exceptions.ServiceUnavailable):
        rpc.recv()
    assert len(calls) == 2 and len(ended) == 1  # finalized: the Watch closes and is restarted
