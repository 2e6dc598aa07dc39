"""The only door to kopf's private modules: everything the operator takes from ``kopf._*``
comes through here, so a kopf upgrade has one file to check.

Pinned against kopf 1.45.2 (``requirements.lock``); kopf does not export these names, and they
may move or change between its releases. Each is needed because:

- ``Identity`` (``kopf._core.engines.peering``): the type of ``kopf.operator(identity=...)``.
  kopf derives a replica's peering identity itself only when none is passed, and from the
  ``random`` module; the operator passes its own (cli.py) so two replicas never share one.
- ``Peer`` (``kopf._core.engines.peering``): kopf's reading of one peer record in a peering
  object's status (priority, lifetime, last seen → ``is_dead``). The drift sweep pauses exactly
  when kopf pauses this replica (peering.py), so it judges liveness with kopf's own code rather
  than a copy that could disagree.
- ``watching.infinite_watch`` (``kopf._cogs.clients.watching``): the generator of every listed
  object and watch event kopf handles, which kopf's watcher looks up on that module each time a
  watch starts. ``wrap_watches`` wraps it, so fields nobody reads leave each event as it
  arrives (trimming.py) and new entries wait outside kopf in compact form (intake.py), before
  kopf queues anything for a worker.
- ``api.patch`` and ``errors.APIError`` (``kopf._cogs.clients``): a request on kopf's own
  authenticated, pooled session, with kopf's retries; what finalizing.py's one PATCH uses, so it
  goes exactly where kopf's own would.
- ``Body._replace_with`` (kopf's ``ReplaceableMappingView``): after that PATCH, the body kopf is
  processing is the server's new version of the entry, as if the watch had delivered it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
from kopf._cogs.clients import api, watching
from kopf._cogs.clients.errors import APIError
from kopf._core.engines.peering import Identity, Peer

__all__ = [
    "APIError",
    "Identity",
    "Peer",
    "json_patch",
    "replace_body",
    "wrap_watches",
]


def wrap_watches(wrap: Callable[[AsyncIterator[Any], Any], AsyncIterator[Any]]) -> None:
    """Have every stream kopf watches (its listed objects, then the watch events, and its own
    markers in between) pass through ``wrap(stream, resource)`` before kopf queues anything.
    Process-wide and idempotent: a second call replaces the first's wrapper."""
    current = watching.infinite_watch
    original = getattr(current, "__wrapped_original__", current)

    def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        return wrap(original(**kwargs), kwargs.get("resource"))

    infinite_watch.__wrapped_original__ = original  # type: ignore[attr-defined]
    watching.infinite_watch = infinite_watch


async def json_patch(
    url: str, ops: list[dict[str, Any]], settings: kopf.OperatorSettings, logger: Any
) -> Any:
    """A JSON-patch request on kopf's API session; the server's patched object."""
    return await api.patch(
        url=url,
        headers={"Content-Type": "application/json-patch+json"},
        payload=ops,
        settings=settings,
        logger=logger,
    )


def replace_body(body: kopf.Body, raw: dict[str, Any]) -> None:
    """Make ``body`` (and every view of it kopf holds in this cycle) show ``raw``."""
    body._replace_with(raw)
