"""Where kopf keeps the last handled state of each entry: in this process, as a digest.

kopf decides whether an event is a creation, a change or nothing by comparing the entry with
the "diff base" of the last state its handlers finished. By default that base is written back
into the entry (an annotation, or a field of status): one more PATCH of every entry after every
handled change, one more watch event back, and a JSON copy of the spec carried in every body.

The operator needs none of it. Its reconcile is idempotent and reads everything it compares from
the entry (``observedGeneration``, ``revision``, conditions), and kopf's handlers for creation,
change and resumption all call the same reconcile. So the base lives here, as a 16-byte digest
per entry: a change of spec, labels or annotations since the last finished reconcile is a
change; the same state is nothing to do; an entry without a digest is reconciled once, as
kopf's resume would.

Digests are only trusted while this process has watched without a gap. Whenever kopf lists the
entries again (at start, after its watch expired, when a standby replica resumes after a
peering pause), the digests of that namespace (or all, cluster-wide) are dropped: another
replica may have handled newer states meanwhile, and an entry may have changed back to a state
this process once handled. Every listed entry is then reconciled once, which for a synced
entry means reads and no write.

So each handled change costs one PATCH and one watch event fewer.
"""

from __future__ import annotations

from typing import Any

import kopf

from engines.routing.contract import canonical_json, digest

from .listing import scope_key

__all__ = ["CHANGED", "HandledInMemory"]

CHANGED = {"routing.engines.io/changed": True}
"""The base ``fetch`` returns for a changed entry: anything that differs from every essence.
kopf only needs a diff; the handlers never read it."""


def _digest(essence: Any) -> bytes:
    return digest(canonical_json(essence))


class HandledInMemory(kopf.DiffBaseStorage):
    """A kopf diff-base storage that writes nothing to the API: per scope (a namespace, or the
    whole cluster), uid → digest of the essence (spec, labels, annotations) this process last
    handled to the end."""

    def __init__(self, kopf_prefix: str, *, clusterwide: bool) -> None:
        super().__init__()
        self.kopf_prefix = kopf_prefix
        self.clusterwide = clusterwide
        self._handled: dict[str, dict[str, bytes]] = {}
        self._extra_fields: list[Any] | None = None

    def __len__(self) -> int:
        return sum(len(scope) for scope in self._handled.values())

    def _scope(self, body: kopf.Body) -> str:
        return scope_key(body.metadata.namespace, clusterwide=self.clusterwide)

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        if extra_fields is not None:  # kopf passes its handlers' fields; fetch must use them too
            self._extra_fields = list(extra_fields)
        source: Any = body
        if not extra_fields:
            # kopf's build deep-copies the whole body (status, managedFields…) and then drops all
            # but spec, labels and annotations: hand it only what it keeps (same essence).
            meta = body.get("metadata") or {}
            source = {k: v for k, v in body.items() if k not in ("metadata", "status")}
            source["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        essence = super().build(body=source, extra_fields=extra_fields)
        # kopf's own annotations (handler progress, the legacy diff base) are bookkeeping, not
        # something to react to; kopf only drops them when it finds its marker annotation.
        annotations = essence.get("metadata", {}).get("annotations", {})
        for key in [k for k in annotations if k.startswith(f"{self.kopf_prefix}/")]:
            del annotations[key]
        self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> Any:
        handled = self._handled.get(self._scope(body), {}).get(str(body.metadata.uid))
        if handled is None:
            return None  # not handled since this process last listed: kopf's creation cause
        essence = self.build(body=body, extra_fields=self._extra_fields)
        return essence if _digest(essence) == handled else CHANGED

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        self._handled.setdefault(self._scope(body), {})[str(body.metadata.uid)] = _digest(essence)

    def forget(self, body: kopf.Body) -> None:
        """The entry is gone from the API server."""
        self._handled.get(self._scope(body), {}).pop(str(body.metadata.uid), None)

    def relisting(self, namespace: str | None) -> None:
        """kopf lists the entries of ``namespace`` (None: the whole cluster) again."""
        self._handled.pop(scope_key(namespace, clusterwide=self.clusterwide), None)
