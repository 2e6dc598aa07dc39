"""``routingctl validate``: the offline linter for RoutingEntry manifests.

The spec is checked by :func:`engines.routing.parse_spec` — the model the CRD is generated from
and the operator validates with — so there is no second schema to drift. What the model cannot
see, because it only ever looks at one spec, is checked here: the envelope (``apiVersion``,
``metadata.name``, unknown top-level fields), two manifests that define the same object or the
same identity (§3: the cluster would mark all but the oldest ``Conflict``), and — with
``--require-complete`` — a tenant that lacks a kind in an environment, resolved by the runtime's
own ``RoutingTable`` so wildcard-tenant defaults count exactly as they do in a pod.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engines.routing import (
    ConfigMissing,
    RoutingEntrySpec,
    RoutingKey,
    RoutingRecord,
    RoutingTable,
    Source,
    parse_spec,
)
from engines.routing.contract import API_GROUP, GROUP_VERSION, KIND
from engines.routing.model import spec_problems

from ._manifests import Document, Problem, expand_paths, read_documents

__all__ = ["ParsedEntry", "ValidationReport", "check_completeness", "validate_paths"]


TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """A RoutingEntry document whose envelope and spec are valid."""

    doc: Document
    name: str
    namespace: str | None
    spec: RoutingEntrySpec

    @property
    def object_name(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def record(self) -> RoutingRecord:
        source = Source(namespace=self.namespace or "", name=self.name, uid="")
        return RoutingRecord.from_spec(self.spec, source=source)


@dataclass
class ValidationReport:
    files: int
    documents: int
    """RoutingEntry documents seen (valid or not)."""
    skipped: int
    """Documents of other kinds, ignored."""
    entries: list[ParsedEntry]
    problems: list[Problem]


def is_routing_entry(body: Any) -> bool:
    """A RoutingEntry of our group (or with no apiVersion at all, which is then a problem)."""
    if not isinstance(body, dict) or body.get("kind") != KIND:
        return False
    api = body.get("apiVersion")
    return api is None or (isinstance(api, str) and api.split("/")[0] == API_GROUP)


def _suggest_name(spec: Any) -> str:
    if isinstance(spec, dict):
        parts = [spec.get("tenant"), spec.get("env"), spec.get("resourceKind")]
        if all(isinstance(p, str) and p for p in parts):
            name = "-".join(str(p) for p in parts).replace("*", "all").replace("_", "-").lower()
            if _SUBDOMAIN.match(name):
                return name
    return "acme-prod-seo"


def _check_envelope(doc: Document) -> list[Problem]:
    body: dict[str, Any] = doc.body
    problems = []
    api = body.get("apiVersion")
    if api is None:
        problems.append(
            doc.problem("apiVersion", f"required field is missing; set {GROUP_VERSION}", "envelope")
        )
    elif api != GROUP_VERSION:
        problems.append(
            doc.problem(
                "apiVersion", f"unsupported version {api!r}; use {GROUP_VERSION}", "envelope"
            )
        )
    for key in body:
        if key not in TOP_LEVEL:
            problems.append(
                doc.problem(
                    str(key),
                    "unknown field; remove it (a RoutingEntry has only "
                    + ", ".join(TOP_LEVEL)
                    + ")",
                    "envelope",
                )
            )
    metadata = body.get("metadata")
    example = _suggest_name(body.get("spec"))
    if metadata is None:
        problems.append(
            doc.problem("metadata.name", f"required field is missing; set e.g. {example}", "name")
        )
    elif not isinstance(metadata, dict):
        problems.append(
            doc.problem("metadata", f"expected a mapping, got {type(metadata).__name__}", "name")
        )
    else:
        name = metadata.get("name")
        if name is None:
            hint = (
                " (generateName is not supported by kubectl apply)"
                if "generateName" in metadata
                else ""
            )
            problems.append(
                doc.problem(
                    "metadata.name", f"required field is missing{hint}; set e.g. {example}", "name"
                )
            )
        elif not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.match(name):
            problems.append(
                doc.problem(
                    "metadata.name",
                    f"invalid value {name!r}: must be a lowercase RFC 1123 subdomain (letters, "
                    f"digits, '-' and '.', at most 253); e.g. {example}",
                    "name",
                )
            )
        namespace = metadata.get("namespace")
        if namespace is not None and (
            not isinstance(namespace, str) or not _LABEL.match(namespace)
        ):
            problems.append(
                doc.problem(
                    "metadata.namespace",
                    f"invalid value {namespace!r}: must be a DNS label (lowercase letters, "
                    "digits, '-', at most 63)",
                    "name",
                )
            )
    return problems


def _check_spec(doc: Document) -> tuple[RoutingEntrySpec | None, list[Problem]]:
    spec = doc.body.get("spec")
    if spec is None:
        return None, [
            doc.problem(
                "spec",
                "required field is missing; add spec with tenant, env, resourceKind, backend "
                "and the backend's settings",
                "schema",
            )
        ]
    if not isinstance(spec, dict):
        return None, [
            doc.problem("spec", f"expected a mapping, got {type(spec).__name__}", "schema")
        ]
    problems = [
        doc.problem(f"spec.{loc}" if loc else "spec", message, "schema")
        for loc, message in spec_problems(spec)
    ]
    if problems:
        return None, problems
    return parse_spec(spec), []


def validate_paths(paths: Sequence[str]) -> ValidationReport:
    """Read every path and check every RoutingEntry; raises ``ManifestIOError`` for bad paths."""
    files = expand_paths(paths)
    problems: list[Problem] = []
    entries: list[ParsedEntry] = []
    documents = skipped = 0
    for display, path in files:
        for item in read_documents(display, path):
            if isinstance(item, Problem):
                problems.append(item)
                continue
            doc = item
            if not isinstance(doc.body, dict):
                problems.append(
                    doc.problem(
                        "",
                        f"expected a Kubernetes object (a mapping), got {type(doc.body).__name__}",
                        "envelope",
                    )
                )
                continue
            if not is_routing_entry(doc.body):
                skipped += 1
                continue
            documents += 1
            found = _check_envelope(doc)
            spec, spec_found = _check_spec(doc)
            found += spec_found
            problems += found
            if spec is not None and not found:
                meta = doc.body["metadata"]
                entries.append(ParsedEntry(doc, meta["name"], meta.get("namespace"), spec))
    problems += _check_duplicates(entries)
    order = {display: i for i, (display, _) in enumerate(files)}
    problems.sort(key=lambda p: (order.get(p.file or "", len(order)), p.line or 0))
    return ValidationReport(len(files), documents, skipped, entries, problems)


def _check_duplicates(entries: Iterable[ParsedEntry]) -> list[Problem]:
    problems = []
    by_object: dict[tuple[str, str], ParsedEntry] = {}
    by_key: dict[RoutingKey, ParsedEntry] = {}
    for entry in entries:
        obj = (entry.namespace or "", entry.name)
        first = by_object.get(obj)
        if first is not None:
            problems.append(
                entry.doc.problem(
                    "metadata.name",
                    f"duplicate object {entry.object_name}, also defined at "
                    f"{first.doc.location} (document {first.doc.index}); the later apply "
                    "overwrites the earlier — rename one",
                    "duplicate-object",
                )
            )
            continue
        by_object[obj] = entry
        key = entry.spec.key
        first = by_key.get(key)
        if first is not None:
            problems.append(
                entry.doc.problem(
                    "spec",
                    f"duplicate identity {key.document_id} (tenant, env, project, resourceKind), "
                    f"also defined by {first.object_name} at {first.doc.location} (document "
                    f"{first.doc.index}); only the "
                    "oldest is applied and the others report Conflict — remove one or change "
                    "its identity",
                    "duplicate-identity",
                )
            )
            continue
        by_key[key] = entry
    return problems


def check_completeness(
    entries: Iterable[ParsedEntry],
    *,
    env: str,
    tenants: Sequence[str],
    kinds: Sequence[str],
    project: str = "*",
) -> list[Problem]:
    """One problem per (tenant, kind) that does not resolve in ``env`` (§3 precedence)."""
    table = RoutingTable()
    seen: set[RoutingKey] = set()
    for entry in entries:
        if entry.spec.key not in seen:  # duplicates were reported; the first one counts
            seen.add(entry.spec.key)
            table.upsert(entry.record())
    problems = []
    for tenant in tenants:
        for kind in kinds:
            try:
                table.resolve(kind, tenant, env, project)
            except ConfigMissing as exc:
                tried = ", ".join(k.document_id for k in exc.tried)
                problems.append(
                    Problem(
                        location=f"require-complete:{env}/{tenant}",
                        field="spec.resourceKind",
                        message=(
                            f"no RoutingEntry resolves {kind} for tenant {tenant} in env {env} "
                            f"(tried {tried}); add one with spec.env: {env}, spec.tenant: "
                            f'{tenant} (or "*" for every tenant), spec.resourceKind: {kind}'
                        ),
                        rule="incomplete",
                        extra={
                            "env": env,
                            "tenant": tenant,
                            "project": project,
                            "resource_kind": kind,
                            "tried": [k.document_id for k in exc.tried],
                        },
                    )
                )
    return problems
