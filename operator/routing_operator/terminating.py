"""Is a refused write explained by the namespace being deleted?

Why: deleting a watched namespace makes the namespace controller delete everything in it at
once: the entries (whose finalizer is ours), their ConfigMaps, and the chart's Role that lets
the operator read and write those ConfigMaps there. The operator then gets 403 cleaning up an
entry's ConfigMap key, either from RBAC (the Role is gone) or from the API server's namespace
lifecycle ("... because it is being terminated"). Retrying would hold the finalizer, and the
namespace would stay Terminating for ever; the ConfigMap goes with the namespace anyway. So a
403 in a namespace being deleted is not an error of the deletion, any other 403 still is.
"""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["gone_with_namespace"]

log = logging.getLogger(__name__)

TERMINATING_CAUSE = "NamespaceTerminating"
"""The ``details.causes[].type`` of the API server's refusal to create in such a namespace."""


def _refused_as_terminating(exc: Any) -> bool:
    try:
        details = json.loads(exc.body or "{}").get("details") or {}
    except (TypeError, ValueError):
        return False
    return any(c.get("type") == TERMINATING_CAUSE for c in details.get("causes") or [])


def namespace_terminating(core_api: Any, namespace: str) -> bool:
    """Whether ``namespace`` is being deleted (or already gone). Listed by name, not read: the
    chart grants list on namespaces (kopf resolves its watched ones), not get. False when this
    cannot be told (no right to list them: an operator watching every namespace has none, and
    there a 403 never comes from a deleted Role)."""
    from kubernetes.client.exceptions import ApiException

    try:
        listed = core_api.list_namespace(field_selector=f"metadata.name={namespace}")
    except ApiException:
        return False
    if not listed.items:
        return True
    return listed.items[0].metadata.deletion_timestamp is not None


def gone_with_namespace(core_api: Any, namespace: str, exc: Exception, what: str) -> bool:
    """True (and logged) when ``exc`` is a 403 on ``what`` in a namespace being deleted: what
    was to be cleaned up is deleted with the namespace, the caller carries on."""
    from kubernetes.client.exceptions import ApiException

    if not isinstance(exc, ApiException) or exc.status != 403:
        return False
    if not (_refused_as_terminating(exc) or namespace_terminating(core_api, namespace)):
        return False
    log.warning(
        "namespace %s is being deleted and refuses the cleanup of %s (HTTP 403): "
        "left to the namespace's deletion",
        namespace,
        what,
    )
    return True
