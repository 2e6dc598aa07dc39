"""Who may write which routing document (§5): the ownership rules every operator applies.

Several clusters may share one collection. An operator writes a document only if it is absent,
already equal, owned by the same RoutingEntry of its cluster, or an orphan of its cluster (its
entry is gone: the entry with that identity takes it back). A document of another cluster is a
conflict unless the entry asks to adopt it (``routing.engines.io/adopt``). A document recording
no cluster (written before cluster identities) is this cluster's when its owner is the writing
entry (rewritten to record the cluster) or still lives here; otherwise its cluster is unknown
and it is treated as another's. Deletes remove only what the deleting entry owns in this
cluster, or (``routingctl prune``) exactly the document read, if unchanged since.

The gateway (``engines.routing.collection``) reads the stored document and applies
:func:`decide_write` before each ownership-checked write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .contract import ADOPT_ANNOTATION, owner_of, strip_server_fields
from .errors import OwnershipConflict

if TYPE_CHECKING:
    from .model import Source

__all__ = ["Outcome", "OwnerAlive", "decide_write", "foreign"]

OwnerAlive = Callable[["Source"], bool]
"""Does the RoutingEntry a projection's ``source`` names still exist (same uid) here?"""


class Outcome(StrEnum):
    """What an ownership-checked write did."""

    UNCHANGED = "unchanged"
    WRITTEN = "written"
    MIGRATED = "migrated"
    """Rewritten only to record this cluster: the entry's own projection from before cluster
    identities."""
    RECLAIMED = "reclaimed"
    """An orphan of this cluster (its entry is gone) taken by the entry with the same identity."""
    ADOPTED = "adopted"
    """Another cluster's document taken over on purpose (the adopt annotation)."""


def foreign(owner: Source, cluster: str) -> bool:
    """Is ``owner`` recorded as another cluster's? (False when no cluster is recorded.)"""
    return owner.cluster is not None and owner.cluster != cluster


def decide_write(
    document_id: str,
    current: Mapping[str, Any],
    wanted: Mapping[str, Any],
    mine: Source,
    cluster: str,
    owner_alive: OwnerAlive,
    adopt: bool,
) -> tuple[Outcome, Source | None]:
    """What writing ``wanted`` (for the entry ``mine`` of ``cluster``) over the stored
    ``current`` document would be, and the owner it replaces; raises ``OwnershipConflict`` when it
    must not be written (the rules are in the module docstring)."""
    if strip_server_fields(current) == wanted:
        return Outcome.UNCHANGED, None
    owner = owner_of(current)
    if owner is None:
        return Outcome.WRITTEN, None  # nobody's: ours to write
    if owner.uid == mine.uid and not foreign(owner, cluster):
        return (Outcome.MIGRATED if owner.cluster is None else Outcome.WRITTEN), None
    if not foreign(owner, cluster):
        if owner_alive(owner):
            raise OwnershipConflict(
                f"Firestore document {document_id} is owned by RoutingEntry "
                f"{owner.namespace}/{owner.name}",
                owner_uid=owner.uid,
            )
        if owner.cluster is not None:
            return Outcome.RECLAIMED, owner
    if adopt:
        return Outcome.ADOPTED, owner
    if owner.cluster is None:
        where = (
            f"belongs to RoutingEntry {owner.namespace}/{owner.name}, which is not in this "
            "cluster (the document records no cluster: written before cluster identities, "
            "maybe by another cluster sharing the collection)"
        )
    else:
        where = (
            f"belongs to cluster {owner.cluster} (RoutingEntry {owner.namespace}/{owner.name} "
            "there)"
        )
    raise OwnershipConflict(
        f"Firestore document {document_id} {where}; nothing written. To take it over on "
        f'purpose, annotate this entry {ADOPT_ANNOTATION}="true"',
        owner_uid=owner.uid,
    )
