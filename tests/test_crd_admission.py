"""Admission of RoutingEntry objects by a real kube-apiserver with the generated CRD applied.

Covers DESIGN §2: a valid entry is accepted (defaults applied); the API server refuses, with the
CRD's own CEL messages, a backend not allowed for its kind, two settings objects, a test-only
backend outside env `test`, and a change of tenant/env/project/resourceKind; an unknown settings
key is refused; a credential in a URL (userinfo, a password/username query parameter in any
case) and a path-unsafe secretRef (`..`, `/etc/hostname`) are refused without echoing the
credential, their clean forms accepted; backend + settings stay mutable (the switch);
`kubectl get rte` shows the printer columns and `--field-selector spec.tenant=…` filters.
Messages asserted here are substrings of the CRD's x-kubernetes-validations, checked against
crds/ so a reworded rule fails loudly.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack.handles import KubeCluster
from devstack.stack import default_crds_dir

CRD = (default_crds_dir() or Path("crds")) / "routingentries.routing.engines.io.yaml"
if not CRD.is_file():
    pytest.skip(f"{CRD} not generated yet", allow_module_level=True)

NOT_ALLOWED = "is not allowed for"
EXACTLY_ONE = "exactly one backend settings object must be set"
TEST_ONLY = "allowed only when"
IMMUTABLE = "{field} is immutable"
IDENTITY = ("tenant", "env", "project", "resourceKind")


def entry(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant": "acme",
        "env": "prod",
        "resourceKind": "seo",
        "backend": "firestore",
        "firestore": {"collection": "seo"},
    }
    base.update(spec)
    return {
        "apiVersion": "routing.engines.io/v1alpha1",
        "kind": "RoutingEntry",
        "metadata": {"name": name},
        "spec": {k: v for k, v in base.items() if v is not None},
    }


def create(
    cluster: KubeCluster, namespace: str, body: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(body)
    )


def refused(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0, f"expected a refusal, got: {done.stdout}"
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def test_asserted_messages_are_the_crds_own() -> None:
    text = CRD.read_text()
    for message in (
        NOT_ALLOWED,
        EXACTLY_ONE,
        TEST_ONLY,
        *(IMMUTABLE.format(field=f) for f in IDENTITY),
    ):
        assert message in text, f"{message!r} no longer appears in {CRD.name}"


def test_valid_entry_is_accepted_with_defaults(kube_cluster: KubeCluster, namespace: str) -> None:
    done = create(kube_cluster, namespace, entry("seo-prod"))
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)["spec"]
    assert spec["project"] == "*"
    assert spec["firestore"] == {"collection": "seo", "database": "(default)"}


def test_backend_not_allowed_for_kind_is_refused(kube_cluster: KubeCluster, namespace: str) -> None:
    body = entry("chat", resourceKind="chat_bus", backend="firestore")
    refused(create(kube_cluster, namespace, body), NOT_ALLOWED, "chat_bus")


def test_unknown_settings_key_is_refused(kube_cluster: KubeCluster, namespace: str) -> None:
    body = entry("typo", firestore={"collection": "seo", "colection": "seo"})
    refused(create(kube_cluster, namespace, body), "colection")


SECRET = "hunter2"
"""The credential planted in refused URLs: no refusal may repeat it."""
CREDENTIAL_URLS = [
    pytest.param(f"redis://app:{SECRET}@redis:6379/0", "must not carry userinfo", id="user-pass"),
    pytest.param(f"redis://{SECRET}@redis:6379/0", "must not carry userinfo", id="user-only"),
    pytest.param(f"redis://:{SECRET}@redis:6379/0", "must not carry userinfo", id="pass-only"),
    pytest.param(f"unix://:{SECRET}@/run/redis.sock", "must not carry userinfo", id="unix"),
    pytest.param(f"redis://redis:6379/0?password={SECRET}", "password or username", id="password"),
    pytest.param(f"redis://redis:6379/0?PassWord={SECRET}", "password or username", id="PassWord"),
    pytest.param(f"redis://redis/0?db=1&username={SECRET}", "password or username", id="username"),
    pytest.param(f"redis://redis/0?pass%77ord={SECRET}", "percent-encode", id="encoded-name"),
]


def redis_entry(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return entry(
        name,
        resourceKind="chat_bus",
        backend="redis",
        firestore=None,
        redis={"url": url},
        **spec,
    )


@pytest.mark.parametrize(("url", "rule"), CREDENTIAL_URLS)
def test_credential_in_redis_url_is_refused_without_echoing_it(
    kube_cluster: KubeCluster, namespace: str, url: str, rule: str
) -> None:
    done = create(kube_cluster, namespace, redis_entry("leak", url))
    fix = "write parameter names in plain letters" if "percent" in rule else "spec.secretRef"
    refused(done, "spec.redis.url", rule, fix)
    assert SECRET not in done.stderr, done.stderr
    assert rule in CRD.read_text()


@pytest.mark.parametrize(
    "url",
    ["redis://redis:6379/0", "rediss://redis.example:6380/2?ssl_cert_reqs=none", "unix:///r.sock"],
)
def test_credential_free_redis_url_is_accepted(
    kube_cluster: KubeCluster, namespace: str, url: str
) -> None:
    body = redis_entry("clean", url, secretRef={"name": "redis-auth", "key": "password"})
    done = create(kube_cluster, namespace, body)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        pytest.param({"name": "..", "key": "password"}, "spec.secretRef.name", id="name-dotdot"),
        pytest.param({"name": "a/b", "key": "password"}, "spec.secretRef.name", id="name-slash"),
        pytest.param({"name": "auth", "key": "/etc/hostname"}, "spec.secretRef.key", id="abs"),
        pytest.param({"name": "auth", "key": ".."}, "spec.secretRef.key", id="key-dotdot"),
        pytest.param({"name": "auth", "key": "."}, "spec.secretRef.key", id="key-dot"),
        pytest.param({"name": "auth", "key": "..data"}, "spec.secretRef.key", id="key-kubelet"),
        pytest.param({"name": "auth", "key": "a/../b"}, "spec.secretRef.key", id="key-traversal"),
    ],
)
def test_path_unsafe_secret_ref_is_refused(
    kube_cluster: KubeCluster, namespace: str, ref: dict[str, str], field: str
) -> None:
    done = create(kube_cluster, namespace, redis_entry("escape", "redis://r:6379/0", secretRef=ref))
    fix = "must be a Secret name" if field.endswith("name") else "must be a key of the Secret"
    refused(done, field, fix)


@pytest.mark.parametrize(
    "ref",
    [
        {"name": "redis-auth", "key": "password"},
        {"name": "team.redis-auth", "key": "REDIS_PASSWORD"},
        {"name": "a", "key": ".hidden-ok_1"},
    ],
)
def test_path_safe_secret_ref_is_accepted(
    kube_cluster: KubeCluster, namespace: str, ref: dict[str, str]
) -> None:
    done = create(kube_cluster, namespace, redis_entry("safe", "redis://r:6379/0", secretRef=ref))
    assert done.returncode == 0, done.stderr


def test_two_settings_objects_are_refused(kube_cluster: KubeCluster, namespace: str) -> None:
    body = entry("two", resourceKind="rate_limit", redis={"url": "redis://r:6379/0"})
    refused(create(kube_cluster, namespace, body), EXACTLY_ONE)


def test_test_only_backend_is_refused_outside_env_test(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    prod = entry("mem-prod", backend="memory", firestore=None, memory={})
    refused(create(kube_cluster, namespace, prod), TEST_ONLY)
    test = entry("mem-test", env="test", backend="memory", firestore=None, memory={})
    done = create(kube_cluster, namespace, test)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [("tenant", "globex"), ("env", "staging"), ("project", "web"), ("resourceKind", "kpi")],
)
def test_identity_cannot_change(
    kube_cluster: KubeCluster, namespace: str, field: str, value: str
) -> None:
    assert create(kube_cluster, namespace, entry("id")).returncode == 0
    patch = json.dumps({"spec": {field: value}})
    done = kube_cluster.kubectl("patch", "-n", namespace, "rte", "id", "--type=merge", "-p", patch)
    refused(done, IMMUTABLE.format(field=field))


def test_backend_and_settings_can_change(kube_cluster: KubeCluster, namespace: str) -> None:
    body = entry(
        "rl", resourceKind="rate_limit", backend="firestore", firestore={"collection": "rl"}
    )
    assert create(kube_cluster, namespace, body).returncode == 0
    patch = json.dumps({"spec": {"backend": "redis", "firestore": None,
                                 "redis": {"url": "redis://r:6379/0"}}})  # fmt: skip
    done = kube_cluster.kubectl("patch", "-n", namespace, "rte", "rl", "--type=merge", "-p", patch)
    assert done.returncode == 0, done.stderr
    got = kube_cluster.kubectl(
        "get", "-n", namespace, "rte", "rl", "-o", "jsonpath={.spec.backend}"
    )
    assert got.stdout == "redis"


def test_get_rte_shows_printer_columns(kube_cluster: KubeCluster, namespace: str) -> None:
    assert create(kube_cluster, namespace, entry("cols")).returncode == 0
    done = kube_cluster.kubectl("get", "rte", "-n", namespace)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[:2]
    assert header.split() == [
        "NAME", "TENANT", "ENV", "PROJECT", "KIND", "BACKEND", "READY", "REASON", "AGE",
    ]  # fmt: skip
    assert row.split()[:6] == ["cols", "acme", "prod", "*", "seo", "firestore"]


def test_field_selector_on_tenant(kube_cluster: KubeCluster, namespace: str) -> None:
    for tenant in ("acme", "globex"):
        assert (
            create(kube_cluster, namespace, entry(f"seo-{tenant}", tenant=tenant)).returncode == 0
        )
    done = kube_cluster.kubectl(
        "get", "rte", "-n", namespace, "--field-selector", "spec.tenant=acme", "-o", "name"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["routingentry.routing.engines.io/seo-acme"]
