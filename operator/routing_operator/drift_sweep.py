"""Drift: the projections an operator wrote are changed or removed out of band, and the
RoutingEntry (the source of truth) puts them back.

A drifted entry is requeued through the ``routing.engines.io/requeue`` annotation, so every repair
runs through the normal reconcile path, which counts it and posts the ``DriftRepaired`` Event.

This module is the safety net: a periodic sweep that lists every projection and every entry,
compares them, requeues what drifted and reports (or removes, in env ``test``) what no entry
owns any more. The listeners (drift_listeners.py), unless turned off, repair most drift long
before it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engines.routing.contract import MANAGED_BY_SELECTOR, PAUSED_ANNOTATION, RoutingKey
from engines.routing.errors import InvalidRouting
from engines.routing.model import RoutingRecord, Source, parse_spec

from . import metrics
from .claims import Claims, Contender, iter_entries
from .conditions import READY, Reason, now_rfc3339
from .peering import Peering
from .projections import configmap_value, digest
from .reconciler import Reconciler

__all__ = ["DriftSweeper", "Sweep"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Sweep:
    """What one drift sweep found."""

    stale: list[Contender] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)
    """uids of every entry the sweep listed."""
    orphan_docs: list[tuple[RoutingKey, Source]] = field(default_factory=list)
    """Firestore documents of this cluster whose entry (in a watched namespace) is gone."""
    orphan_keys: list[tuple[str, RoutingKey, Source]] = field(default_factory=list)
    """(namespace, identity, owner) of ConfigMap keys whose entry is gone."""


class DriftSweeper:
    """Finds entries whose projections drifted, in batch, and requeues them.

    One sweep costs three list calls (RoutingEntries, the Firestore collection, the managed
    ConfigMaps) whatever the number of entries, instead of a timer task and two reads per
    entry. A drifted entry (or a Conflict loser whose winner is gone) is requeued through the
    ``routing.engines.io/requeue`` annotation, so the repair itself runs through the normal
    reconcile path, which counts it and posts the ``DriftRepaired`` Event.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        namespaces: list[str] | None,
        peering: Peering | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.namespaces = namespaces  # None: every namespace
        self.peering = peering
        """This replica in kopf's peering (None: standalone, it always works)."""
        self._yielding_to: str | None = None
        self._orphan_envs: set[str] = set()
        """Envs the orphans gauge has a sample for (set to 0 when their orphans are gone)."""
        self._reported: set[tuple[str, ...]] = set()
        """Kept orphans already logged (each is logged once, not at every sweep)."""
        self._unreadable: set[str] = set()
        """Watched namespaces the last sweep could not read (logged once until readable again)."""

    def standing_by(self) -> str | None:
        """The peer this replica yields to, as kopf decides it from the peering object (a live
        peer of higher or equal priority), in every watched namespace; None when it works here,
        runs standalone, or the peering object cannot be read (then it sweeps: a sweep too many
        costs reads, a sweep too few leaves drift unrepaired)."""
        peering = self.peering
        if peering is None:
            return None
        api = self.reconciler.custom_api
        try:
            if self.namespaces is None:
                objects = [
                    api.get_cluster_custom_object(
                        "kopf.dev", "v1", "clusterkopfpeerings", peering.name
                    )
                ]
            else:
                objects = [
                    api.get_namespaced_custom_object(
                        "kopf.dev", "v1", ns, "kopfpeerings", peering.name
                    )
                    for ns in self.namespaces
                ]
        except Exception as exc:
            log.debug("cannot read the peering %s (%s): sweeping", peering.name, exc)
            return None
        yields = [peering.yields_to(obj.get("status") or {}) for obj in objects]
        return yields[0] if yields and all(yields) else None

    def _configmaps(self, unreadable: set[str]) -> dict[tuple[str, str], dict[str, str]]:
        """(namespace, name) → data of the managed ConfigMaps, read as plain JSON: the client's
        model objects would cost several times the data for every ConfigMap."""
        core = self.reconciler.configmaps.api
        raw = {"label_selector": MANAGED_BY_SELECTOR, "_preload_content": False}
        if self.namespaces is None:
            responses = [core.list_config_map_for_all_namespaces(**raw)]
        else:
            responses = []
            for ns in self.namespaces:
                if ns in unreadable:
                    continue
                try:
                    responses.append(core.list_namespaced_config_map(ns, **raw))
                except Exception as exc:
                    if not self._skippable(ns, exc, unreadable):
                        raise
        found: dict[tuple[str, str], dict[str, str]] = {}
        for response in responses:
            for cm in json.loads(response.data)["items"]:
                meta = cm["metadata"]
                found[(meta["namespace"], meta["name"])] = cm.get("data") or {}
        return found

    def _watched(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def _skippable(self, namespace: str, exc: Exception, unreadable: set[str]) -> bool:
        """A watched namespace answering 403 or 404 is left out of this sweep instead of failing
        it for every namespace: while a namespace is being deleted, the controller removes the
        chart's Role there before the entries are gone. Nothing in it is judged (no repair, no
        orphan) until it reads again."""
        status = getattr(exc, "status", None)
        if status not in (403, 404):
            return False
        if namespace not in self._unreadable | unreadable:
            log.warning(
                "drift sweep: namespace %s answers %s; left out of the sweep until it can be read"
                " (being deleted, or the operator's Role there is missing)",
                namespace,
                status,
            )
        unreadable.add(namespace)
        return True

    def _entries(self, unreadable: set[str]) -> Iterator[dict[str, Any]]:
        """The watched entries, one namespace at a time so an unreadable one is skipped alone."""
        api = self.reconciler.custom_api
        if self.namespaces is None:
            yield from iter_entries(api, None)
            return
        for ns in self.namespaces:
            if ns in unreadable:
                continue
            try:
                yield from iter_entries(api, [ns])
            except Exception as exc:
                if not self._skippable(ns, exc, unreadable):
                    raise

    def find_stale(self) -> Sweep:
        """Entries to requeue (drifted projections, or a lost conflict whose winner is gone) and
        orphans (projections of this cluster whose owning entry, in a watched namespace, no
        longer exists). Another cluster's documents are never orphans here, and a Conflict
        entry whose document another cluster holds is not requeued (it never takes the document
        back by itself).

        Documents are kept as digests and owners; entries are read a page at a time and
        compared as they come."""
        # Projections first, entries last: an entry that wrote a projection we saw existed
        # before we looked, so it is in the list below and its projection is never an orphan.
        # Both timestamps compared with it are the operator's own, RFC 3339 to the second, so
        # they compare as strings; one second of margin for the truncation.
        started = now_rfc3339(seconds_ago=1)
        sweep = Sweep()
        docs: dict[str, tuple[bytes, Source | None]] = {}  # id → (digest, owner)
        for doc in self.reconciler.firestore.documents(timeout=30):
            docs[doc.id] = (doc.digest(), doc.owner)
        unreadable: set[str] = set()
        cms = self._configmaps(unreadable)
        cluster = self.reconciler.cluster
        live = sweep.listed
        claims = Claims()  # as listed now, for the Conflict losers below
        losers: list[tuple[Contender, str]] = []
        for obj in self._entries(unreadable):
            meta = obj["metadata"]
            me = claims.observe(meta, obj.get("spec") or {})
            live.add(me.uid)
            if me.deleting or (meta.get("annotations") or {}).get(PAUSED_ANNOTATION) == "true":
                continue
            if me.namespace in unreadable:
                continue  # its ConfigMaps could not be listed: nothing to compare with
            try:
                spec = parse_spec(obj.get("spec") or {})
            except InvalidRouting:
                continue
            record = RoutingRecord.from_spec(
                spec,
                generation=int(meta.get("generation") or 0),
                source=self.reconciler.source(me.namespace, me.name, me.uid),
            )
            conditions = (obj.get("status") or {}).get("conditions") or []
            ready: dict[str, Any] = next((c for c in conditions if c.get("type") == READY), {})
            if ready.get("reason") == Reason.CONFLICT:
                losers.append((me, record.key.document_id))
                continue
            if ready.get("status") != "True":
                continue  # not synced yet: its own retries are in charge
            synced_at = ((obj.get("status") or {}).get("firestore") or {}).get("syncedAt") or ""
            if max(str(ready.get("lastTransitionTime") or ""), str(synced_at)) >= started:
                # Synced after the projections above were read: they may predate it.
                continue
            key, value = record.key, configmap_value(record)
            doc_ok = docs.get(key.document_id, (b"", None))[0] == digest(value)
            cm = cms.get((me.namespace, key.configmap_name), {})
            cm_ok = cm.get(key.configmap_key) == value
            if not (doc_ok and cm_ok):
                sweep.stale.append(me)
        for me, document_id in losers:
            if claims.winner(document_id) != me:
                continue  # an older entry of this cluster still holds the identity
            holder = docs.get(document_id, (b"", None))[1]
            theirs = holder is not None and holder.uid != me.uid and holder.uid not in live
            if theirs and holder is not None and holder.cluster != cluster:
                continue  # another cluster's (or of none): it stays theirs until adopted
            sweep.stale.append(me)
        for doc_id, (_, owner) in docs.items():
            if owner is None or owner.uid in live or not self._watched(owner.namespace):
                continue
            if owner.namespace in unreadable:
                continue  # its entries could not be listed: absent from `live` is no proof
            if owner.cluster != cluster:
                continue  # another cluster's, or of no recorded cluster: never ours to judge
            try:
                sweep.orphan_docs.append((RoutingKey.from_document_id(doc_id), owner))
            except InvalidRouting:
                continue  # not an entry's document id: nothing of ours to remove
        for (ns, _name), data in cms.items():
            for value in data.values():
                try:
                    orphan = RoutingRecord.from_document(json.loads(value))
                except (ValueError, InvalidRouting):
                    continue
                if orphan.source and orphan.source.uid not in live:
                    sweep.orphan_keys.append((ns, orphan.key, orphan.source))
        for ns in self._unreadable - unreadable:
            log.info("drift sweep: namespace %s can be read again", ns)
        self._unreadable = unreadable
        return sweep

    async def _handle_orphans(self, sweep: Sweep) -> None:
        """Orphans of env ``test`` are removed; any other is kept (it may still be served: its
        entry may have vanished by accident), counted by env and reported once."""
        rec = self.reconciler
        kept: dict[str, int] = {}
        seen: set[tuple[str, ...]] = set()
        for key, owner in sweep.orphan_docs:
            where = f"Firestore document {rec.collection}/{key.document_id}"
            if key.env != "test":
                kept[key.env] = kept.get(key.env, 0) + 1
                seen.add(("firestore", key.document_id, owner.uid))
                self._report_kept(("firestore", key.document_id, owner.uid), where, owner)
            elif await rec.run_blocking(rec.firestore.remove, key, owner.uid):
                metrics.ORPHANS_REMOVED.labels("firestore").inc()
                log.warning(
                    "removed orphaned %s (env test; its RoutingEntry %s/%s is gone)",
                    where,
                    owner.namespace,
                    owner.name,
                )
        for ns, key, owner in sweep.orphan_keys:
            where = f"ConfigMap key {ns}/{key.configmap_name} {key.configmap_key}"
            if key.env != "test":
                kept[key.env] = kept.get(key.env, 0) + 1
                seen.add(("configmap", ns, key.configmap_key, owner.uid))
                self._report_kept(("configmap", ns, key.configmap_key, owner.uid), where, owner)
            elif await rec.run_blocking(rec.configmaps.remove, ns, key, owner.uid):
                metrics.ORPHANS_REMOVED.labels("configmap").inc()
                log.warning(
                    "removed orphaned %s (env test; its RoutingEntry %s/%s is gone)",
                    where,
                    owner.namespace,
                    owner.name,
                )
        for env in self._orphan_envs - kept.keys():
            metrics.ORPHANS.labels(env).set(0)
        for env, count in kept.items():
            metrics.ORPHANS.labels(env).set(count)
        self._orphan_envs |= kept.keys()
        self._reported &= seen

    def _report_kept(self, ident: tuple[str, ...], where: str, owner: Source) -> None:
        if ident in self._reported:
            return
        self._reported.add(ident)
        log.warning(
            "orphan kept: %s (its RoutingEntry %s/%s is gone); an entry with the same identity "
            "takes it back, `routingctl prune` deletes it",
            where,
            owner.namespace,
            owner.name,
        )

    async def run(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                peer = await self.reconciler.run_blocking(self.standing_by)
                if peer != self._yielding_to:
                    if peer is not None:
                        log.info("drift sweeps paused: the peer %s works", peer)
                    else:
                        log.info("drift sweeps resumed: this replica works")
                    self._yielding_to = peer
                if peer is not None or not self.reconciler.cluster:
                    continue  # a standby, or the cluster identity is not known yet
                self.reconciler.claims.begin_list()
                sweep = await self.reconciler.run_blocking(self.find_stale)
                for gone in self.reconciler.claims.prune(sweep.listed):
                    log.info("claimant %s/%s is gone; forgetting it", gone.namespace, gone.name)
                for entry in sweep.stale:
                    log.info("drift or takeover: requeueing %s/%s", entry.namespace, entry.name)
                    await self.reconciler.run_blocking(self.reconciler.requeue, entry)
                await self._handle_orphans(sweep)
                metrics.DRIFT_SWEEPS.inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep sweeping; say what failed
                log.warning("drift sweep failed (%s); next sweep in %ss", exc, period)
