"""Resolution (§3) on the in-process table: precedence, no cross-env fallback, ConfigMissing."""

from __future__ import annotations

import pytest

from devstack.testing import record as kind_record
from engines.routing import (
    ConfigMissing,
    InMemoryRoutingRegistry,
    InvalidRouting,
    RoutingKey,
    RoutingRecord,
)


def record(tenant: str, project: str, collection: str, env: str = "prod") -> RoutingRecord:
    config = {"collection": collection}
    return kind_record("kpi", "firestore", config, tenant=tenant, env=env, project=project)


@pytest.fixture
def registry() -> InMemoryRoutingRegistry:
    reg = InMemoryRoutingRegistry()
    for tenant, project, coll in [
        ("acme", "shop", "exact"),
        ("acme", "*", "tenant-default"),
        ("*", "shop", "project-default"),
        ("*", "*", "env-default"),
    ]:
        reg.create(record(tenant, project, coll))
    return reg


def winner(reg: InMemoryRoutingRegistry, tenant: str, project: str) -> str:
    return str(reg.resolve("kpi", tenant, "prod", project).config["collection"])


def test_precedence_order(registry: InMemoryRoutingRegistry) -> None:
    assert winner(registry, "acme", "shop") == "exact"
    assert winner(registry, "acme", "blog") == "tenant-default"
    assert winner(registry, "globex", "shop") == "project-default"
    assert winner(registry, "globex", "blog") == "env-default"


def test_removing_the_winner_falls_through_to_the_next_key(
    registry: InMemoryRoutingRegistry,
) -> None:
    registry.delete(RoutingKey("prod", "acme", "shop", "kpi"))
    assert winner(registry, "acme", "shop") == "tenant-default"
    registry.delete(RoutingKey("prod", "acme", "*", "kpi"))
    assert winner(registry, "acme", "shop") == "project-default"


def test_no_cross_env_fallback() -> None:
    reg = InMemoryRoutingRegistry()
    reg.create(record("*", "*", "dev-data", env="dev"))
    with pytest.raises(ConfigMissing) as info:
        reg.resolve("kpi", "acme", "prod", "shop")
    assert all(k.env == "prod" for k in info.value.tried)


def test_config_missing_carries_key_and_tried_and_reads_as_one_line() -> None:
    reg = InMemoryRoutingRegistry()
    with pytest.raises(ConfigMissing) as info:
        reg.resolve("kpi", "acme", "prod", "shop")
    err = info.value
    assert err.key == RoutingKey("prod", "acme", "shop", "kpi")
    assert [k.document_id for k in err.tried] == [
        "prod:acme:shop:kpi",
        "prod:acme:*:kpi",
        "prod:*:shop:kpi",
        "prod:*:*:kpi",
    ]
    assert "\n" not in str(err)
    assert str(err) == (
        "no RoutingEntry for resource_kind=kpi tenant=acme env=prod project=shop (tried "
        "prod:acme:shop:kpi, prod:acme:*:kpi, prod:*:shop:kpi, prod:*:*:kpi); create one with "
        "`kubectl apply` (spec.resourceKind=kpi, spec.env=prod)"
    )


def test_wildcard_project_query_tries_two_keys() -> None:
    with pytest.raises(ConfigMissing) as info:
        InMemoryRoutingRegistry().resolve("kpi", "acme", "prod")
    assert [k.document_id for k in info.value.tried] == ["prod:acme:*:kpi", "prod:*:*:kpi"]


def test_unknown_kind_fails_fast() -> None:
    with pytest.raises(InvalidRouting, match="unknown resource_kind 'kpis'"):
        InMemoryRoutingRegistry().resolve("kpis", "acme", "prod")


def test_memo_is_invalidated_on_change(registry: InMemoryRoutingRegistry) -> None:
    assert winner(registry, "acme", "shop") == "exact"
    registry.update(record("acme", "shop", "exact-v2"))
    assert winner(registry, "acme", "shop") == "exact-v2"
