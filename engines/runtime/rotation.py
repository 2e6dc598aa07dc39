"""Secret rotation: which serving backends were built with a Secret value that has changed since.

Kubelet rewrites a mounted Secret in place (an atomic swap of ``..data``) and nothing tells the
registry, so the slots look. Every ``secret_check_interval`` seconds each serving backend built
with a ``secretRef`` compares the sha256 of the value on disk with the one it was built with; a
difference marks the slot dirty, and its worker rebuilds and swaps it exactly like a new
revision. Polling a digest is deliberately simple: it works whatever the volume type, survives
symlink swaps that inotify watches lose, and costs one small tmpfs read per secret-backed slot
per interval. A new value that fails (a wrong password) is a failed switch: the backend built
with the previous value keeps serving, and the failure is in ``/routing``, the metrics and the
log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from engines.routing.model import SecretRef

from .slots import HeldBackend, Slot

__all__ = ["SecretDigests", "rotated_slots", "secret_rotated"]

log = logging.getLogger("engines.runtime")


class SecretDigests(Protocol):
    """What the slots need from a secret reader to notice a rotated Secret."""

    def digest(self, ref: SecretRef) -> str | None:
        """sha256 of the value the last build read for ``ref``."""

    def current_digest(self, ref: SecretRef) -> str | None:
        """sha256 of the value mounted now (``None`` when it cannot be read)."""


def secret_rotated(secrets: SecretDigests | None, held: HeldBackend) -> bool:
    """The Secret value mounted now differs from the one ``held`` was built with."""
    ref = held.record.secret_ref
    if ref is None or secrets is None or held.secret_digest is None:
        return False
    now = secrets.current_digest(ref)
    return now is not None and now != held.secret_digest


def rotated_slots(secrets: SecretDigests, slots: Iterable[Slot]) -> list[Slot]:
    """The serving slots whose mounted Secret value changed, each once per new value."""
    rotated: list[Slot] = []
    seen: dict[SecretRef, str | None] = {}  # one read per Secret key per look, not per slot
    for slot in slots:
        held = slot.current
        ref = held.record.secret_ref if held is not None else None
        if held is None or held.secret_digest is None or ref is None:
            continue
        if ref not in seen:
            seen[ref] = secrets.current_digest(ref)
        now = seen[ref]
        if now is None or now == held.secret_digest or now == slot.secret_seen:
            continue  # unreadable (keep serving), unchanged, or already tried
        slot.secret_seen = now
        log.info(
            "secret %s/%s changed for tenant=%s resource_kind=%s: rebuilding its backend",
            ref.name,
            ref.key,
            slot.tenant,
            slot.kind.value,
        )
        rotated.append(slot)
    return rotated
