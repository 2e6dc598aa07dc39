"""Drift: the projections an operator wrote are changed or removed out of band, and the
RoutingEntry (the source of truth) puts them back.

A drifted entry is requeued through the ``routing.engines.io/requeue`` annotation, so every repair
runs through the normal reconcile path, which counts it and posts the ``DriftRepaired`` Event.

This is the fast path: listeners on the Firestore collection and on the managed ConfigMaps see
each change as it arrives; the periodic sweep (drift_sweep.py) stays the safety net for whatever
a listener missed. The pieces:

- ``drift_firestore``: this cluster's documents, through the gateway's listener;
- ``drift_configmaps``: the label-selected watch on the managed ConfigMaps;
- ``drift_judge``: the digests both saw, and the judgement that requeues an entry.
"""

from __future__ import annotations

import threading

from .drift_configmaps import ConfigMapDriftWatch
from .drift_firestore import FirestoreDriftListener
from .drift_judge import DriftJudge
from .drift_sweep import DriftSweeper
from .reconciler import Reconciler

__all__ = ["DriftListeners"]


class DriftListeners:
    """Repairs drift as it happens: a Firestore listener on this cluster's documents and a
    label-selected watch on the managed ConfigMaps, so an out-of-band edit or deletion is
    requeued within a fraction of a second instead of at the next sweep.

    Both keep a 16-byte digest per projection (what was last seen of it), judged by one
    :class:`~routing_operator.drift_judge.DriftJudge`. Only this cluster's documents are
    listened to (``source.cluster``); another cluster's are never read, judged or touched. A
    listener that fails is reported (log, metrics) and established again; what it missed
    meanwhile is found by comparing what it sees again with what it had, and the sweep stays
    the last resort.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        namespaces: list[str] | None,
        sweeper: DriftSweeper,
    ) -> None:
        self.namespaces = namespaces
        self.judge = DriftJudge(reconciler, sweeper)

    async def run(self) -> None:
        """Listen until cancelled (both listeners, each established again when it fails)."""
        self.judge.start()
        stopping = threading.Event()
        scopes: list[str | None] = list(self.namespaces) if self.namespaces is not None else [None]
        watches = [ConfigMapDriftWatch(self.judge, ns, stopping) for ns in scopes]
        for watch in watches:
            name = f"drift-cm-{watch.namespace or '*'}"
            threading.Thread(target=watch.run, name=name, daemon=True).start()
        try:
            await FirestoreDriftListener(self.judge).run()
        finally:
            stopping.set()
            for watch in watches:
                watch.stop()
            self.judge.stop()
