"""The Helm chart, rendered and installed against a real API server (no cluster mocks).

Why: the chart is what a user installs, and its mistakes only show in a cluster. So:

* the chart's CRD is byte-for-byte the generated one (``crds/``), and the kopf peering CRDs and
  every rendered manifest are accepted by the API server (server-side dry-run, several values);
* ``helm lint`` is clean, ``kubeVersion`` refuses a cluster too old for the admission policies,
  and ``values.schema.json`` / the templates refuse bad values;
* the Deployments: readiness gated on routing, the admin port (``/routing``, ``/metrics``) on the
  container and the admin Service, never on the public Service, peered operator replicas with
  probes, and commands the entry points accept;
* the NetworkPolicies admit only the peers the values name, port by port;
* ``helm install`` / ``uninstall`` for real.

What the installed chart lets its ServiceAccount do, and the deletion guard:
test_chart_access.py; the other security policies: test_chart_security.py; the image recipe and
the lock file: test_packaging.py.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_harness import (
    CHART,
    KUBE_VERSION,
    ROOT,
    apply_chart_crds,
    confined_values,
    docs_of,
    render,
    run,
)

from engines.routing.crd import CRD_PATH, render_crd

CHART_CRD = CHART / "crds" / CRD_PATH.name
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


# -- helpers -----------------------------------------------------------------------------------


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


# -- an installed release -------------------------------------------------------------------


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
