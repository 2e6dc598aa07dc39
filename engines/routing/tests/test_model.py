"""The RoutingEntry model: every validation rule, and the exact message a user sees for it.

These messages are the ones `routingctl validate`, the operator's InvalidConfig condition and the
CRD's CEL rules print, so they are pinned here word for word.
"""

from __future__ import annotations

from typing import Any

import pytest

from engines.routing import InvalidRouting, RoutingRecord, parse_spec
from engines.routing.catalog import CATALOG, TEST_ONLY_BACKENDS, Backend, ResourceKind


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant": "acme",
        "env": "prod",
        "resourceKind": "seo",
        "backend": "firestore",
        "firestore": {"collection": "seo_pages"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(InvalidRouting) as info:
        parse_spec(data)
    return str(info.value)


def test_valid_entry_defaults_project_to_wildcard() -> None:
    s = parse_spec(spec())
    assert s.project == "*"
    assert s.key.document_id == "prod:acme:*:seo"
    assert s.config() == {"collection": "seo_pages", "database": "(default)"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "tenant",
            "Acme",
            "spec.tenant: invalid value 'Acme': must be a DNS label "
            "(lowercase letters, digits, '-', at most 63) or *",
        ),
        ("tenant", "a" * 64, "spec.tenant: String should have at most 63 characters"),
        (
            "env",
            "*",
            "spec.env: invalid value '*': must be a DNS label "
            "(lowercase letters, digits, '-', at most 63); no wildcard",
        ),
        (
            "project",
            "my_project",
            "spec.project: invalid value 'my_project': must be a DNS "
            "label (lowercase letters, digits, '-', at most 63) or *",
        ),
    ],
)
def test_identity_fields_are_dns_labels(field: str, value: str, message: str) -> None:
    assert error_of(spec(**{field: value})) == message


def test_wildcard_tenant_and_project_are_allowed() -> None:
    s = parse_spec(spec(tenant="*", project="*"))
    assert s.key.configmap_name == "routing.prod"
    assert s.key.configmap_key == "_._.seo.json"


def test_unknown_kind_lists_the_catalog() -> None:
    message = error_of(spec(resourceKind="videos"))
    assert message.startswith("spec.resourceKind: invalid value 'videos'; expected 'feature_flags'")
    assert "'raw_storage'" in message


@pytest.mark.parametrize("missing", ["tenant", "env", "resourceKind", "backend"])
def test_required_identity_and_backend(missing: str) -> None:
    data = spec()
    del data[missing]
    assert f"spec.{missing}: required field is missing" in error_of(data)


def test_backend_not_allowed_for_kind() -> None:
    assert error_of(spec(backend="redis", firestore=None, redis={"url": "redis://r:6379"})) == (
        "spec.backend: backend redis is not allowed for resourceKind seo; "
        "allowed: firestore, memory"
    )


def test_unknown_settings_key_is_rejected() -> None:
    assert error_of(spec(firestore={"collection": "x", "colour": "red"})) == (
        "spec.firestore.colour: unknown field; remove it "
        "(see the RoutingEntry reference for allowed fields)"
    )


def test_unknown_top_level_key_is_rejected() -> None:
    assert "spec.bakend: unknown field" in error_of(spec(bakend="firestore"))


def test_two_settings_objects() -> None:
    assert error_of(spec(redis={"url": "redis://r:6379"})) == (
        "spec.backend: exactly one backend settings object must be set "
        "(one of firestore, redis, gcs, memory, local, noop); found: firestore, redis"
    )


def test_no_settings_object() -> None:
    assert error_of(spec(firestore=None)).endswith("found: none")


def test_settings_must_match_backend() -> None:
    data = spec(resourceKind="rate_limit", backend="redis")  # firestore settings still set
    assert error_of(data) == (
        "spec.redis: backend is redis: set spec.redis and no other settings object"
    )


@pytest.mark.parametrize("backend", sorted(b.value for b in TEST_ONLY_BACKENDS))
def test_test_only_backends_need_env_test(backend: str) -> None:
    kind = next(k for k, s in CATALOG.items() if Backend(backend) in s.test_only)
    settings = {"path": "/data"} if backend == "local" else {}
    data = spec(resourceKind=kind.value, backend=backend, firestore=None, **{backend: settings})
    assert error_of(data) == (
        f"spec.backend: backend {backend} is test-only and allowed only when env is test "
        "(env is prod); use a durable backend"
    )
    assert parse_spec({**data, "env": "test"}).backend.value == backend


def test_redis_url_is_required_no_localhost_default() -> None:
    data = spec(resourceKind="chat_bus", backend="redis", firestore=None, redis={})
    assert error_of(data) == "spec.redis.url: required field is missing"


def test_redis_url_scheme() -> None:
    data = spec(
        resourceKind="chat_bus", backend="redis", firestore=None, redis={"url": "localhost:6379"}
    )
    assert error_of(data) == (
        "spec.redis.url: invalid value 'localhost:6379': must be a redis://, rediss:// or "
        "unix:// URL"
    )


def test_gcs_bucket_is_required() -> None:
    data = spec(resourceKind="raw_storage", backend="gcs", firestore=None, gcs={"prefix": "x/"})
    assert error_of(data) == "spec.gcs.bucket: required field is missing"


def test_secret_ref_needs_name_and_key() -> None:
    data = spec(
        resourceKind="chat_bus",
        backend="redis",
        firestore=None,
        redis={"url": "redis://r:6379"},
        secretRef={"name": "redis-auth"},
    )
    assert error_of(data) == "spec.secretRef.key: required field is missing"


def test_revision_covers_backend_config_and_secret_name_only() -> None:
    base = parse_spec(spec())
    assert len(base.revision()) == 64
    assert parse_spec(spec()).revision() == base.revision()
    assert parse_spec(spec(firestore={"collection": "other"})).revision() != base.revision()
    # identity is not part of the revision: the same backend config hashes the same everywhere
    assert parse_spec(spec(tenant="globex")).revision() == base.revision()
    with_secret = spec(
        resourceKind="chat_bus",
        backend="redis",
        firestore=None,
        redis={"url": "redis://r:6379"},
        secretRef={"name": "a", "key": "k"},
    )
    other_key = {**with_secret, "secretRef": {"name": "a", "key": "other"}}
    other_name = {**with_secret, "secretRef": {"name": "b", "key": "k"}}
    assert parse_spec(with_secret).revision() == parse_spec(other_key).revision()
    assert parse_spec(with_secret).revision() != parse_spec(other_name).revision()


def test_record_round_trips_through_document() -> None:
    record = RoutingRecord.from_spec(parse_spec(spec()), generation=3)
    doc = record.to_document()
    assert doc["schema_version"] == 1
    assert doc["config"] == {"collection": "seo_pages", "database": "(default)"}
    assert RoutingRecord.from_document(doc) == record


def test_record_from_document_applies_the_same_rules() -> None:
    doc = RoutingRecord.from_spec(parse_spec(spec())).to_document()
    doc["backend"] = "redis"
    doc["config"] = {"url": "redis://r:6379"}
    with pytest.raises(InvalidRouting) as info:
        RoutingRecord.from_document(doc)
    assert str(info.value) == (
        "document.backend: backend redis is not allowed for resource_kind seo; "
        "allowed: firestore, memory"
    )
    doc.update(backend="firestore", config={"collection": "x", "colour": "red"})
    with pytest.raises(InvalidRouting, match=r"^document\.config\.colour: unknown field"):
        RoutingRecord.from_document(doc)


def test_catalog_covers_every_kind_with_a_durable_backend() -> None:
    assert set(CATALOG) == set(ResourceKind)
    assert all(spec.durable for spec in CATALOG.values())
    assert all(not (set(s.durable) & TEST_ONLY_BACKENDS) for s in CATALOG.values())


def test_password_in_redis_url_is_refused() -> None:
    data = spec(
        resourceKind="chat_bus",
        backend="redis",
        firestore=None,
        redis={"url": "rediss://app:s3cret@redis:6380/0"},
    )
    assert error_of(data) == (
        "spec.redis.url: url must not carry a password (it would be copied into Firestore and "
        "ConfigMaps): put it in a Secret and reference it with spec.secretRef"
    )
