"""Where kopf keeps the last handled state of each entry: in this process, as a digest.

kopf decides whether an event is a creation, a change or nothing by comparing the entry with
the "diff base" of the last state its handlers finished. By default that base is written back
into the entry (an annotation, or a field of status): one more PATCH of every entry after every
handled change, one more watch event back, and a JSON copy of the spec carried in every body.

The operator needs none of it. Its reconcile is idempotent and reads everything it compares from
the entry (``observedGeneration``, ``revision``, conditions), and kopf's handlers for creation,
change and resumption all call the same reconcile. So the base lives here, as a 16-byte digest
per entry: a change of spec, labels or annotations since the last finished reconcile is a
change; the same state is nothing to do; an entry this process has not handled yet (all of
them, after a restart or a peering takeover) is reconciled once, as kopf's resume would.

Measured on the local stack: one PATCH and one watch event fewer per handled change.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf

__all__ = ["LEGACY_ANNOTATION", "HandledInMemory"]

LEGACY_ANNOTATION = "last-handled-configuration"
"""The key (under kopf's annotation prefix) of the diff base written by earlier versions; the
first reconcile of such an entry removes it."""


def _digest(essence: Any) -> bytes:
    canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


class HandledInMemory(kopf.DiffBaseStorage):
    """A kopf diff-base storage that writes nothing to the API: uid → digest of the essence
    (spec, labels, annotations) this process last handled to the end."""

    def __init__(self, kopf_prefix: str) -> None:
        super().__init__()
        self.kopf_prefix = kopf_prefix
        self._handled: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._handled)

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        # kopf's own annotations (handler progress, the legacy diff base) are bookkeeping, not
        # something to react to; kopf only drops them when it finds its marker annotation.
        annotations = essence.get("metadata", {}).get("annotations", {})
        for key in [k for k in annotations if k.startswith(f"{self.kopf_prefix}/")]:
            del annotations[key]
        self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> Any:
        handled = self._handled.get(str(body.metadata.uid))
        if handled is None:
            return None  # never handled here: kopf's creation cause, a full reconcile
        essence = self.build(body=body)
        if _digest(essence) == handled:
            return essence  # unchanged: no diff, nothing to handle
        # Changed. kopf only needs a base that differs; the handlers never read the diff.
        return {}

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        self._handled[str(body.metadata.uid)] = _digest(essence)
        legacy = f"{self.kopf_prefix}/{LEGACY_ANNOTATION}"
        if legacy in body.metadata.annotations:
            patch.metadata.annotations[legacy] = None

    def forget(self, uid: str) -> None:
        """The entry is gone from the API server."""
        self._handled.pop(uid, None)
