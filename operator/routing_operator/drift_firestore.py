"""The Firestore drift listener: this cluster's documents, as they change, through the gateway.

It listens with the routing collection's gateway (``RoutingCollection.listen`` on
``source.cluster``: another cluster's documents are never delivered, read or judged), which
keeps Google's client from spinning on a failing stream and reports the stream's end. What
stays here is the operator's side: each document's digests handed to the judge
(``drift_judge``), and the listener's health. A listener that fails is reported (log,
metrics) and established again; its first full view is then compared with the last one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from engines.routing.collection import Listener
from engines.routing.contract import canonical_json, digest

from . import metrics
from .drift_judge import FIRESTORE, DocumentDigests, DriftJudge

__all__ = ["GRACE", "FirestoreDriftListener", "document_digests"]

log = logging.getLogger(__name__)

NAME = FIRESTORE
GRACE = 3
"""Checks in a row a listener's stream may be found disconnected before it counts as failed
(the client reconnects after a server-side close within one)."""


def document_digests(data: dict[str, Any]) -> DocumentDigests:
    """(digest of the document, digest of what made it: its source, revision, generation), of
    its fields without the server's (as the listener's ``keep`` is given them)."""
    made = {name: data.get(name) for name in ("source", "revision", "generation")}
    return digest(canonical_json(data)), digest(canonical_json(made))


class FirestoreDriftListener:
    """Listens to this cluster's documents until cancelled, established again when it fails."""

    def __init__(self, judge: DriftJudge) -> None:
        self.judge = judge

    async def run(self) -> None:
        judge = self.judge
        rec = judge.reconciler
        while not rec.cluster:  # nothing of ours to listen to before it is known
            await asyncio.sleep(judge.retry)
        cluster = rec.cluster
        while True:
            first = threading.Event()
            ended: list[str] = []

            def on_snapshot(
                docs: list[Any], changes: list[Any], _: Any, first: threading.Event = first
            ) -> None:
                try:
                    self._deliver(first, docs, changes)
                except Exception:  # never let the client's thread die on our account
                    log.exception("drift listener firestore: a snapshot could not be handled")

            try:
                listener = await asyncio.to_thread(
                    rec.firestore.listen,
                    on_snapshot,
                    cluster=cluster,
                    on_end=ended.append,
                    quiet=True,  # reported here, once per outage
                    keep=document_digests,  # all the judge needs of a document
                )
            except Exception as exc:
                judge.down(NAME, f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(judge.retry)
                continue
            try:
                problem = await self._supervise(listener, first, ended)
            finally:
                await asyncio.to_thread(listener.close)
            judge.down(NAME, problem)
            await asyncio.sleep(judge.retry)

    def _deliver(self, first: threading.Event, docs: list[Any], changes: list[Any]) -> None:
        """On the client's thread: digests of what arrived, posted to the judge."""
        if not first.is_set():
            first.set()
            full = {d.id: d.kept for d in docs}
            metrics.DRIFT_LISTENER_DOCUMENTS.inc(len(full))
            self.judge.post(self.judge.firestore_reset, full)
            return
        seen = [
            (
                c.document.id,
                None if c.type.name == "REMOVED" else c.document.kept,
            )
            for c in changes
        ]
        metrics.DRIFT_LISTENER_DOCUMENTS.inc(sum(1 for _, d in seen if d is not None))
        self.judge.post(self.judge.firestore_changes, seen)

    async def _supervise(self, listener: Listener, first: threading.Event, ended: list[str]) -> str:
        """Until the listener fails; returns why. The client reconnects a broken stream by
        itself: a stream found disconnected at ``GRACE`` checks in a row is a failure here
        (then the listener is replaced, and its first snapshot compared with what the last one
        had seen)."""
        disconnected = 0
        while True:
            await asyncio.sleep(self.judge.retry)
            if not listener.alive:
                return "its stream ended" + (f": {ended[-1]}" if ended else "")
            if listener.connected:
                disconnected = 0
                if first.is_set():
                    self.judge.up(NAME)
                continue
            disconnected += 1
            if disconnected >= GRACE:
                return f"its stream has been disconnected for {disconnected} checks"
