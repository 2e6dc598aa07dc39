"""``/readyz`` items for entries the registry refused carry the key their file name or id tells.

Real ``FileRoutingRegistry`` on real directories laid out as the operator's ConfigMaps are
(``routing.{env}`` / ``routing.{env}.{tenant}``); no pod env filter, so the env comes from the
directory name. An unparseable name keeps the key fields, as ``None``.
"""

from __future__ import annotations

from pathlib import Path

from engines.routing import FileRoutingRegistry
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
