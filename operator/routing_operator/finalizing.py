"""The operator's finalizer, put on a new entry in the same handling cycle as its first reconcile.

kopf adds its finalizer to an entry in a cycle of its own: it PATCHes the finalizer, skips the
handlers, waits for the watch to bring back the version it wrote, and only then runs them. Each
new entry thus waits one more round trip through the API server and the watch, and kopf
processes one more event for it, before anything is written.

Here the PATCH is the operator's, made from its ``observe`` event handler, which kopf runs
before it decides about the finalizer. When the PATCH succeeds, the body kopf is processing
becomes the patched entry: kopf then sees its finalizer in place and goes on to the handlers in
the same cycle. The rule does not change: the finalizer is on the entry, on the API server, before
any projection of it is written, because the reconcile runs only after the PATCH has returned.
The PATCH is the one kopf would make (a JSON patch tested against the resourceVersion of the body
it decided on), on kopf's own session. Whenever it cannot be made (the entry changed meanwhile,
it is gone, the API server refused), nothing is replaced and kopf adds the finalizer itself, as
it always did. Deletion is left entirely to kopf: its finalizer name is this one.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import kopf

from . import kopf_internals, trimming

__all__ = ["EarlyFinalizer"]

log = logging.getLogger(__name__)


class EarlyFinalizer:
    """Adds ``finalizer`` to entries that lack it and are not being deleted."""

    def __init__(self, finalizer: str) -> None:
        self.finalizer = finalizer
        self.settings: kopf.OperatorSettings | None = None
        """kopf's settings, known once its startup handler has run."""

    def needed(self, body: kopf.Body) -> bool:
        meta = body.metadata
        return not meta.get("deletionTimestamp") and self.finalizer not in (
            meta.get("finalizers") or []
        )

    async def ensure(self, body: kopf.Body, resource: kopf.Resource, logger: Any) -> bool:
        """Put the finalizer on the entry if it lacks it; True if this did, and ``body`` is now
        the patched entry."""
        if self.settings is None or not self.needed(body):
            return False
        meta = body.metadata
        version = meta.get("resourceVersion")
        if not version:
            return False
        existing = meta.get("finalizers")
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "add", "path": "/metadata/finalizers/-", "value": self.finalizer}
            if existing
            else {"op": "add", "path": "/metadata/finalizers", "value": [self.finalizer]},
        ]
        url = resource.get_url(namespace=meta.namespace, name=meta.name)
        try:
            patched = await kopf_internals.json_patch(url, ops, self.settings, logger)
        except (kopf_internals.APIError, aiohttp.ClientError, TimeoutError) as exc:
            # kopf adds it in a cycle of its own, as it would have without this.
            log.debug("finalizer of %s/%s left to kopf: %r", meta.namespace, meta.name, exc)
            return False
        if type(patched) is not dict or self.finalizer not in (patched.get("metadata") or {}).get(
            "finalizers", []
        ):
            return False
        kopf_internals.replace_body(body, trimming.strip_answer(patched))
        return True
