"""``/readyz`` items for entries the registry refused carry the key their file name or id tells.

Real ``FileRoutingRegistry`` on real directories laid out as the operator's ConfigMaps are
(``routing.{env}`` / ``routing.{env}.{tenant}``); no pod env filter, so the env comes from the
directory name. An unparseable name keeps the key fields, as ``None``. A stored entry carrying a
credential in a URL (written before the model refused it) is refused without repeating it.
"""

from __future__ import annotations

import json
from pathlib import Path

from engines.routing import FileRoutingRegistry, RoutingRecord, parse_spec
from engines.runtime.reports import registry_invalid


def test_refused_files_are_reported_under_their_key(tmp_path: Path) -> None:
    env_wide, tenant = tmp_path / "routing.staging", tmp_path / "routing.staging.acme"
    env_wide.mkdir()
    tenant.mkdir()
    (env_wide / "_.shop.kpi.json").write_text("{not json")
    (tenant / "acme._.seo.json").write_text("[]")
    (tenant / "odd-name.json").write_text("{}")
    registry = FileRoutingRegistry([env_wide, tenant])
    registry.start()
    try:
        items = {i["source"]: i for i in registry_invalid(registry)}
    finally:
        registry.close()
    key = ("tenant", "env", "project", "resource_kind")
    assert {src: tuple(i[k] for k in key) for src, i in items.items()} == {
        str(env_wide / "_.shop.kpi.json"): ("*", "staging", "shop", "kpi"),
        str(tenant / "acme._.seo.json"): ("acme", "staging", "*", "seo"),
        str(tenant / "odd-name.json"): (None, "staging", None, None),
    }
    assert all(set(i) == {*key, "source", "message"} and i["message"] for i in items.values())


def test_a_stored_entry_with_a_credential_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """A ConfigMap written before the model refused URL credentials: refused, never repeated."""
    env_wide = tmp_path / "routing.prod"
    env_wide.mkdir()
    spec = {
        "tenant": "*",
        "env": "prod",
        "resourceKind": "chat_bus",
        "backend": "redis",
        "redis": {"url": "redis://redis:6379/0"},
    }
    doc = RoutingRecord.from_spec(parse_spec(spec)).to_document()
    doc["config"]["url"] = "redis://redis:6379/0?PassWord=hunter2"
    (env_wide / "_._.chat_bus.json").write_text(json.dumps(doc))
    registry = FileRoutingRegistry([env_wide])
    registry.start()
    try:
        items = registry_invalid(registry)
    finally:
        registry.close()
    assert len(items) == 1
    assert (
        "config.url: must not carry a password or username query parameter" in (items[0]["message"])
    )
    assert "hunter2" not in json.dumps(items)
