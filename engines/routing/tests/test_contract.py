"""The projection contract (``engines.routing.contract``): identities written as document ids and
ConfigMap names/keys and read back, the refusal of malformed ones, the §3 tie-break order, the
canonical JSON and its digest, and the expected projection of an entry.

Pure functions: no store is involved.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from engines.routing import InvalidRouting
from engines.routing.contract import (
    MANAGED_BY,
    MANAGED_BY_SELECTOR,
    RoutingKey,
    canonical_json,
    claim_order,
    configmap_in_env,
    configmap_value,
    digest,
    expected_record,
    owner_of,
    parse_configmap_key,
    parse_configmap_name,
    record_from_document,
    strip_server_fields,
)

KEYS = [
    RoutingKey("prod", "acme", "shop", "kpi"),
    RoutingKey("prod", "acme", "*", "seo"),
    RoutingKey("prod", "*", "*", "rate_limit"),
    RoutingKey("test", "*", "shop", "media_v2_storage"),
    RoutingKey("dev-2", "a-b", "c-d", "feature_flags"),
]


def spec(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "env": "prod",
        "resourceKind": "seo",
        "backend": "firestore",
        "firestore": {"collection": "seo_pages"},
        **overrides,
    }


META = {
    "namespace": "engines",
    "name": "acme-seo",
    "uid": "0b8c2f8e-uid",
    "generation": 3,
    "creationTimestamp": "2026-01-02T03:04:05Z",
}


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.document_id)
def test_a_document_id_reads_back_as_its_key(key: RoutingKey) -> None:
    assert RoutingKey.from_document_id(key.document_id) == key


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.document_id)
def test_a_configmap_name_and_key_read_back_as_the_key(key: RoutingKey) -> None:
    assert RoutingKey.from_configmap(key.configmap_name, key.configmap_key) == key


def test_wildcards_are_kept_in_ids_and_written_as_underscores_in_configmaps() -> None:
    key = RoutingKey("prod", "*", "*", "rate_limit")
    assert key.document_id == "prod:*:*:rate_limit"
    assert (key.configmap_name, key.configmap_key) == ("routing.prod", "_._.rate_limit.json")
    tenant = RoutingKey("prod", "acme", "*", "seo")
    assert (tenant.configmap_name, tenant.configmap_key) == ("routing.prod.acme", "acme._.seo.json")
    assert parse_configmap_key("acme._.seo.json") == ("acme", "*", "seo")
    assert parse_configmap_name("routing.prod") == ("prod", None)
    assert parse_configmap_name("routing.prod.acme") == ("prod", "acme")


@pytest.mark.parametrize(
    "document_id", ["prod:acme:kpi", "prod:acme:*:kpi:extra", "prod::*:kpi", "", "prod.acme.*.kpi"]
)
def test_a_malformed_document_id_is_refused_with_the_expected_form(document_id: str) -> None:
    with pytest.raises(InvalidRouting) as info:
        RoutingKey.from_document_id(document_id)
    assert info.value.field == "document id"
    assert str(info.value) == (
        f"document id: {document_id!r} is not a routing document id: expected "
        "{env}:{tenant}:{project}:{resource_kind} (four non-empty parts separated by ':', '*' "
        "for a wildcard)"
    )


@pytest.mark.parametrize(
    "key", ["acme.seo.json", "acme._.seo.yaml", "acme..seo.json", "a.b.c.d.json", ".json"]
)
def test_a_malformed_configmap_key_is_refused_with_the_expected_form(key: str) -> None:
    with pytest.raises(InvalidRouting) as info:
        parse_configmap_key(key)
    assert str(info.value) == (
        f"ConfigMap key: {key!r} is not a routing ConfigMap key: expected "
        "{tenant}.{project}.{resource_kind}.json ('_' for a wildcard, e.g. acme._.seo.json)"
    )


@pytest.mark.parametrize("name", ["routing", "config.prod", "routing.prod.acme.x", "routing..a"])
def test_a_malformed_configmap_name_is_refused_with_the_expected_form(name: str) -> None:
    with pytest.raises(InvalidRouting) as info:
        parse_configmap_name(name)
    assert str(info.value) == (
        f"ConfigMap name: {name!r} is not a routing ConfigMap name: expected routing.{{env}} "
        "(wildcard-tenant entries) or routing.{env}.{tenant}"
    )
    assert not configmap_in_env(name, "prod")


def test_a_key_in_another_tenants_configmap_is_refused_naming_its_configmap() -> None:
    with pytest.raises(InvalidRouting) as info:
        RoutingKey.from_configmap("routing.prod", "acme._.seo.json")
    assert str(info.value) == (
        "ConfigMap key: key 'acme._.seo.json' does not belong in ConfigMap 'routing.prod': an "
        "entry of tenant acme is written to ConfigMap 'routing.prod.acme'"
    )
    with pytest.raises(InvalidRouting, match=r"ConfigMap 'routing\.prod'$"):
        RoutingKey.from_configmap("routing.prod.acme", "_._.seo.json")


def test_configmaps_of_an_env_are_its_wildcard_and_tenant_configmaps_only() -> None:
    assert configmap_in_env("routing.prod", "prod")
    assert configmap_in_env("routing.prod.acme", "prod")
    assert not configmap_in_env("routing.production", "prod")
    assert not configmap_in_env("routing.dev.prod", "prod")
    assert configmap_in_env("anything", None)


def test_the_managed_by_label_and_its_selector_say_the_same() -> None:
    assert MANAGED_BY == {"app.kubernetes.io/managed-by": "routing-operator"}
    assert MANAGED_BY_SELECTOR == "app.kubernetes.io/managed-by=routing-operator"


def test_the_oldest_entry_wins_then_namespace_then_name() -> None:
    old = claim_order("2026-01-01T00:00:00Z", "zeta", "z")
    new_a = claim_order("2026-01-02T00:00:00Z", "a", "b")
    new_a2 = claim_order("2026-01-02T00:00:00Z", "a", "c")
    new_b = claim_order("2026-01-02T00:00:00Z", "b", "a")
    claims = [new_b, new_a2, old, new_a]
    random.Random(7).shuffle(claims)
    assert sorted(claims) == [old, new_a, new_a2, new_b]


def test_the_namespace_is_compared_on_its_own_not_as_a_namespace_slash_name_string() -> None:
    # '-' sorts before '/': as "ns/name" strings, namespace "a-b" would beat namespace "a".
    at = "2026-01-02T00:00:00Z"
    assert min(claim_order(at, "a-b", "x"), claim_order(at, "a", "x")) == (at, "a", "x")


def test_canonical_json_does_not_depend_on_key_order_and_its_digest_is_pinned() -> None:
    one = {"b": [1, {"y": 2, "x": 1}], "a": "é", "c": None}
    two = {"c": None, "a": "é", "b": [1, {"x": 1, "y": 2}]}
    assert (
        canonical_json(one)
        == canonical_json(two)
        == '{"a":"\\u00e9","b":[1,{"x":1,"y":2}],"c":null}'
    )
    # Digests are kept across sweeps and compared between processes: pinned, not recomputed.
    assert digest(canonical_json(one)).hex() == "044d9b38aa368ca36e10a5a6b914dd13"
    assert len(digest("")) == 16


def test_the_expected_projection_names_the_entry_and_this_cluster() -> None:
    record = expected_record(spec(), META, "cluster-a")
    assert record.source is not None
    assert record.source.model_dump() == {
        "cluster": "cluster-a",
        "namespace": "engines",
        "name": "acme-seo",
        "uid": "0b8c2f8e-uid",
    }
    assert record.generation == 3
    assert record.key == RoutingKey("prod", "acme", "*", "seo")
    assert configmap_value(record) == canonical_json(record.to_document())
    assert owner_of(record.to_document()) == record.source


def test_a_stored_document_digests_like_its_configmap_value_once_server_fields_are_dropped() -> (
    None
):
    record = expected_record(spec(), META, "cluster-a")
    stored = {**record.to_document(), "updated_at": "2026-01-02T03:04:06Z"}
    assert digest(canonical_json(strip_server_fields(stored))) == digest(configmap_value(record))
    assert record_from_document(record.key.document_id, stored) == record


def test_the_expected_projection_of_an_invalid_spec_is_refused() -> None:
    with pytest.raises(InvalidRouting, match=r"^spec\.backend"):
        expected_record(spec(backend="redis"), META, "cluster-a")


def test_a_document_under_another_id_than_its_fields_is_refused() -> None:
    record = expected_record(spec(), META, "cluster-a")
    with pytest.raises(InvalidRouting) as info:
        record_from_document("prod:globex:*:seo", record.to_document())
    assert str(info.value) == (
        "document id: document id 'prod:globex:*:seo' does not match its fields ('prod:acme:*:seo')"
    )


def test_a_source_that_cannot_be_read_is_no_owner() -> None:
    assert owner_of(None) is None
    assert owner_of({"source": "engines/acme-seo"}) is None
    assert owner_of({"source": {"namespace": "engines"}}) is None
