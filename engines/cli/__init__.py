"""``routingctl`` (also ``kubectl routing``): lint, explain and compare routing entries.

One console script, installed twice (``routingctl`` and ``kubectl-routing``, so kubectl finds it
as a plugin). Everything it knows about a RoutingEntry comes from ``engines.routing``: the same
pydantic model as the CRD and the operator validates manifests, and the same ``RoutingTable``
as the engines runtime resolves them, so the tool can never disagree with what runs.

Private modules: ``_manifests`` (read YAML/JSON documents), ``_validate`` (the offline linter),
``_sources`` (load entries from manifests, mounted files, Firestore or the cluster),
``_explain`` / ``_matrix`` / ``_diff`` (the reports), ``_output`` (rendering helpers).
"""

from .routingctl import main

__all__ = ["main"]
