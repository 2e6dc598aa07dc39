"""The chart's security policies, proven on the real API server with the rendered chart applied.

Why: in a cluster shared by many teams, RBAC alone lets the operator's token rewrite any
ConfigMap of a watched namespace (``kube-system/coredns`` with ``--all-namespaces``) and any
entry's spec, lets any namespace declare a backend for any tenant, and lets one ``kubectl delete
crd`` remove every entry at once. Each policy is checked by doing the thing, not by reading YAML:

* operator least privilege: every action the operator's ServiceAccount may and may not take, by
  impersonation (``kubectl --as=system:serviceaccount:NS:NAME``) — refused by RBAC (verbs it
  never uses) or by the ``operator-scope`` ValidatingAdmissionPolicy (ConfigMaps not named
  ``routing.*``; an entry's spec, labels, owner references, others' annotations and finalizers;
  any write to an entry outside the watched namespaces, where its cluster-wide patch right on
  entries would otherwise reach);
* tenancy: entries admitted only in namespaces bound to their tenant and env (label or
  annotation ``routing.engines.io/tenants`` / ``routing.engines.io/envs``), each refusal naming
  the key and the refused value; a later narrowing refuses spec changes but never blocks the
  bookkeeping (finalizers) or a deliberate delete;
* the CRD deletion guard: ``kubectl delete crd routingentries.routing.engines.io`` is refused on
  the shared stack (the allowed path is a server-side dry-run there); really deleting it, once
  annotated, runs on a stack of its own.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_harness import (
    ALLOW_DELETE,
    CRD_NAME,
    ENVS,
    TENANTS,
    Release,
    apply_chart_crds,
    install,
    render,
    uninstall,
    wait_enforced,
)
from operator_harness import entry

from devstack import LocalStack
from devstack.handles import KubeCluster
from devstack.testing import wait_for

FINALIZER = "routing.engines.io/finalizer"
FOREIGN_FINALIZER = "example.com/keep"
SUITE_LABEL = "routing-test/suite"


@dataclass
class Secured:
    """A release with every policy on, and namespaces bound in each way the tenancy allows."""

    release: Release
    namespaces: dict[str, str] = field(default_factory=dict)

    @property
    def ns(self) -> str:
        return self.release.namespace


# Namespace bindings of the tenancy cases: (labels, annotations).
BINDINGS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "unbound": ({}, {}),
    "acme-prod-labels": ({TENANTS: "acme", ENVS: "prod"}, {}),
    "lists": ({}, {TENANTS: "acme, globex", ENVS: "prod,staging"}),
    "label-and-annotation": ({TENANTS: "acme"}, {TENANTS: "globex", ENVS: "*"}),
    "any": ({}, {TENANTS: "*", ENVS: "*"}),
    "rebound": ({}, {TENANTS: "acme", ENVS: "prod"}),
}


def kubectl_ok(kube_cluster: Any, *args: str, input: str | None = None) -> str:
    done = kube_cluster.kubectl(*args, input=input)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return str(done.stdout)


def create_namespace(
    kube_cluster: Any, name: str, labels: dict[str, str], annotations: dict[str, str]
) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
    }
    kubectl_ok(kube_cluster, "create", "-f", "-", input=json.dumps(manifest))


@pytest.fixture(scope="module")
def secured(helm: Path, kube_cluster: Any) -> Iterator[Secured]:
    suite = secrets.token_hex(3)
    main = f"t-security-{suite}"
    create_namespace(kube_cluster, main, {SUITE_LABEL: suite}, {})
    names = {}
    for key, (labels, notes) in BINDINGS.items():
        names[key] = f"t-sec-{key}-{suite}"
        create_namespace(kube_cluster, names[key], {**labels, SUITE_LABEL: suite}, notes)
    only_suite = {"matchLabels": {SUITE_LABEL: suite}}
    values = {
        # the operator also watches "rebound": it releases its finalizer there
        "operator": {
            "firestore": {"project": "routing-ci"},
            "watchNamespaces": [main, names["rebound"]],
        },
        "admissionPolicy": {"namespaceSelector": only_suite},
        "tenancy": {"namespaceSelector": only_suite},
    }
    rel = install(helm, kube_cluster, main, values)
    try:
        wait_enforced(
            lambda: kube_cluster.kubectl(
                "create",
                "configmap",
                "probe",
                "-n",
                main,
                f"--as={rel.user}",
                "--dry-run=server",
            ),
            "the operator-scope policy to refuse",
        )
        unbound = json.dumps(entry("probe"))
        wait_enforced(
            lambda: kube_cluster.kubectl(
                "create", "-n", names["unbound"], "--dry-run=server", "-f", "-", input=unbound
            ),
            "the tenancy policy to refuse",
        )
        wait_enforced(
            lambda: kube_cluster.kubectl("delete", "crd", CRD_NAME, "--dry-run=server"),
            "the CRD deletion guard to refuse",
        )
        yield Secured(rel, names)
    finally:
        uninstall(kube_cluster, rel)
        # The local stack runs no namespace controller: remove the entries (and the finalizers
        # some were given) so no later test, or an operator watching every namespace, sees them.
        for ns in (main, *names.values()):
            listed = kube_cluster.kubectl("get", "rte", "-n", ns, "-o", "name")
            for obj in listed.stdout.split():
                kube_cluster.kubectl(
                    "patch", obj, "-n", ns, *merge({"metadata": {"finalizers": None}})
                )
            kube_cluster.kubectl("delete", "rte", "--all", "-n", ns, "--wait=false")
            kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")


# -- operator least privilege, by impersonation ---------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One call as the operator's ServiceAccount, and who must refuse it (None: nobody).

    ``argv`` may name ``{ns}`` (the watched namespace), ``{entry}`` (a fresh entry created by an
    admin with ``entry_meta``) and ``{peering}``; ``stdin`` is a manifest with the same fields.
    """

    argv: tuple[str, ...]
    refused_by: str | None = None  # "rbac" or "policy"
    says: str = ""  # a phrase of the refusal
    entry_meta: dict[str, Any] = field(default_factory=dict)
    stdin: dict[str, Any] | None = None
    then: dict[str, Any] | None = None  # fields the admin then reads back on the entry
    status_patch: dict[str, Any] | None = None  # instead of argv: PATCH the status subresource
    replace: bool = False  # with status_patch: PUT instead
    entry_patch: dict[str, Any] | None = None  # instead of argv: PATCH the entry, no read first
    unwatched: bool = False  # ``{ns}`` and the entry in a namespace the operator does not watch


def impersonated_status_write(
    kube_cluster: Any,
    user: str,
    ns: str,
    name: str,
    body: dict[str, Any],
    *,
    replace: bool,
    status: bool = True,
) -> tuple[int, str]:
    """The operator's own call (kopf merge-patches ``/status``, or the entry itself with
    ``status=False``; it never reads it first, as ``kubectl patch`` does), sent as ``user``
    through the API server's impersonation headers, like ``kubectl --as``."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with kube_cluster.api_client() as api:
        api.set_default_header("Impersonate-User", user)
        custom = client.CustomObjectsApi(api)
        args = ("routing.engines.io", "v1alpha1", ns, "routingentries", name)
        try:
            if replace:
                current = custom.get_namespaced_custom_object(*args)
                custom.replace_namespaced_custom_object_status(*args, {**current, **body})
            elif status:
                custom.patch_namespaced_custom_object_status(*args, body)
            else:
                custom.patch_namespaced_custom_object(*args, body)
        except ApiException as exc:
            return exc.status, str(json.loads(exc.body)["message"])
    return 200, ""


def merge(obj: dict[str, Any]) -> tuple[str, str, str]:
    return ("--type=merge", "-p", json.dumps(obj))


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "x"}}


PATCH_ENTRY = ("patch", "rte", "{entry}", "-n", "{ns}")
ONLY_ROUTING = "may write only the ConfigMaps named routing.*"
UNWATCHED = "writes only in the namespaces it watches"
ACTIONS: dict[str, Action] = {
    # ConfigMaps: its projections, and only those
    "create-routing-configmap": Action(("create", "configmap", "routing.prod.made", "-n", "{ns}")),
    "get-routing-configmap": Action(("get", "configmap", "routing.prod.acme", "-n", "{ns}")),
    "list-configmaps": Action(("get", "configmaps", "-n", "{ns}")),
    "patch-routing-configmap": Action(
        ("patch", "configmap", "routing.prod.acme", "-n", "{ns}", *merge({"data": {"k": "y"}}))
    ),
    "replace-routing-configmap": Action(
        ("replace", "-n", "{ns}", "-f", "-"), stdin=configmap("routing.prod.replaced")
    ),
    "delete-routing-configmap": Action(
        ("delete", "configmap", "routing.prod.doomed", "-n", "{ns}")
    ),
    "create-other-configmap": Action(
        ("create", "configmap", "coredns", "-n", "{ns}"), "policy", ONLY_ROUTING
    ),
    "create-prefix-lookalike-configmap": Action(
        ("create", "configmap", "routing-evil", "-n", "{ns}"), "policy", ONLY_ROUTING
    ),
    "patch-other-configmap": Action(
        ("patch", "configmap", "app-settings", "-n", "{ns}", *merge({"data": {"k": "y"}})),
        "policy",
        ONLY_ROUTING,
    ),
    "replace-other-configmap": Action(
        ("replace", "-n", "{ns}", "-f", "-"),
        "policy",
        ONLY_ROUTING,
        stdin=configmap("app-settings"),
    ),
    "delete-other-configmap": Action(
        ("delete", "configmap", "app-settings", "-n", "{ns}"), "policy", ONLY_ROUTING
    ),
    "create-configmap-in-unwatched-namespace": Action(
        ("create", "configmap", "routing.prod.x", "-n", "default"), "rbac", "cannot create"
    ),
    # RoutingEntries: status, its finalizer, its annotations; nothing else
    "list-entries": Action(("get", "rte", "-n", "{ns}")),
    "add-own-finalizer": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"finalizers": [FINALIZER]}})),
        then={"metadata.finalizers": [FINALIZER]},
    ),
    "remove-own-finalizer": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"finalizers": [FOREIGN_FINALIZER]}})),
        entry_meta={"finalizers": [FOREIGN_FINALIZER, FINALIZER]},
        then={"metadata.finalizers": [FOREIGN_FINALIZER]},
    ),
    "write-kopf-progress-annotation": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {"kopf.routing.engines.io/h": "{}"}}}))
    ),
    "remove-kopf-annotation": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {"kopf.routing.engines.io/t": None}}})),
        entry_meta={"annotations": {"kopf.routing.engines.io/t": "x"}},
    ),
    "write-requeue-annotation": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {"routing.engines.io/requeue": "1"}}}))
    ),
    # kubectl reads the status subresource before patching it; the operator only patches it
    "patch-status": Action(
        (),
        status_patch={"status": {"observedGeneration": 1}},
        then={"status.observedGeneration": 1},
    ),
    "patch-spec-through-status-is-ignored": Action(
        (),
        status_patch={"spec": {"firestore": {"collection": "evil"}}, "status": {"revision": "r"}},
        then={"spec.firestore.collection": "kpi_data", "status.revision": "r"},
    ),
    "replace-status": Action(
        (), "rbac", "cannot update", status_patch={"status": {"revision": "r"}}, replace=True
    ),
    "patch-spec": Action(
        (*PATCH_ENTRY, *merge({"spec": {"firestore": {"collection": "evil"}}})),
        "policy",
        "may not change the spec",
    ),
    "patch-labels": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"labels": {"team": "b"}}})),
        "policy",
        "labels or owner references",
    ),
    "patch-owner-references": Action(
        (
            *PATCH_ENTRY,
            *merge(
                {
                    "metadata": {
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "ConfigMap",
                                "name": "x",
                                "uid": "00000000-0000-0000-0000-000000000000",
                            }
                        ]
                    }
                }
            ),
        ),
        "policy",
        "labels or owner references",
    ),
    "write-allow-delete-annotation": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {ALLOW_DELETE: "true"}}})),
        "policy",
        f"not {ALLOW_DELETE}",
    ),
    "write-paused-annotation": Action(
        (
            *PATCH_ENTRY,
            *merge({"metadata": {"annotations": {"routing.engines.io/paused": "true"}}}),
        ),
        "policy",
        "not routing.engines.io/paused",
    ),
    "write-adopt-annotation": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {"routing.engines.io/adopt": "true"}}})),
        "policy",
        "not routing.engines.io/adopt",
    ),
    "remove-adopt-annotation-once-adopted": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {"routing.engines.io/adopt": None}}})),
        entry_meta={"annotations": {"routing.engines.io/adopt": "true", "team.example.com/o": "a"}},
        then={"metadata.annotations": {"team.example.com/o": "a"}},
    ),
    "change-adopt-annotation": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {"routing.engines.io/adopt": "no"}}})),
        "policy",
        "not routing.engines.io/adopt",
        entry_meta={"annotations": {"routing.engines.io/adopt": "true"}},
    ),
    "remove-others-annotation": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {"team.example.com/owner": None}}})),
        "policy",
        "not team.example.com/owner",
        entry_meta={"annotations": {"team.example.com/owner": "a"}},
    ),
    "change-others-annotation": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"annotations": {"team.example.com/owner": "b"}}})),
        "policy",
        "not team.example.com/owner",
        entry_meta={"annotations": {"team.example.com/owner": "a"}},
    ),
    "add-others-finalizer": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"finalizers": [FOREIGN_FINALIZER]}})),
        "policy",
        "only its own finalizer",
    ),
    "remove-others-finalizer": Action(
        (*PATCH_ENTRY, *merge({"metadata": {"finalizers": [FINALIZER]}})),
        "policy",
        "only its own finalizer",
        entry_meta={"finalizers": [FOREIGN_FINALIZER, FINALIZER]},
    ),
    "create-entry": Action(
        ("create", "-n", "{ns}", "-f", "-"), "rbac", "cannot create", stdin=entry("made")
    ),
    "delete-entry": Action(("delete", "rte", "{entry}", "-n", "{ns}"), "rbac", "cannot delete"),
    "replace-entry": Action(
        ("replace", "-n", "{ns}", "-f", "-"), "rbac", "cannot update", stdin=entry("{entry}")
    ),
    # Its patch right on entries is cluster-wide (it must outlive a watched namespace's Role
    # while the namespace is deleted); the policy keeps it to the watched namespaces.
    "patch-spec-in-unwatched-namespace": Action(
        (),
        "policy",
        UNWATCHED,
        entry_patch={"spec": {"firestore": {"collection": "evil"}}},
        unwatched=True,
    ),
    "add-own-finalizer-in-unwatched-namespace": Action(
        (),
        "policy",
        UNWATCHED,
        entry_patch={"metadata": {"finalizers": [FINALIZER]}},
        unwatched=True,
        then={"metadata.finalizers": None},
    ),
    "remove-own-finalizer-in-unwatched-namespace": Action(
        (),
        "policy",
        UNWATCHED,
        entry_patch={"metadata": {"finalizers": [FOREIGN_FINALIZER]}},
        entry_meta={"finalizers": [FOREIGN_FINALIZER, FINALIZER]},
        unwatched=True,
        then={"metadata.finalizers": [FOREIGN_FINALIZER, FINALIZER]},
    ),
    "patch-status-in-unwatched-namespace": Action(
        (),
        "policy",
        UNWATCHED,
        status_patch={"status": {"observedGeneration": 1}},
        unwatched=True,
        then={"status": None},
    ),
    "get-entry-in-unwatched-namespace": Action(
        ("get", "rte", "{entry}", "-n", "{ns}"), "rbac", "cannot get", unwatched=True
    ),
    "list-entries-in-unwatched-namespace": Action(
        ("get", "rte", "-n", "{ns}"), "rbac", "cannot list", unwatched=True
    ),
    # Events, peering, discovery, cluster identity
    "create-event": Action(
        ("create", "-n", "{ns}", "-f", "-"),
        stdin={
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "routing-"},
            "involvedObject": {"kind": "RoutingEntry", "name": "x", "namespace": "{ns}"},
            "reason": "Synced",
            "message": "m",
            "type": "Normal",
        },
    ),
    "delete-event": Action(("delete", "event", "any", "-n", "{ns}"), "rbac", "cannot delete"),
    "patch-peering": Action(
        ("patch", "kopfpeering", "{peering}", "-n", "{ns}", *merge({"status": {"p": None}}))
    ),
    "delete-peering": Action(
        ("delete", "kopfpeering", "{peering}", "-n", "{ns}"), "rbac", "cannot delete"
    ),
    "list-namespaces": Action(("get", "namespaces")),
    "list-crds": Action(("get", "crds")),
    "get-kube-system-uid": Action(
        ("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}")
    ),
    "get-other-namespace": Action(("get", "namespace", "default"), "rbac", "cannot get"),
    "get-crd": Action(("get", "crd", CRD_NAME), "rbac", "cannot get"),
    "get-secrets": Action(("get", "secrets", "-n", "{ns}"), "rbac", "cannot list"),
}


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, name in names.items():
            value = value.replace("{" + key + "}", name)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


@pytest.mark.parametrize("name", list(ACTIONS))
def test_operator_service_account_may_do_only_its_job(
    kube_cluster: Any, secured: Secured, name: str
) -> None:
    action = ACTIONS[name]
    rel = secured.release
    ns = secured.namespaces["any"] if action.unwatched else secured.ns
    suffix = secrets.token_hex(2)
    names = {"ns": ns, "entry": f"e-{name}"[:50] + f"-{suffix}", "peering": rel.peering}
    # What an admin set up: the projections the operator wrote, a ConfigMap of someone else,
    # and a fresh entry for this action.
    for cm in ("routing.prod.acme", "routing.prod.doomed", "routing.prod.replaced", "app-settings"):
        kube_cluster.kubectl("create", "configmap", cm, "-n", ns, "--from-literal=k=x")
    body = entry(names["entry"])
    body["metadata"] = {
        "name": names["entry"],
        "labels": {"team": "a"},
        **{k: v for k, v in body["metadata"].items() if k != "name"},
        **action.entry_meta,
    }
    kubectl_ok(kube_cluster, "create", "-n", ns, "-f", "-", input=json.dumps(body))
    argv = _fill(list(action.argv), names)
    stdin = json.dumps(_fill(action.stdin, names)) if action.stdin else None

    if action.status_patch is not None or action.entry_patch is not None:
        status, stderr = impersonated_status_write(
            kube_cluster,
            rel.user,
            ns,
            names["entry"],
            action.status_patch or action.entry_patch or {},
            replace=action.replace,
            status=action.status_patch is not None,
        )
        done = subprocess.CompletedProcess(argv, 0 if status == 200 else 1, "", stderr)
    else:
        done = kube_cluster.kubectl(*argv, f"--as={rel.user}", input=stdin)

    if action.refused_by is None:
        assert done.returncode == 0, f"{name}: the operator was refused: {done.stderr}"
    else:
        assert done.returncode != 0, f"{name}: the operator was allowed: {done.stdout}"
        assert action.says in done.stderr, done.stderr
        if action.refused_by == "policy":
            assert rel.named("ValidatingAdmissionPolicy", "-operator-scope") in done.stderr
        else:
            assert f'User "{rel.user}" cannot' in done.stderr, done.stderr
    if action.then:
        got = json.loads(
            kubectl_ok(kube_cluster, "get", "rte", names["entry"], "-n", ns, "-o", "json")
        )
        for path, want in action.then.items():
            value: Any = got
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            assert value == want, f"{name}: {path} is {value!r}, expected {want!r}"
    if name == "get-kube-system-uid":
        uid = kubectl_ok(
            kube_cluster, "get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}"
        )
        assert done.stdout == uid and uid


def test_the_operator_scope_names_what_the_operator_writes(helm: Path) -> None:
    """The policy's owned names are the operator's own constants: renaming one in the operator
    without the chart would make the policy refuse the operator's bookkeeping."""
    from routing_operator.handlers import KOPF_PREFIX, PREFIX
    from routing_operator.handover import REQUEUE_ANNOTATION

    done = render(helm, "rr", "engines", {"operator": {"firestore": {"project": "p"}}})
    assert done.returncode == 0, done.stderr
    (policy,) = [
        d
        for d in yaml.safe_load_all(done.stdout)
        if d
        and d["kind"] == "ValidatingAdmissionPolicy"
        and d["metadata"]["name"].endswith("-operator-scope")
    ]
    text = json.dumps(policy["spec"])
    for owned in (f"{KOPF_PREFIX}/", f"{PREFIX}/finalizer", REQUEUE_ANNOTATION):
        assert f"'{owned}'" in text, f"{owned} is not in the operator-scope policy"
    assert "system:serviceaccount:engines:rr-routing-registry-operator" in text


def test_the_operator_policy_does_not_bind_anyone_else(kube_cluster: Any, secured: Secured) -> None:
    """An admin (and any other identity) is not narrowed by the operator's policy."""
    ns = secured.ns
    done = kube_cluster.kubectl("create", "configmap", "app-config", "-n", ns, "--dry-run=server")
    assert done.returncode == 0, done.stderr


# -- tenancy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binding", "tenant", "env", "refusal"),
    [
        (
            "unbound",
            "acme",
            "prod",
            f"({TENANTS} is not set on the namespace, so it holds no entry)",
        ),
        ("acme-prod-labels", "acme", "prod", None),
        ("acme-prod-labels", "globex", "prod", 'tenant "globex" is not allowed'),
        ("acme-prod-labels", "acme", "staging", 'env "staging" is not allowed'),
        ("acme-prod-labels", "*", "prod", 'tenant "*" is not allowed'),
        ("lists", "globex", "staging", None),
        ("lists", "initech", "prod", f"({TENANTS} allows acme,globex)"),
        ("lists", "acme", "test", f"({ENVS} allows prod,staging)"),
        ("label-and-annotation", "acme", "dev", None),
        ("label-and-annotation", "globex", "prod", None),
        ("label-and-annotation", "initech", "prod", f"({TENANTS} allows acme,globex)"),
        ("any", "*", "prod", None),
        ("any", "initech", "anything", None),
    ],
)
def test_a_namespace_holds_entries_only_for_its_tenants_and_envs(
    kube_cluster: Any, secured: Secured, binding: str, tenant: str, env: str, refusal: str | None
) -> None:
    ns = secured.namespaces[binding]
    body = entry(f"e-{secrets.token_hex(3)}", tenant=tenant, env=env)
    done = kube_cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(body))
    if refusal is None:
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode != 0, f"{tenant}/{env} admitted in namespace {binding}"
    assert refusal in done.stderr, done.stderr
    # The message says how to fix it: the annotate command with the value added.
    assert f"kubectl annotate namespace {ns}" in done.stderr, done.stderr
    assert secured.release.named("ValidatingAdmissionPolicy", "-tenancy") in done.stderr


def test_narrowing_a_binding_refuses_spec_changes_but_not_bookkeeping_or_deletion(
    kube_cluster: Any, secured: Secured
) -> None:
    ns = secured.namespaces["rebound"]
    body = entry("acme-kpi")
    body["metadata"]["finalizers"] = [FINALIZER]
    kubectl_ok(kube_cluster, "create", "-n", ns, "-f", "-", input=json.dumps(body))
    kubectl_ok(kube_cluster, "annotate", "namespace", ns, "--overwrite", f"{TENANTS}=globex")
    probe = json.dumps(entry("probe"))
    wait_enforced(
        lambda: kube_cluster.kubectl(
            "create", "-n", ns, "--dry-run=server", "-f", "-", input=probe
        ),
        "the narrowed binding to be seen",
    )
    done = kube_cluster.kubectl(
        "patch", "rte", "acme-kpi", "-n", ns, *merge({"spec": {"firestore": {"collection": "b"}}})
    )
    assert done.returncode != 0 and f"({TENANTS} allows globex)" in done.stderr, done.stderr
    # The operator's bookkeeping and a deliberate delete still go through.
    op = f"--as={secured.release.user}"
    kubectl_ok(kube_cluster, "annotate", "rte", "acme-kpi", "-n", ns, f"{ALLOW_DELETE}=true")
    kubectl_ok(kube_cluster, "delete", "rte", "acme-kpi", "-n", ns, "--wait=false")
    kubectl_ok(
        kube_cluster,
        "patch",
        "rte",
        "acme-kpi",
        "-n",
        ns,
        op,
        *merge({"metadata": {"finalizers": []}}),
    )

    def gone() -> bool:
        return kube_cluster.kubectl("get", "rte", "acme-kpi", "-n", ns).returncode != 0

    wait_for(gone, timeout=30, what="the entry gone once its finalizer is released")


# -- the CRD deletion guard ---------------------------------------------------------------------


def test_deleting_the_crd_is_refused_unless_the_crd_is_annotated(
    kube_cluster: Any, secured: Secured
) -> None:
    done = kube_cluster.kubectl("delete", "crd", CRD_NAME, "--dry-run=server")
    assert done.returncode != 0
    assert f"kubectl annotate crd {CRD_NAME} {ALLOW_DELETE}=true" in done.stderr, done.stderr
    assert secured.release.named("ValidatingAdmissionPolicy", "-crd-guard") in done.stderr
    # For real, now that the dry-run showed the guard in force: refused, and the CRD stays.
    done = kube_cluster.kubectl("delete", "crd", CRD_NAME, "--wait=false")
    assert done.returncode != 0 and "protected against deletion" in done.stderr, done.stderr
    kubectl_ok(kube_cluster, "get", "crd", CRD_NAME)
    try:
        kubectl_ok(
            kube_cluster, "annotate", "crd", CRD_NAME, "--overwrite", f"{ALLOW_DELETE}=false"
        )
        done = kube_cluster.kubectl("delete", "crd", CRD_NAME, "--dry-run=server")
        assert done.returncode != 0, '"false" let the CRD deletion through'
        kubectl_ok(kube_cluster, "annotate", "crd", CRD_NAME, "--overwrite", f"{ALLOW_DELETE}=true")
        # Annotated: admitted (dry-run: the shared stack keeps its CRD; the real deletion is
        # the next test, on a stack of its own).
        done = kube_cluster.kubectl("delete", "crd", CRD_NAME, "--dry-run=server")
        assert done.returncode == 0, done.stderr
    finally:
        kubectl_ok(kube_cluster, "annotate", "crd", CRD_NAME, f"{ALLOW_DELETE}-")
    kubectl_ok(kube_cluster, "get", "crd", CRD_NAME)


def test_an_annotated_crd_really_deletes_on_an_isolated_stack(helm: Path, tmp_path: Path) -> None:
    """Its own etcd and kube-apiserver: the real deletion takes every entry with it."""
    stack = LocalStack(tmp_path / "stack")
    try:
        stack.up(["kube-apiserver"])
        cluster = KubeCluster(kubeconfig=stack.kubeconfig, mode="local")
        apply_chart_crds(cluster)
        kubectl_ok(cluster, "create", "namespace", "crd-guard")
        rel = install(helm, cluster, "crd-guard", {"operator": {"firestore": {"project": "p"}}})
        wait_enforced(
            lambda: cluster.kubectl("delete", "crd", CRD_NAME, "--dry-run=server"),
            "the CRD deletion guard to refuse",
        )
        kubectl_ok(
            cluster, "create", "-n", "crd-guard", "-f", "-", input=json.dumps(entry("acme-kpi"))
        )
        kubectl_ok(cluster, "annotate", "crd", CRD_NAME, f"{ALLOW_DELETE}=true")
        kubectl_ok(cluster, "delete", "crd", CRD_NAME, "--timeout=60s")
        assert cluster.kubectl("get", "crd", CRD_NAME).returncode != 0
        assert rel.named("ValidatingAdmissionPolicy", "-crd-guard")
    finally:
        stack.down()


# -- each policy can be turned off -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "gone"),
    [
        ({"operatorPolicy": {"enabled": False}}, ("ValidatingAdmissionPolicy", "-operator-scope")),
        ({"tenancy": {"enabled": False}}, ("ValidatingAdmissionPolicy", "-tenancy")),
        ({"admissionPolicy": {"guardCrd": False}}, ("ValidatingAdmissionPolicy", "-crd-guard")),
        ({"admissionPolicy": {"enabled": False}}, ("ValidatingAdmissionPolicy", "-deletion-guard")),
        ({"networkPolicy": {"enabled": False}}, ("NetworkPolicy", "-operator")),
    ],
)
def test_each_policy_is_on_by_default_and_a_value_turns_it_off(
    helm: Path, values: dict[str, Any], gone: tuple[str, str]
) -> None:
    base = {"operator": {"firestore": {"project": "p"}}}

    def names(vals: dict[str, Any]) -> set[tuple[str, str]]:
        done = render(helm, "rr", "engines", vals)
        assert done.returncode == 0, done.stderr
        return {
            (d["kind"], d["metadata"]["name"].removeprefix("rr-routing-registry"))
            for d in yaml.safe_load_all(done.stdout)
            if d
        }

    assert gone in names(base)
    assert gone not in names({**base, **values})
