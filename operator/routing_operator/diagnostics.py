"""Why the operator is not working, said within seconds: in its log, on ``/readyz``, as a metric.

kopf waits without a word in several situations a user meets on first contact:

- peering is mandatory (``--peering``, the default) and the KopfPeering CRD or the peering
  object is missing: kopf keeps every handler paused until it appears;
- the RoutingEntry CRD is not served: kopf has nothing to watch until it is;
- listing or watching RoutingEntries is forbidden: the startup list retries forever;
- Firestore cannot be reached: every entry retries with a backoff.

So the operator asks for itself: a few API calls (discovery, access reviews, a GET of the peering
object) and a one-document query of the routing collection (its gateway's ``probe``), every
``period_blocked`` seconds while something blocks (so recovery shows at once) and every
``period_ok`` seconds otherwise. The first round runs before kopf logs in, so a blocked operator
says why within a few seconds of its start; each reason is logged when it appears, then again
every ``repeat`` seconds while it lasts, and once more when it clears. The same reasons, each
with its fix, are the JSON body of ``/readyz`` (503 while blocked) and the
``routing_operator_blocked{reason}`` gauge.

A liveness failure makes Kubernetes restart the pod, which fixes none of these, so ``/healthz``
stays 200 while the process runs (with the same body) and only ``/readyz`` turns 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from engines.routing.collection import Probe, RoutingCollection
from engines.routing.contract import API_GROUP as GROUP
from engines.routing.contract import API_VERSION as VERSION
from engines.routing.contract import PLURAL

from .metrics import BLOCKED

__all__ = [
    "REASONS",
    "Blocker",
    "Checks",
    "Diagnostics",
    "alongside",
    "firestore_target",
    "serve_health",
]

log = logging.getLogger(__name__)

PEERING_GROUPS = (("kopf.dev", "v1"), ("zalando.org", "v1"))
"""Where kopf looks for its peering resources (the second is kopf's legacy group)."""

REASONS = (
    "CRDMissing",
    "PeeringCRDMissing",
    "PeeringMissing",
    "Forbidden",
    "KubernetesUnavailable",
    "FirestoreUnreachable",
    "FirestoreDenied",
    "ClusterIdentityUnknown",
)
"""Every value of the ``reason`` label (each gauge is 0 while the reason does not apply)."""

ENTRY_VERBS = ("list", "watch", "patch")
"""What the operator must be allowed to do with RoutingEntries to do anything at all."""


@dataclass(frozen=True, slots=True)
class Blocker:
    """One reason the operator cannot do its job, and what fixes it."""

    reason: str
    message: str
    fix: str


class Checks:
    """The checks themselves: blocking calls with short timeouts (run them in a thread)."""

    def __init__(
        self,
        api: Any,
        firestore: RoutingCollection,
        *,
        namespaces: list[str] | None,
        peering: str | None,
        firestore_target: str,
        timeout: float = 4.0,
    ) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)
        self.authz = client.AuthorizationV1Api(api)
        self.authn = client.AuthenticationV1Api(api)
        self.firestore = firestore
        """The routing collection's gateway: the Firestore check is its probe."""
        self.namespaces = namespaces
        self.named = [ns for ns in namespaces or [] if not _is_pattern(ns)]
        """The watched namespaces given by name: kopf's globs (``team-*``, ``!kube-*``) are
        resolved by kopf against the live namespaces, so they are not checked here."""
        self.peering = peering
        self.firestore_target = firestore_target
        self.timeout = timeout
        self._user: str | None = None
        self._slow = 0
        """Firestore reads in a row that ran out of time."""

    # ---- Kubernetes ---------------------------------------------------------------------------

    def kubernetes(self) -> list[Blocker]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            denied = self._access()
            found = [*self._crd(), *self._peering(denied)]
            return [self._forbidden(denied), *found] if denied else found
        except ApiException as exc:
            detail = f"HTTP {exc.status} {exc.reason}"
        except (HTTPError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        return [
            Blocker(
                "KubernetesUnavailable",
                f"the Kubernetes API cannot be reached or refuses this operator's credentials "
                f"({detail})",
                "check KUBECONFIG (or the pod's ServiceAccount token) and the API server's "
                "address; `kubectl get --raw /readyz` with the same credentials must answer ok",
            )
        ]

    def _served(self, group: str, version: str) -> set[str]:
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.custom.get_api_resources(group, version, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return set()
            raise
        return {r.name for r in found.resources or []}

    def _crd(self) -> list[Blocker]:
        if PLURAL in self._served(GROUP, VERSION):
            return []
        return [
            Blocker(
                "CRDMissing",
                f"the API server does not serve {PLURAL}.{GROUP}/{VERSION}: the RoutingEntry CRD "
                "is not installed, so there is nothing to watch",
                "install it: `kubectl apply --server-side -f crds/` (the Helm chart and "
                "`routing-dev up` install it too); the operator starts watching once it is "
                "served",
            )
        ]

    def _where(self, namespace: str) -> str:
        return f"in namespace {namespace!r}" if namespace else "in any namespace"

    def _access(self) -> list[str]:
        """What this identity may not do with RoutingEntries, one phrase per namespace."""
        from kubernetes import client

        denied: list[str] = []
        for namespace in [""] if self.namespaces is None else self.named:
            verbs = []
            for verb in ENTRY_VERBS:
                review = client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(
                        resource_attributes=client.V1ResourceAttributes(
                            group=GROUP, resource=PLURAL, verb=verb, namespace=namespace or None
                        )
                    )
                )
                got = self.authz.create_self_subject_access_review(
                    review, _request_timeout=self.timeout
                )
                if got.status is None or not got.status.allowed:
                    verbs.append(verb)
            if verbs:
                denied.append(f"{'/'.join(verbs)} {PLURAL}.{GROUP} {self._where(namespace)}")
        return denied

    def _forbidden(self, denied: list[str]) -> Blocker:
        return Blocker(
            "Forbidden",
            f"{self._identity()} may not {'; '.join(denied)}",
            "grant them with a Role/ClusterRole and a binding for this identity: the Helm "
            "chart's RBAC holds exactly what the operator needs (see docs/helm.md); "
            "`kubectl auth can-i --list` with the same credentials shows what it has",
        )

    def _identity(self) -> str:
        if self._user is None:
            from kubernetes import client

            try:
                review = self.authn.create_self_subject_review(
                    client.V1SelfSubjectReview(), _request_timeout=self.timeout
                )
                info = review.status.user_info if review.status is not None else None
                if info is None or not info.username:
                    return "this operator's identity"
                self._user = str(info.username)
            except Exception:  # only decorates the message: never a reason to fail a check
                return "this operator's identity"
        return repr(self._user)

    def _peering(self, denied: list[str]) -> list[Blocker]:
        """What keeps kopf's peering paused; a forbidden read of the object goes to ``denied``."""
        if self.peering is None:
            return []
        from kubernetes.client.exceptions import ApiException

        clusterwide = self.namespaces is None
        plural = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
        kind = "ClusterKopfPeering" if clusterwide else "KopfPeering"
        served = [(g, v) for g, v in PEERING_GROUPS if plural in self._served(g, v)]
        if not served:
            return [
                Blocker(
                    "PeeringCRDMissing",
                    f"peering is on (--peering {self.peering}) but the API server does not "
                    f"serve {plural}.kopf.dev: kopf keeps every handler paused until it does",
                    f"install kopf's peering CRDs: `kubectl apply -f "
                    f"helm/routing-registry/crds/{plural}.kopf.dev.yaml` (`routing-dev up` and "
                    "the Helm chart install them), then create the peering object; or run one "
                    "replica with --standalone",
                )
            ]
        group, version = served[0]
        missing: list[str] = []
        for namespace in [""] if clusterwide else self.named:
            try:
                if clusterwide:
                    self.custom.get_cluster_custom_object(
                        group, version, plural, self.peering, _request_timeout=self.timeout
                    )
                else:
                    self.custom.get_namespaced_custom_object(
                        group, version, namespace, plural, self.peering,
                        _request_timeout=self.timeout,
                    )  # fmt: skip
            except ApiException as exc:
                if exc.status == 404:
                    missing.append(namespace)
                elif exc.status == 403:
                    where = "" if clusterwide else f" {self._where(namespace)}"
                    denied.append(f"get {plural}.{group} {self.peering!r}{where}")
                else:
                    raise
        found: list[Blocker] = []
        if missing:
            where = "" if clusterwide else f" in namespace(s) {', '.join(missing)}"
            commands = [_peering_command(kind, group, version, self.peering, ns) for ns in missing]
            found.append(
                Blocker(
                    "PeeringMissing",
                    f"the {kind} {self.peering!r} does not exist{where}: peering is on "
                    f"(--peering {self.peering}), so kopf keeps every handler paused until it "
                    "exists",
                    "create it: "
                    + " ; ".join(commands)
                    + " (`routing-dev up` creates 'routing-operator' cluster-wide and in the "
                    "namespaces default and engines; the Helm chart creates its own), or pass "
                    "--peering with an existing name, or run one replica with --standalone",
                )
            )
        return found

    # ---- Firestore ----------------------------------------------------------------------------

    def firestore_check(self) -> list[Blocker]:
        try:
            found, error = self.firestore.probe(self.timeout)
        except Exception as exc:  # any other failure of one small read means "cannot reach"
            return [self._unreachable(exc)]
        if error is None:
            self._slow = 0
            return []
        cause = error.__cause__ or error
        if found is Probe.SLOW:
            # Slow is not down: a timeout counts from the second in a row. A refusal counts at
            # once.
            self._slow += 1
            return [] if self._slow < 2 else [self._unreachable(cause)]
        if found is Probe.DENIED:
            return [
                Blocker(
                    "FirestoreDenied",
                    f"Firestore ({self.firestore_target}) refuses this operator: "
                    f"{_first_line(cause)}",
                    "give this identity read/write access to the database (roles/datastore.user; "
                    "in GKE through Workload Identity, see docs/helm.md), or point "
                    "--firestore-project/--firestore-database at the right one",
                )
            ]
        return [self._unreachable(cause)]

    def _unreachable(self, exc: BaseException) -> Blocker:
        return Blocker(
            "FirestoreUnreachable",
            f"Firestore ({self.firestore_target}) cannot be reached: "
            f"{type(exc).__name__}: {_first_line(exc)}",
            "check that Firestore (or the emulator at FIRESTORE_EMULATOR_HOST) is up and "
            "reachable from here; entries wait with BackendUnavailable and recover by themselves",
        )


def _is_pattern(namespace: str) -> bool:
    return namespace.startswith("!") or any(c in namespace for c in "*?[,")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _peering_command(kind: str, group: str, version: str, name: str, namespace: str) -> str:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    body = json.dumps({"apiVersion": f"{group}/{version}", "kind": kind, "metadata": meta})
    return f"echo '{body}' | kubectl apply -f -"


def firestore_target(project: str, database: str | None) -> str:
    """How to name the Firestore this process talks to, in a message."""
    emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
    where = f"emulator at {emulator}, " if emulator else ""
    return f"{where}project {project}, database {database or '(default)'}"


class Diagnostics:
    """The current reasons, the log lines about them, the gauge, and the health body."""

    def __init__(
        self,
        checks: Callable[[], list[Blocker]] | list[Callable[[], list[Blocker]]],
        *,
        period_ok: float = 30.0,
        period_blocked: float = 2.0,
        repeat: float = 30.0,
    ) -> None:
        self.checks = checks if isinstance(checks, list) else [checks]
        self.period_ok = period_ok
        self.period_blocked = period_blocked
        self.repeat = repeat
        self.blocked: dict[str, Blocker] = {}
        self.since: dict[str, float] = {}
        self._logged: dict[str, float] = {}
        self.checked_at: float | None = None
        """When every check had reported at least once (None before)."""
        self._results: dict[int, list[Blocker]] = {}
        for reason in REASONS:
            BLOCKED.labels(reason).set(0)

    async def check_once(self) -> None:
        """Run every check at once; each result counts as soon as it is in, so a slow one (a
        Firestore read waits up to its timeout) does not hold back what the others found."""

        async def one(index: int, check: Callable[[], list[Blocker]]) -> None:
            try:
                self._results[index] = await asyncio.to_thread(check)
            except Exception as exc:  # a check that breaks must not hide the others
                log.warning("a readiness check failed: %s: %s", type(exc).__name__, exc)
                return
            found = [b for result in self._results.values() for b in result]
            self.update(found, time.time(), complete=len(self._results) == len(self.checks))

        await asyncio.gather(*(one(i, check) for i, check in enumerate(self.checks)))

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.period_blocked if self.blocked else self.period_ok)

    def update(self, found: list[Blocker], now: float, complete: bool = True) -> None:
        """Take the reasons ``found`` at ``now``; ``complete``: every check has reported."""
        current = {b.reason: b for b in found}
        for reason, blocker in current.items():
            old = self.blocked.get(reason)
            if old is None:
                self.since[reason] = now
            if old is None or old.message != blocker.message:
                log.error("cannot work: %s: %s. Fix: %s", reason, blocker.message, blocker.fix)
                self._logged[reason] = now
            elif now - self._logged[reason] >= self.repeat:
                log.error(
                    "still cannot work (%ds): %s: %s. Fix: %s",
                    now - self.since[reason], reason, blocker.message, blocker.fix,
                )  # fmt: skip
                self._logged[reason] = now
        for reason in set(self.blocked) - set(current):
            log.info("%s resolved after %ds", reason, now - self.since.pop(reason))
            self._logged.pop(reason, None)
        if complete and self.checked_at is None and not current:
            log.info("readiness checks passed: CRD served, access granted, peering, Firestore")
        self.blocked = current
        if complete or self.checked_at is not None:
            self.checked_at = now
        for reason in REASONS:
            BLOCKED.labels(reason).set(1 if reason in current else 0)

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: 200 when every check passed, else 503 with the reasons and their fixes."""
        blocked = [
            {**asdict(b), "since": _iso(self.since[b.reason])} for b in self.blocked.values()
        ]
        if not blocked and self.checked_at is None:
            return 503, {"status": "starting", "blocked": []}
        body = {
            "status": "blocked" if blocked else "working",
            "blocked": blocked,
            "checked_at": _iso(self.checked_at or time.time()),
        }
        return (503 if blocked else 200), body


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


async def serve_health(diagnostics: Diagnostics, port: int) -> Any:
    """``/healthz`` (liveness: 200 while this event loop answers) and ``/readyz`` (200 working,
    503 blocked) on ``port``, both with the diagnostics as a JSON body. Returns the runner to
    clean up."""
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        body = diagnostics.health()[1]
        return web.json_response(body)

    async def readyz(_: web.Request) -> web.Response:
        status, body = diagnostics.health()
        return web.json_response(body, status=status)

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def alongside(operator: Awaitable[None], diagnostics: Diagnostics, port: int) -> None:
    """Run kopf's ``operator`` with the checks and the health server beside it. Both start
    before kopf does (kopf leaves the tasks it finds at its start alone), so they answer while
    kopf's own startup is still waiting."""
    runner = await serve_health(diagnostics, port) if port else None
    checks = asyncio.create_task(diagnostics.run(), name="readiness checks")
    try:
        await operator
    finally:
        checks.cancel()
        if runner is not None:
            await runner.cleanup()
