"""The RoutingEntry model: every validation rule, and the exact message a user sees for it.

These messages are the ones `routingctl validate`, the operator's InvalidConfig condition and the
CRD's CEL rules print, so they are pinned here word for word.
"""

from __future__ import annotations

import re
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
            "spec.tenant: must be a DNS label (lowercase letters, digits, '-', at most 63) or *",
        ),
        ("tenant", "a" * 64, "spec.tenant: String should have at most 63 characters"),
        (
            "env",
            "*",
            "spec.env: must be a DNS label "
            "(lowercase letters, digits, '-', at most 63); no wildcard",
        ),
        (
            "project",
            "my_project",
            "spec.project: must be a DNS label (lowercase letters, digits, '-', at most 63) or *",
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
    assert message.startswith("spec.resourceKind: must be one of 'feature_flags'")
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
    assert error_of(data) == ("spec.redis.url: must be a redis://, rediss:// or unix:// URL")


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


def test_revision_covers_backend_config_and_secret_name_and_key() -> None:
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
    # another key of the same Secret is another credential: the backend must be rebuilt
    assert parse_spec(with_secret).revision() != parse_spec(other_key).revision()
    assert parse_spec(with_secret).revision() != parse_spec(other_name).revision()
    assert parse_spec(other_key).revision() != parse_spec(other_name).revision()


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


SECRET = "hunter2"
USERINFO = (
    "spec.redis.url: must not carry userinfo (user:password@, user@ or :password@): it would be "
    "copied into Firestore, ConfigMaps and /routing; remove it and put the credential in a Secret "
    "referenced by spec.secretRef"
)
QUERY = (
    "spec.redis.url: must not carry a password or username query parameter (any case): it would "
    "be copied into Firestore, ConfigMaps and /routing; remove it and put the credential in a "
    "Secret referenced by spec.secretRef"
)
ENCODED = (
    "spec.redis.url: must not percent-encode a query parameter name (it could spell password or "
    "username); write parameter names in plain letters"
)


def redis_spec(url: str, **overrides: Any) -> dict[str, Any]:
    return spec(
        resourceKind="chat_bus", backend="redis", firestore=None, redis={"url": url}, **overrides
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"rediss://app:{SECRET}@redis:6380/0", USERINFO),
        (f"redis://{SECRET}@redis:6379/0", USERINFO),
        (f"redis://:{SECRET}@redis:6379/0", USERINFO),
        (f"unix://:{SECRET}@/run/redis.sock?db=0", USERINFO),
        (f"redis://redis:6379/0?password={SECRET}", QUERY),
        (f"redis://redis:6379/0?PassWord={SECRET}", QUERY),
        (f"redis://redis:6379/0?db=1&USERNAME={SECRET}", QUERY),
        (f"redis://redis:6379/0?pass%77ord={SECRET}", ENCODED),
    ],
)
def test_credential_in_redis_url_is_refused_without_echoing_it(url: str, message: str) -> None:
    text = error_of(redis_spec(url))
    assert text == message
    assert SECRET not in text


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis:6379/0",
        "rediss://redis.example:6380/2?ssl_cert_reqs=none&health_check_interval=5",
        "unix:///run/redis.sock?db=3",
        "redis://[::1]:6379/0",
    ],
)
def test_credential_free_redis_url_is_accepted(url: str) -> None:
    assert parse_spec(redis_spec(url)).config()["url"] == url


def test_every_url_bearing_setting_refuses_credentials() -> None:
    """The catalog names each URL setting; each one refuses an inline credential."""
    from engines.routing.catalog import BACKEND_SETTINGS, URL_SETTINGS

    for backend, model in BACKEND_SETTINGS.items():
        url_fields = {
            name
            for name, field in model.model_fields.items()
            if name.endswith("url") or "url" in (field.description or "").lower()
        }
        assert url_fields == set(URL_SETTINGS.get(backend, ())), backend
    for backend, fields in URL_SETTINGS.items():
        for name in fields:
            with pytest.raises(ValueError) as info:
                BACKEND_SETTINGS[backend].model_validate({name: f"redis://:{SECRET}@h:1/0"})
            assert SECRET not in str(info.value.errors(include_input=False))  # type: ignore[attr-defined]


def test_a_stored_document_with_a_credential_is_refused_without_echoing_it() -> None:
    record = RoutingRecord.from_spec(parse_spec(redis_spec("redis://redis:6379/0")))
    doc = record.to_document()
    doc["config"]["url"] = f"redis://redis:6379/0?password={SECRET}"
    with pytest.raises(InvalidRouting) as info:
        RoutingRecord.from_document(doc)
    assert "document.config.url: must not carry a password" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None  # pydantic's own rendering repeats the input


def test_no_refusal_repeats_the_input() -> None:
    """Whatever the field, a message names the field and the rule, never the refused value."""
    planted = "zz-planted-9"
    for overrides in (
        {"tenant": planted.upper()},
        {"env": planted + "_"},
        {"project": planted + "!"},
        {"resourceKind": planted},
        {"backend": planted},
        {"firestore": {"collection": "/" + planted}},
    ):
        text = error_of(spec(**overrides))
        assert planted.upper() not in text.upper(), text


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"name": "..", "key": "password"}, "name"),
        ({"name": "a/b", "key": "password"}, "name"),
        ({"name": "Redis", "key": "password"}, "name"),
        ({"name": "auth", "key": "/etc/hostname"}, "key"),
        ({"name": "auth", "key": ".."}, "key"),
        ({"name": "auth", "key": "."}, "key"),
        ({"name": "auth", "key": "..data"}, "key"),
        ({"name": "auth", "key": "a/../b"}, "key"),
    ],
)
def test_path_unsafe_secret_ref_is_refused(ref: dict[str, str], field: str) -> None:
    text = error_of(redis_spec("redis://r:6379/0", secretRef=ref))
    fix = "must be a Secret name: a DNS subdomain" if field == "name" else "no '/'"
    assert text.startswith(f"spec.secretRef.{field}: {field} must be"), text
    assert fix in text


@pytest.mark.parametrize(
    "ref",
    [
        {"name": "redis-auth", "key": "password"},
        {"name": "team.redis-auth", "key": "REDIS_PASSWORD"},
        {"name": "a", "key": ".hidden-ok_1"},
    ],
)
def test_path_safe_secret_ref_is_accepted(ref: dict[str, str]) -> None:
    assert parse_spec(redis_spec("redis://r:6379/0", secretRef=ref)).secret_ref is not None


def test_every_problem_is_reported_even_when_a_field_fails() -> None:
    """A bad tenant does not hide the backend rule (the API server's CEL reports both)."""
    text = error_of(
        spec(
            tenant="Bad!",
            resourceKind="chat_bus",
            firestore={"collection": "x", "colection": "y"},
        )
    )
    clauses = re.split(r"; (?=spec[.:])", text)
    assert [c.partition(":")[0] for c in clauses] == [
        "spec.tenant",
        "spec.firestore.colection",
        "spec.backend",
    ]
    assert "backend firestore is not allowed for resourceKind chat_bus" in clauses[2]
