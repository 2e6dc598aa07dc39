"""Which cluster a projection belongs to: the identity the operator writes as ``source.cluster``.

Several clusters may share one Firestore collection (§5). Each operator writes, repairs and
deletes only the documents of its own cluster, and ``routingctl diff``/``prune`` judge documents
by the same rule, so both resolve the identity here: ``--cluster-id`` when given, else the uid of
namespace ``kube-system`` (stable for a cluster's lifetime, distinct between clusters, readable
with one narrow RBAC rule). A process that can have neither refuses to work: guessing would let
it take another cluster's documents for its own.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

__all__ = ["ClusterIdentityError", "cluster_identity"]

log = logging.getLogger(__name__)
KUBE_SYSTEM = "kube-system"
_VALID = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.:]{0,251}[A-Za-z0-9])?$")


class ClusterIdentityError(Exception):
    """The cluster identity can be neither taken from the flag nor read from the cluster:
    ``problem`` says why, ``fix`` what to do."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


def cluster_identity(
    core_api: Any,
    explicit: str | None,
    *,
    flag: str = "--cluster-id",
    hint: str = "chart value operator.clusterId",
    wait: float = 0.0,
) -> str:
    """``explicit`` when given (checked), else the uid of namespace ``kube-system`` read through
    ``core_api`` (a ``kubernetes.client.CoreV1Api``). Raises ``ClusterIdentityError`` naming the
    fix (``flag``, and ``hint`` on where its value comes from). An API server that does not
    answer is asked again for up to ``wait`` seconds (a refusal is final at once)."""
    if explicit is not None:
        if not _VALID.match(explicit):
            raise ClusterIdentityError(
                f"{flag} {explicit!r} is not a valid cluster identity",
                "use 1-253 letters, digits, '-', '_', '.' or ':', starting and ending with a "
                "letter or digit",
            )
        return explicit
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    fix = (
        f"pass {flag} ({hint}), or allow get on namespace "
        f"{KUBE_SYSTEM} (its uid is the default identity)"
    )
    deadline = time.monotonic() + wait
    pause = 1.0
    while True:
        try:
            ns = core_api.read_namespace(KUBE_SYSTEM, _request_timeout=15)
            break
        except ApiException as exc:
            raise ClusterIdentityError(
                f"cannot determine this cluster's identity: reading namespace {KUBE_SYSTEM} "
                f"failed (HTTP {exc.status} {exc.reason})",
                fix,
            ) from exc
        except (HTTPError, OSError) as exc:
            problem = f"the API server did not answer ({exc.__class__.__name__}: {exc})"
            if time.monotonic() + pause > deadline:
                raise ClusterIdentityError(
                    f"cannot determine this cluster's identity: {problem}",
                    f"check the kubeconfig, or {fix}",
                ) from exc
            log.warning("reading the cluster identity: %s; asking again in %.0f s", problem, pause)
            time.sleep(pause)
            pause = min(pause * 2, 8.0)
    uid = getattr(getattr(ns, "metadata", None), "uid", None)
    if not uid:
        raise ClusterIdentityError(
            f"cannot determine this cluster's identity: namespace {KUBE_SYSTEM} has no uid", fix
        )
    return str(uid)
