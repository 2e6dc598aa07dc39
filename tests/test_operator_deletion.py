"""Deleting RoutingEntries, against the real stack: with allow-delete, only its projections go and
the finalizer is released (an emptied ConfigMap is deleted); without it, the projections are kept
and keep serving, with a Warning Event, counted, and the same identity takes them back; orphans
are removed in env test and kept elsewhere.
"""

from __future__ import annotations

import json
from typing import Any

from operator_harness import ALLOW_DELETE, Entries, OperatorProcess, doc, entry

from devstack.testing import wait_for


def test_delete_removes_only_its_projections_and_releases_the_finalizer(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    entries.create(entry("acme-kpi", annotations=ALLOW_DELETE))
    entries.create(entry("acme-seo", kind="seo", annotations=ALLOW_DELETE))
    entries.wait_reason("acme-kpi", "Synced", "True")
    entries.wait_reason("acme-seo", "Synced", "True")

    entries.delete("acme-kpi")
    wait_for(lambda: entries.get("acme-kpi") is None, timeout=60, what="finalizer released")
    assert doc(fs, collection, "prod:acme:*:kpi") is None
    assert set(entries.configmap_data("routing.prod.acme") or {}) == {"acme._.seo.json"}
    assert doc(fs, collection, "prod:acme:*:seo") is not None

    entries.delete("acme-seo")
    wait_for(lambda: entries.get("acme-seo") is None, timeout=60, what="finalizer released")
    assert entries.configmap_data("routing.prod.acme") is None, "emptied ConfigMap not deleted"
    assert doc(fs, collection, "prod:acme:*:seo") is None


def test_orphans_are_removed_in_env_test_and_kept_elsewhere(
    metered_operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    """Entries that vanished without their finalizer running (force-removed while no operator
    ran) leave projections behind: the sweep removes those of env test, keeps the others (they
    may still be served), counts them by env and logs each once; nothing else is touched."""
    op = metered_operator
    entries.create(entry("gone", env="test"))
    entries.create(entry("gone-prod", kind="seo"))
    entries.create(entry("kept", env="test", kind="seo"))
    for name in ("gone", "gone-prod", "kept"):
        entries.wait_reason(name, "Synced", "True")
    op.kill()
    for name in ("gone", "gone-prod"):
        entries.patch(name, {"metadata": {"finalizers": None}})
        entries.delete(name)
        wait_for(lambda n=name: entries.get(n) is None, timeout=60, what=f"{name} removed")
    # a document nobody owns (no source) is not ours to remove
    fs.collection(collection).document("prod:hand:*:kpi").set({"tenant": "hand"})
    op.start()
    wait_for(
        lambda: doc(fs, collection, "test:acme:*:kpi") is None,
        timeout=60,
        what="orphaned test document removed",
    )
    wait_for(
        lambda: "acme._.kpi.json" not in (entries.configmap_data("routing.test.acme") or {}),
        timeout=60,
        what="orphaned test key removed",
    )
    wait_for(
        lambda: op.metric("routing_operator_orphans", {"env": "prod"}) == 2,
        timeout=60,
        what="the prod document and key counted as orphans",
    )
    assert doc(fs, collection, "prod:acme:*:seo") is not None
    assert "acme._.seo.json" in (entries.configmap_data("routing.prod.acme") or {})
    assert doc(fs, collection, "test:acme:*:seo") is not None
    assert "acme._.seo.json" in (entries.configmap_data("routing.test.acme") or {})
    assert doc(fs, collection, "prod:hand:*:kpi") == {"tenant": "hand"}
    log = op.log()
    assert "removed orphaned Firestore document " + f"{collection}/test:acme:*:kpi" in log
    kept = f"orphan kept: Firestore document {collection}/prod:acme:*:seo"
    wait_for(lambda: kept in op.log(), timeout=30, what="the kept orphan logged")
    assert op.metric("routing_operator_orphans_removed_total") == 2
    # a later sweep (the one that repairs this) does not log the kept orphans again
    fs.collection(collection).document("test:acme:*:seo").delete()
    wait_for(
        lambda: doc(fs, collection, "test:acme:*:seo") is not None,
        timeout=60,
        what="a later sweep repairing a deleted document",
    )
    assert op.log().count("orphan kept") == 2  # the prod document and key, once each


def events_of(entries: Entries, name: str, reason: str) -> list[Any]:
    found = entries.core.list_namespaced_event(
        entries.ns, field_selector=f"involvedObject.name={name},reason={reason}"
    )
    return list(found.items)


def test_a_plain_delete_keeps_what_is_served_and_the_same_identity_takes_it_back(
    metered_operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    """A prod entry deleted without routing.engines.io/allow-delete (here a plain delete: the
    chart's policy is not installed on this API server) keeps its document and ConfigMap key,
    with a Warning Event and the projections_kept counter; a new entry with the same identity
    takes them back with no Conflict on the way."""
    op = metered_operator
    entries.create(entry("acme-kpi", settings={"collection": "first"}))
    entries.wait_reason("acme-kpi", "Synced", "True")
    entries.delete("acme-kpi")
    wait_for(lambda: entries.get("acme-kpi") is None, timeout=60, what="finalizer released")
    stored = doc(fs, collection, "prod:acme:*:kpi")
    assert stored is not None and stored["source"]["name"] == "acme-kpi"
    value = (entries.configmap_data("routing.prod.acme") or {}).get("acme._.kpi.json")
    assert value is not None and json.loads(value)["source"]["name"] == "acme-kpi"
    kept = wait_for(
        lambda: events_of(entries, "acme-kpi", "ProjectionsKept"),
        timeout=30,
        what="the ProjectionsKept Event",
    )
    assert kept[0].type == "Warning" and "allow-delete" in kept[0].message
    assert op.metric("routing_operator_projections_kept_total") == 1

    entries.create(entry("acme-kpi-again", settings={"collection": "second"}))
    entries.wait_reason("acme-kpi-again", "Synced", "True")
    stored = doc(fs, collection, "prod:acme:*:kpi")
    assert stored is not None and stored["source"]["name"] == "acme-kpi-again"
    assert stored["config"]["collection"] == "second"
    value = (entries.configmap_data("routing.prod.acme") or {})["acme._.kpi.json"]
    assert json.loads(value)["source"]["name"] == "acme-kpi-again"
    # kopf posts Events from a background queue, so Reclaimed may arrive after the status says
    # Synced: wait for it, then check that no Conflict was posted before it.
    wait_for(
        lambda: events_of(entries, "acme-kpi-again", "Reclaimed"),
        timeout=30,
        what="the Reclaimed Event",
    )
    assert not events_of(entries, "acme-kpi-again", "Conflict")
