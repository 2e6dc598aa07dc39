"""This replica's place in kopf's peering, read as kopf reads it.

Several operator replicas may run; kopf pauses all but the one of highest priority. The drift
sweep pauses with it (a paused replica repairing would fight the active one), so it asks
:class:`Peering` whether a live peer outranks this replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Peering"]


@dataclass(frozen=True, slots=True)
class Peering:
    """This replica in kopf's peering: the object's name, its identity and priority."""

    name: str
    identity: str
    priority: int

    def yields_to(self, status: Mapping[str, Any]) -> str | None:
        """The live peer (in a peering object's status) kopf pauses this replica for: one of
        higher priority, or of the same (kopf then pauses both). Read with kopf's own ``Peer``,
        so liveness is judged as kopf judges it."""
        from .kopf_internals import Identity, Peer

        for identity, info in status.items():
            if identity == self.identity:
                continue
            try:
                peer = Peer(identity=Identity(identity), **info)
                works = not peer.is_dead and int(peer.priority) >= self.priority
            except (TypeError, ValueError):  # not a peer record kopf could read either
                continue
            if works:
                return str(identity)
        return None
