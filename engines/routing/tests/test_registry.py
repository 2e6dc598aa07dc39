"""Registries against real stores: FirestoreRoutingRegistry on the Firestore emulator, and
FileRoutingRegistry on a directory laid out the way kubelet lays out a ConfigMap volume.

Covers CRUD, fail-fast on a missing resource_kind, the §3 precedence, no cross-env fallback,
change delivery to subscribers, invalid documents kept out of resolution, and the file registry's
live reload on kubelet's atomic ``..data`` swap.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.testing import record as kind_record
from devstack.testing import wait_for
from engines.routing import (
    ChangeType,
    ConfigMissing,
    EntryExists,
    FileRoutingRegistry,
    FirestoreRoutingRegistry,
    InvalidRouting,
    RoutingChange,
    RoutingKey,
    RoutingRecord,
)

pytestmark = pytest.mark.firestore


def record(
    tenant: str = "acme",
    project: str = "*",
    kind: str = "kpi",
    env: str = "prod",
    collection: str = "kpis",
) -> RoutingRecord:
    config = {"collection": collection}
    return kind_record(kind, "firestore", config, tenant=tenant, env=env, project=project)


@pytest.fixture
def registry(firestore_emulator: Any) -> Iterator[FirestoreRoutingRegistry]:
    """A registry on a fresh collection, listening, with its first snapshot loaded."""
    reg = FirestoreRoutingRegistry(collection=f"routing_{uuid.uuid4().hex[:10]}")
    reg.start()
    assert reg.wait_ready(15), "first snapshot never arrived"
    yield reg
    reg.close()


def test_crud_round_trip(registry: FirestoreRoutingRegistry) -> None:
    rec = record()
    registry.create(rec)
    assert registry.fetch(rec.key) == rec
    wait_for(lambda: registry.get(rec.key) == rec, what="created entry in the cache")

    changed = record(collection="kpis_v2")
    registry.update(changed)
    assert registry.fetch(rec.key) == changed
    wait_for(lambda: registry.get(rec.key) == changed, what="updated entry in the cache")
    assert registry.list(env="prod", tenant="acme") == [changed]
    assert registry.list(env="dev") == []

    assert registry.delete(rec.key) is True
    assert registry.fetch(rec.key) is None
    wait_for(lambda: registry.get(rec.key) is None, what="deleted entry gone from the cache")
    assert registry.delete(rec.key) is False


def test_document_layout_is_the_contract(registry: FirestoreRoutingRegistry) -> None:
    registry.create(record(tenant="*", project="shop"))
    snap = registry.collection.document("prod:*:shop:kpi").get()
    data = snap.to_dict()
    assert snap.exists
    assert set(data) == {
        "tenant",
        "env",
        "project",
        "resource_kind",
        "backend",
        "config",
        "secret_ref",
        "revision",
        "generation",
        "source",
        "updated_at",
        "schema_version",
    }
    assert (data["tenant"], data["project"], data["schema_version"]) == ("*", "shop", 1)
    assert data["updated_at"] is not None  # server timestamp


def test_create_twice_and_update_missing_fail(registry: FirestoreRoutingRegistry) -> None:
    registry.create(record())
    with pytest.raises(EntryExists, match="already exists for tenant=acme env=prod"):
        registry.create(record())
    with pytest.raises(ConfigMissing):
        registry.update(record(tenant="globex"))


def test_missing_resource_kind_fails_fast(registry: FirestoreRoutingRegistry) -> None:
    with pytest.raises(ConfigMissing) as info:
        registry.resolve("seo", "acme", "prod")
    assert "resource_kind=seo tenant=acme env=prod" in str(info.value)
    with pytest.raises(InvalidRouting, match="unknown resource_kind"):
        registry.resolve("not_a_kind", "acme", "prod")
    doc = record().to_document()
    del doc["resource_kind"]
    with pytest.raises(InvalidRouting, match=r"document\.resource_kind: required field is missing"):
        RoutingRecord.from_document(doc)


def test_precedence_and_no_cross_env(registry: FirestoreRoutingRegistry) -> None:
    for tenant, project, name in [
        ("acme", "shop", "exact"),
        ("acme", "*", "tenant"),
        ("*", "shop", "project"),
        ("*", "*", "env"),
    ]:
        registry.create(record(tenant, project, collection=name))
    registry.create(record("*", "*", env="dev", collection="dev-only"))
    wait_for(lambda: len(registry.table) == 5, what="5 entries loaded")

    def coll(tenant: str, project: str, env: str = "prod") -> str:
        return str(registry.resolve("kpi", tenant, env, project).config["collection"])

    assert coll("acme", "shop") == "exact"
    assert coll("acme", "blog") == "tenant"
    assert coll("globex", "shop") == "project"
    assert coll("globex", "blog") == "env"
    assert coll("globex", "blog", env="dev") == "dev-only"
    with pytest.raises(ConfigMissing):
        registry.resolve("kpi", "acme", "staging", "shop")


def test_change_reaches_a_subscriber(
    registry: FirestoreRoutingRegistry, firestore_emulator: Any
) -> None:
    # A second registry (another pod) writes; ours must see it through the snapshot listener.
    writer = FirestoreRoutingRegistry(collection=registry.collection_name)
    seen: list[RoutingChange] = []
    got = threading.Event()

    def listener(change: RoutingChange) -> None:
        seen.append(change)
        got.set()

    unsubscribe = registry.subscribe(listener)
    writer.create(record())
    assert got.wait(10), "no change delivered"
    writer.update(record(collection="v2"))
    wait_for(lambda: len(seen) >= 2, what="update delivered")
    writer.delete(record().key)
    wait_for(lambda: len(seen) >= 3, what="delete delivered")
    assert [c.type for c in seen] == [ChangeType.ADDED, ChangeType.MODIFIED, ChangeType.REMOVED]
    assert seen[1].record is not None and seen[1].record.config["collection"] == "v2"
    unsubscribe()
    writer.create(record(tenant="late"))
    wait_for(lambda: registry.get(record(tenant="late").key) is not None, what="late entry")
    assert len(seen) == 3


def test_env_scoped_registry_sees_only_its_env(
    registry: FirestoreRoutingRegistry, firestore_emulator: Any
) -> None:
    scoped = FirestoreRoutingRegistry(collection=registry.collection_name, env="prod")
    registry.create(record(env="dev"))
    registry.create(record(env="prod"))
    scoped.start()
    try:
        assert scoped.wait_ready(10)
        wait_for(lambda: len(scoped.table) == 1, what="prod entry")
        assert scoped.list()[0].env == "prod"
    finally:
        scoped.close()


def test_invalid_document_is_reported_not_resolved(registry: FirestoreRoutingRegistry) -> None:
    bad = record().to_document()
    bad["backend"] = "redis"  # not allowed for kpi; a hand edit the CRD would have refused
    registry.collection.document("prod:acme:*:kpi").set(bad)
    wait_for(lambda: "prod:acme:*:kpi" in registry.invalid, what="invalid doc reported")
    assert (
        "document.backend: backend redis is not allowed for resource_kind kpi"
        in registry.invalid["prod:acme:*:kpi"]
    )
    with pytest.raises(ConfigMissing):
        registry.resolve("kpi", "acme", "prod")


# -- files ------------------------------------------------------------------------------------


def kubelet_write(volume: Path, files: dict[str, dict[str, Any]]) -> None:
    """Write a ConfigMap volume the way kubelet's AtomicWriter does: new dir, swap ``..data``."""
    stamp = volume / f"..{uuid.uuid4().hex}"
    stamp.mkdir()
    for name, body in files.items():
        (stamp / name).write_text(json.dumps(body))
    tmp = volume / "..data_tmp"
    os.symlink(stamp.name, tmp)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    os.replace(tmp, volume / "..data")
    for name in files:
        link = volume / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    for link in volume.iterdir():
        if link.is_symlink() and link.name not in files and not link.name.startswith(".."):
            link.unlink()
    if old:
        for f in (volume / old).iterdir():
            f.unlink()
        (volume / old).rmdir()


def test_file_registry_reads_both_configmaps_and_reloads_on_swap(tmp_path: Path) -> None:
    env_wide, tenant = tmp_path / "routing.prod", tmp_path / "routing.prod.acme"
    env_wide.mkdir()
    tenant.mkdir()
    default, specific = record("*", collection="default"), record("acme", collection="acme-v1")
    kubelet_write(env_wide, {default.key.configmap_key: default.to_document()})
    kubelet_write(tenant, {specific.key.configmap_key: specific.to_document()})

    reg = FileRoutingRegistry([env_wide, tenant], env="prod", poll_interval=0.05)
    changes: list[RoutingChange] = []
    reg.subscribe(changes.append)
    reg.start()
    try:
        assert reg.resolve("kpi", "acme", "prod").config["collection"] == "acme-v1"
        assert reg.resolve("kpi", "globex", "prod").config["collection"] == "default"

        updated = record("acme", collection="acme-v2")
        kubelet_write(tenant, {updated.key.configmap_key: updated.to_document()})
        wait_for(
            lambda: reg.resolve("kpi", "acme", "prod").config["collection"] == "acme-v2",
            what="reload after ..data swap",
        )
        kubelet_write(tenant, {})  # key removed: acme falls back to the env-wide default
        wait_for(
            lambda: reg.resolve("kpi", "acme", "prod").config["collection"] == "default",
            what="fallback after key removal",
        )
        assert [c.type for c in changes][-2:] == [ChangeType.MODIFIED, ChangeType.REMOVED]
    finally:
        reg.close()


def test_file_registry_rejects_misnamed_and_broken_files(tmp_path: Path) -> None:
    good = record()
    (tmp_path / "acme._.seo.json").write_text(json.dumps(good.to_document()))  # wrong name
    (tmp_path / "broken._.kpi.json").write_text("{not json")
    reg = FileRoutingRegistry([tmp_path], env="prod")
    reg.start()
    try:
        assert len(reg.table) == 0
        assert "expected acme._.kpi.json" in reg.invalid[str(tmp_path / "acme._.seo.json")]
        assert str(tmp_path / "broken._.kpi.json") in reg.invalid
        with pytest.raises(PermissionError, match="read-only"):
            reg.create(good)
    finally:
        reg.close()


def test_key_names_follow_the_configmap_layout() -> None:
    assert record("*", "*", kind="rate_limit").key.configmap_key == "_._.rate_limit.json"
    assert record("acme", "*", kind="seo").key.configmap_key == "acme._.seo.json"
    assert record("acme").key.configmap_name == "routing.prod.acme"
    assert record("*").key.configmap_name == "routing.prod"
    assert RoutingKey("prod", "*", "*", "kpi").document_id == "prod:*:*:kpi"
