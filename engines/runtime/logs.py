"""The log line of each slot transition: first serving, switched, rebuilt, lost, failed.

One line per transition, at the level an operator acts on (a failure is an error, a lost entry
a warning), naming the tenant, the kind, the backend and the revision, so the log alone tells
which entry a pod serves and why it does not serve the newest one.
"""

from __future__ import annotations

import logging

from engines.routing.errors import RoutingError
from engines.routing.model import RoutingRecord

from .slots import HeldBackend, Slot

__all__ = ["failed", "lost", "rotation_failed", "swapped"]

log = logging.getLogger("engines.runtime")


def swapped(slot: Slot, old: HeldBackend | None, rec: RoutingRecord, elapsed: float) -> None:
    """``slot`` now serves ``rec`` (``elapsed`` seconds after the change), in place of ``old``."""
    if old is None:
        log.info(
            "serving tenant=%s resource_kind=%s with %s (revision %s)",
            slot.tenant,
            slot.kind.value,
            rec.backend.value,
            rec.revision[:12],
        )
    elif old.record.revision == rec.revision and rec.secret_ref is not None:
        log.info(
            "rebuilt tenant=%s resource_kind=%s %s (revision %s) with the rotated secret %s/%s "
            "in %.0f ms; draining %d in-flight call(s) on the backend built with the old value",
            slot.tenant,
            slot.kind.value,
            rec.backend.value,
            rec.revision[:12],
            rec.secret_ref.name,
            rec.secret_ref.key,
            elapsed * 1000,
            old.inflight,
        )
    else:
        log.info(
            "switched tenant=%s resource_kind=%s from %s (revision %s) to %s (revision %s) "
            "in %.0f ms; draining %d in-flight call(s) on the old backend",
            slot.tenant,
            slot.kind.value,
            old.record.backend.value,
            old.record.revision[:12],
            rec.backend.value,
            rec.revision[:12],
            elapsed * 1000,
            old.inflight,
        )


def lost(slot: Slot) -> None:
    """No entry resolves for ``slot`` any more."""
    log.warning(
        "no RoutingEntry resolves for tenant=%s env=%s project=%s resource_kind=%s: "
        "requests get ConfigMissing and the pod is not ready",
        slot.tenant,
        slot.env,
        slot.project,
        slot.kind.value,
    )


def rotation_failed(record: RoutingRecord, message: str) -> str:
    """``message`` about a rebuild of the serving revision, said as a rotated Secret's failure
    (unchanged when ``record`` has no ``secretRef``)."""
    ref = record.secret_ref
    if ref is None:
        return message
    return (
        f"the rotated value of secret {ref.name}/{ref.key} does not work: {message}; the "
        "backend built with the previous value keeps serving"
    )


def failed(
    slot: Slot,
    record: RoutingRecord,
    held: HeldBackend | None,
    message: str,
    exc: BaseException,
) -> None:
    """Building ``record`` for ``slot`` failed; ``held`` (if any) keeps serving."""
    if held is None:
        log.error(
            "cannot build %s for tenant=%s resource_kind=%s (revision %s): %s; the kind is "
            "not served",
            record.backend.value,
            slot.tenant,
            slot.kind.value,
            record.revision[:12],
            message,
            exc_info=not isinstance(exc, RoutingError | TimeoutError),
        )
    else:
        log.error(
            "cannot switch tenant=%s resource_kind=%s to %s (revision %s): %s; keeping the "
            "last known-good %s (revision %s)",
            slot.tenant,
            slot.kind.value,
            record.backend.value,
            record.revision[:12],
            message,
            held.record.backend.value,
            held.record.revision[:12],
            exc_info=not isinstance(exc, RoutingError | TimeoutError),
        )
