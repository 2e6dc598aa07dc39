"""``routingctl diff``: RoutingEntry objects (the truth) against their projections.

For each RoutingEntry that wins its identity (§3), the expected projection is exactly what the
operator writes (§5), as the projection contract computes it (``expected_record``: the entry's
spec, generation and source, with this cluster's identity in ``source.cluster``), stored in
Firestore at
``routing_entries/{document_id}`` (plus the server field ``updated_at``, ignored) and in the
ConfigMap ``routing.{env}[.{tenant}]`` of the entry's namespace under ``configmap_key``.
Each finding is one of:

- ``in-sync``      both projections equal the expectation;
- ``drifted``      a projection is missing or differs; the finding names the projection and field;
- ``orphaned``     a Firestore document of this cluster (or recording no cluster) or a ConfigMap
                   key no winning RoutingEntry accounts for (``routingctl prune`` deletes them);
- ``conflicting``  a RoutingEntry that loses its identity to an older one, or whose document
                   another cluster holds (written nowhere);
- ``invalid``      a RoutingEntry the model rejects (the operator reports InvalidConfig);
- ``paused``       a RoutingEntry with ``routing.engines.io/paused: "true"`` (not compared).

Documents of other clusters sharing the collection are none of this cluster's business and
are not reported, except where they hold the identity of one of its entries.

Exit code 1 when anything but ``in-sync`` / ``paused`` is found, like ``kubectl diff``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from engines.routing import InvalidRouting, RoutingKey
from engines.routing.contract import ADOPT_ANNOTATION, MANAGED_BY_SELECTOR, configmap_in_env

from ._output import dump_json, redact
from ._sources import ClusterClient, Entry, firestore_documents, parse_object, routing_collection

__all__ = ["diff"]

STATES = ("in-sync", "drifted", "orphaned", "conflicting", "invalid", "paused")
_MISSING = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def field_diff(want: dict[str, Any], have: dict[str, Any]) -> list[dict[str, Any]]:
    """Differing leaf fields (dotted paths), values redacted."""
    w, h = _flatten(redact(want)), _flatten(redact(have))
    diffs = []
    for path in sorted(set(w) | set(h)):
        a, b = w.get(path, _MISSING), h.get(path, _MISSING)
        if a != b:
            diffs.append(
                {
                    "field": path,
                    "want": None if a is _MISSING else a,
                    "have": None if b is _MISSING else b,
                    "problem": "missing"
                    if b is _MISSING
                    else "unexpected"
                    if a is _MISSING
                    else "differs",
                }
            )
    return diffs


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(diffs: Iterable[dict[str, Any]]) -> str:
    parts = []
    for d in diffs:
        if d["problem"] == "missing":
            parts.append(f"{d['field']} missing (want {_short(d['want'])})")
        elif d["problem"] == "unexpected":
            parts.append(f"{d['field']} unexpected ({_short(d['have'])})")
        else:
            parts.append(f"{d['field']}: have {_short(d['have'])}, want {_short(d['want'])}")
    return "; ".join(parts)


def diff(
    client: ClusterClient,
    *,
    cluster_id: str,
    namespace: str | None,
    env: str | None,
    projections: set[str],
    collection: str,
    gcp_project: str | None,
    database: str | None,
    output: str,
    out: TextIO,
) -> int:
    objects = [
        o
        for o in client.routing_entries(namespace)
        if env is None or (o.get("spec") or {}).get("env") == env
    ]
    findings: list[dict[str, Any]] = []
    entries: list[Entry] = []
    uids: dict[str, str] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        name = f"{meta.get('namespace')}/{meta.get('name')}"
        uids[meta.get("uid", "")] = name
        try:
            entries.append(parse_object(obj, cluster_id))
        except InvalidRouting as exc:
            findings.append(_finding("invalid", name, None, detail=str(exc)))

    winners: dict[Any, Entry] = {}
    for entry in sorted(entries, key=Entry.order):
        first = winners.setdefault(entry.key, entry)
        if first is not entry:
            findings.append(
                _finding(
                    "conflicting",
                    entry.name,
                    entry.key.document_id,
                    detail=f"same identity as {first.name} (older, wins); written nowhere",
                )
            )

    docs: dict[str, dict[str, Any]] = {}
    if "firestore" in projections:
        store = routing_collection(collection, gcp_project, database)
        docs = {doc.id: doc.data for doc in firestore_documents(store, env)}
    cm_values: dict[tuple[str, str, str], str] = {}
    if "configmaps" in projections:
        for cm in client.managed_configmaps(namespace, MANAGED_BY_SELECTOR):
            cm_name = cm.metadata.name
            if not configmap_in_env(cm_name, env):
                continue
            for key, value in (cm.data or {}).items():
                cm_values[(cm.metadata.namespace, cm_name, key)] = value

    for key, entry in sorted(winners.items(), key=lambda kv: kv[0]):
        ns = entry.record.source.namespace if entry.record.source else ""
        doc_id = key.document_id
        cm_ref = (ns, key.configmap_name, key.configmap_key)
        have_doc = docs.pop(doc_id, None)
        have_cm = cm_values.pop(cm_ref, None)
        if entry.paused:
            findings.append(_finding("paused", entry.name, doc_id, detail="not compared (paused)"))
            continue
        want = entry.record.to_document()
        drifts: list[dict[str, Any] | None] = []
        holder = (have_doc or {}).get("source")
        if isinstance(holder, dict) and holder.get("cluster") not in (None, cluster_id):
            findings.append(
                _finding(
                    "conflicting",
                    entry.name,
                    doc_id,
                    "firestore",
                    f"{collection}/{doc_id}",
                    detail=f"held by cluster {holder.get('cluster')} (RoutingEntry "
                    f"{holder.get('namespace')}/{holder.get('name')} there); written nowhere "
                    f"until adopted (annotation {ADOPT_ANNOTATION})",
                )
            )
            continue
        if "firestore" in projections:
            where = f"{collection}/{doc_id}"
            drifts.append(_compare(entry, "firestore", where, want, have_doc, "document missing"))
        if "configmaps" in projections:
            where = f"{ns}/{key.configmap_name}[{key.configmap_key}]"
            drifts.append(_compare(entry, "configmap", where, want, have_cm, "key missing"))
        found = [d for d in drifts if d is not None]
        findings += found or [
            _finding("in-sync", entry.name, doc_id, detail=f"revision {entry.record.revision[:12]}")
        ]

    for doc_id, data in sorted(docs.items()):
        source = data.get("source")
        source = source if isinstance(source, dict) else {}
        if namespace and source.get("namespace") != namespace:
            continue
        if source.get("cluster") not in (None, cluster_id):
            continue  # another cluster's
        findings.append(
            _finding(
                "orphaned",
                None,
                doc_id,
                "firestore",
                f"{collection}/{doc_id}",
                detail=_orphan_detail(source, uids),
            )
        )
    for (ns, cm_name, key), value in sorted(cm_values.items()):
        try:
            data = json.loads(value)
            source = (data.get("source") or {}) if isinstance(data, dict) else {}
            doc_id = RoutingKey(
                data["env"], data["tenant"], data["project"], data["resource_kind"]
            ).document_id
        except (ValueError, KeyError, TypeError):
            source, doc_id = {}, None
        findings.append(
            _finding(
                "orphaned",
                None,
                doc_id,
                "configmap",
                f"{ns}/{cm_name}[{key}]",
                # a ConfigMap is this cluster's, whatever cluster its value records
                detail=_orphan_detail({**source, "cluster": cluster_id} if source else {}, uids),
            )
        )

    summary = {state: sum(1 for f in findings if f["state"] == state) for state in STATES}
    label = client.describe(namespace)
    if output == "json":
        dump_json({"source": label, "env": env, "findings": findings, "summary": summary}, out)
    else:
        _render(findings, summary, label, out)
    return 0 if all(f["state"] in ("in-sync", "paused") for f in findings) else 1


def _compare(
    entry: Entry,
    projection: str,
    where: str,
    want: dict[str, Any],
    have: dict[str, Any] | str | None,
    absent: str,
) -> dict[str, Any] | None:
    """A ``drifted`` finding for one projection, or None when it equals ``want``.

    ``have`` is the stored document, a ConfigMap value (JSON text), or None when absent.
    """
    doc_id = entry.key.document_id
    if have is None:
        return _finding("drifted", entry.name, doc_id, projection, where, detail=absent)
    if isinstance(have, str):
        try:
            have = json.loads(have)
        except ValueError as exc:
            return _finding(
                "drifted", entry.name, doc_id, projection, where, detail=f"not JSON: {exc}"
            )
    fields = field_diff(want, have if isinstance(have, dict) else {"(value)": have})
    if not fields:
        return None
    return _finding("drifted", entry.name, doc_id, projection, where, fields, _describe(fields))


def _orphan_detail(source: dict[str, Any], uids: dict[str, str]) -> str:
    owner = f"{source.get('namespace')}/{source.get('name')}" if source else "unknown"
    uid = source.get("uid") if source else None
    if uid and uid in uids:
        return (
            f"owner {uids[uid]} exists but does not account for it (invalid, or identity changed)"
        )
    if source and source.get("cluster") is None and "uid" in source:
        return (
            f"written for RoutingEntry {owner}, not in this cluster; it records no cluster "
            "(written before cluster identities), so it may be another cluster's"
        )
    return f"written for RoutingEntry {owner}, which no longer exists; routingctl prune deletes it"


def _finding(
    state: str,
    entry: str | None,
    key: str | None,
    projection: str | None = None,
    location: str | None = None,
    fields: list[dict[str, Any]] | None = None,
    detail: str = "",
) -> dict[str, Any]:
    return {
        "state": state,
        "entry": entry,
        "key": key,
        "projection": projection,
        "location": location,
        "fields": fields or [],
        "detail": detail,
    }


def _render(
    findings: list[dict[str, Any]], summary: dict[str, int], label: str, out: TextIO
) -> None:
    out.write(f"diff: RoutingEntry objects vs projections  (source: {label})\n")
    rows = [
        (
            f["state"],
            f["entry"] or "-",
            f["key"] or "-",
            f"{f['projection']} {f['location']}: {f['detail']}" if f["projection"] else f["detail"],
        )
        for f in findings
    ]
    header = ("STATE", "ENTRY", "IDENTITY", "DETAIL")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        out.write(
            "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
            + "\n"
        )
    out.write(
        ", ".join(f"{n} {state}" for state, n in summary.items() if n or state == "in-sync") + "\n"
    )
