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
"""

from __future__ import annotations

from kopf._core.engines.peering import Identity, Peer

__all__ = ["Identity", "Peer"]
