"""Building an entry's status from what its reconciliation found: which status fields a patch
carries, what a condition said before, which condition a projection's write outcome (or failure)
becomes, and how long kopf waits before a retry.

Shared by the write path (reconciler.py) and the deletion path (deletion.py), so both report a
failure with the same reason and message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

import kopf
import urllib3

from engines.routing.collection import Outcome
from engines.routing.errors import BackendUnavailable, OwnershipConflict

from .conditions import READY, Reason, Wanted, merge_conditions

__all__ = ["backoff", "previous", "set_status", "sync"]


def backoff(retry: int) -> float:
    return float(min(30, 2 ** min(retry, 5)))


def set_status(
    patch: kopf.Patch,
    status: Mapping[str, Any],
    generation: int | None,
    wanted: list[Wanted],
    **fields: Any,
) -> str:
    """Put into the patch only the status fields whose value changes. An entry resumed
    unchanged (every entry, when the operator restarts) then sends no PATCH at all: a no-op
    PATCH leaves the resourceVersion as it was, so no watch event answers it, and kopf would
    hold that entry's worker for its consistency timeout waiting for one: a restart would then
    crawl through the synced entries one timeout per worker."""
    wanted_status = {
        "conditions": merge_conditions(status.get("conditions"), wanted, generation),
        "observedGeneration": generation,
        **fields,
    }
    for k, v in wanted_status.items():
        if status.get(k) != v:
            patch.status[k] = v
    ready = next(w for w in wanted if w.type == READY)
    return ready.reason


def previous(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any]:
    """The condition ``ctype`` as the status holds it now (empty when it has none)."""
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return c  # type: ignore[no-any-return]
    return {}


async def sync(
    ctype: str,
    write: Awaitable[Outcome],
    ok_message: str,
) -> tuple[Wanted, Outcome | None]:
    """Await one projection's write and say what condition ``ctype`` it makes: ``Synced``, or
    why not (an unreachable backend or API server is temporary, an identity taken a conflict)."""
    from kubernetes.client.exceptions import ApiException

    try:
        outcome = await write
    except BackendUnavailable as exc:
        return Wanted(ctype, "False", Reason.BACKEND_UNAVAILABLE, f"{exc}; retrying"), None
    except OwnershipConflict as exc:
        return Wanted(ctype, "False", Reason.CONFLICT, str(exc)), None
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        return Wanted(
            ctype,
            "False",
            Reason.BACKEND_UNAVAILABLE,
            f"Kubernetes API unreachable ({exc.__class__.__name__}: {exc}); retrying",
        ), None
    except ApiException as exc:
        return Wanted(
            ctype,
            "False",
            Reason.BACKEND_UNAVAILABLE,
            f"Kubernetes API error {exc.status} {exc.reason}; retrying",
        ), None
    return Wanted(ctype, "True", Reason.SYNCED, ok_message), outcome
