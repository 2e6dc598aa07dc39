"""A synced entry's new spec written to Firestore as its watch event arrives, before kopf.

A backend switch is a PATCH of a synced entry's spec, and the apps see it when its Firestore
document changes. Through kopf, the write waits for kopf's per-entry queue, its worker, the
``claims`` event handler, the finalizer check, the diff against the last handled state and the
handler call: several milliseconds on every switch, all before the one write that matters.
:class:`EarlyWrites` sits on the entries' watch stream, in front of kopf, and starts that write
at once, on the reconciler's thread pool. kopf's reconcile of the same version then takes the
write's outcome instead of writing again, and does the rest as before (the ConfigMap key, the
status, the Events).

Only a plain change of a synced entry is written early; everything else waits for kopf:

* the entry has the operator's finalizer, is not being deleted, paused or adopting;
* its status says its document is synced, at the identity the new spec still has (an identity
  change moves the document: kopf's reconcile does that);
* it is its identity's winner in the claims map (no API call: an unchecked winner waits);
* the new spec is valid and its revision is not the one already written.

The write is the gateway's own (``RoutingCollection.write``: the §5 ownership rules, conditioned
on the document's update time), the same call the reconcile makes. Writes of one entry run one
after the other, in the order of the events, so an older version never lands after a newer one.
A change back to the version the status already reports is written too (the document may hold
the version in between, and kopf, which sees no difference from what it last handled, would not
call the reconcile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engines.routing.contract import (
    ADOPT_ANNOTATION,
    PAUSED_ANNOTATION,
    annotated,
    expected_record,
)
from engines.routing.errors import InvalidRouting
from engines.routing.model import RoutingRecord, Source

from . import metrics
from .conditions import FIRESTORE_SYNCED
from .finalizing import FINALIZER
from .projections import Outcome
from .status import previous

if TYPE_CHECKING:
    from .reconciler import Reconciler

__all__ = ["Early", "EarlyWrites"]

log = logging.getLogger(__name__)

Written = tuple[Outcome, Source | None]
"""What ``RoutingCollection.write`` returns: the outcome and the owner a takeover replaced."""


@dataclass(frozen=True, slots=True)
class Early:
    """One entry's latest early write."""

    revision: str
    task: asyncio.Task[Written]
    settled: bool
    """Written back to the version the status already reports: kopf will not reconcile it, so
    nothing takes it; it is dropped when done."""


class EarlyWrites:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self._pending: dict[str, Early] = {}
        """uid → the entry's latest early write, until its reconcile takes it."""

    def __len__(self) -> int:
        return len(self._pending)

    async def tap(self, source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """``source``'s events, unchanged, each first looked at by :meth:`saw`."""
        async for event in source:
            if type(event) is dict:
                try:
                    self.saw(event)
                except Exception:  # never the stream's problem: kopf's reconcile still runs
                    log.exception("early write not started")
            yield event

    def saw(self, event: dict[str, Any]) -> None:
        """Start the Firestore write of a watch event's entry if it qualifies (module doc)."""
        obj = event.get("object")
        if event.get("type") != "MODIFIED" or type(obj) is not dict:
            return
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        uid = meta.get("uid")
        if (
            not uid
            or meta.get("deletionTimestamp")
            or FINALIZER not in (meta.get("finalizers") or ())
            or annotated(meta, PAUSED_ANNOTATION)
            or annotated(meta, ADOPT_ANNOTATION)
            or previous(status, FIRESTORE_SYNCED).get("status") != "True"
        ):
            return
        reconciler = self.reconciler
        try:
            record = expected_record(obj.get("spec") or {}, meta, reconciler.cluster)
        except InvalidRouting:
            return  # kopf's reconcile reports it
        document_id = record.key.document_id
        if (status.get("firestore") or {}).get("document") != (
            f"{reconciler.collection}/{document_id}"
        ):
            return
        winner = reconciler.claims.winner(document_id)
        if winner is None or winner.uid != uid or not reconciler.cluster:
            return
        before = self._pending.get(uid)
        if record.revision == (before.revision if before else status.get("revision")):
            return
        settled = record.revision == status.get("revision")
        task = asyncio.create_task(self._write(record, before), name=f"early write {uid}")
        early = Early(record.revision, task, settled)
        self._pending[uid] = early
        task.add_done_callback(lambda _: self._done(uid, early))
        metrics.EARLY_WRITES.inc()
        ref = {k: meta.get(k) for k in ("name", "namespace", "uid")}
        # k8s_ref: the entry this line is about, as in kopf's own per-entry lines.
        log.debug("early write of revision %s", record.revision[:12], extra={"k8s_ref": ref})

    async def _write(self, record: RoutingRecord, before: Early | None) -> Written:
        if before is not None:
            await asyncio.wait([before.task])  # in order; its failure is its reconcile's
        reconciler = self.reconciler
        write: Callable[[], Written] = lambda: reconciler.firestore.write(  # noqa: E731
            record, reconciler.owner_alive
        )
        return await reconciler.run_blocking(write)

    def _done(self, uid: str, early: Early) -> None:
        if not early.task.cancelled() and early.task.exception() is not None:
            log.debug("early write of %s failed: %s", uid, early.task.exception())
        if early.settled and self._pending.get(uid) is early:
            del self._pending[uid]

    def take(self, uid: str) -> Early | None:
        """The entry's latest early write, handed to its reconcile (which awaits it)."""
        return self._pending.pop(uid, None)

    def forget(self, uid: str) -> None:
        """The entry is gone."""
        self._pending.pop(uid, None)
