"""The committed CRD is exactly what the model generates, and it carries the contract's shape."""

from __future__ import annotations

import subprocess
import sys

import yaml

from engines.routing.crd import CHART_CRD_PATH, CRD_PATH, build_crd, render_crd
from engines.routing.rules import RULES


def test_committed_crd_matches_the_generator() -> None:
    for path in (CRD_PATH, CHART_CRD_PATH):
        assert path.read_text() == render_crd(), (
            f"{path} is stale: run `python -m engines.routing.crd` and commit the result"
        )


def test_check_mode_reports_drift(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "crd.yaml"
    stale.write_text(render_crd().replace("rte", "rtx"))
    result = subprocess.run(
        [sys.executable, "-m", "engines.routing.crd", "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "is out of date: run `python -m engines.routing.crd`" in result.stderr


def test_crd_shape() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "RoutingEntry",
        "routingentries",
        "routingentry",
    )
    assert names["shortNames"] == ["rte"] and names["categories"] == ["engines", "routing"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Tenant", "Env", "Project", "Kind", "Backend", "Ready", "Reason", "Age"]
    assert [f["jsonPath"] for f in version["selectableFields"]] == [
        ".spec.tenant",
        ".spec.env",
        ".spec.resourceKind",
        ".spec.backend",
    ]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert [r["rule"] for r in spec["x-kubernetes-validations"]] == [r.cel for r in RULES.values()]
    for field in ("tenant", "env", "project", "resourceKind"):
        assert spec["properties"][field]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert spec["properties"]["project"]["default"] == "*"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status) == {"observedGeneration", "revision", "firestore", "configMap", "conditions"}


def test_schema_is_structural() -> None:
    """Every node has a type and no $ref/anyOf survived (the API server refuses otherwise)."""

    def walk(node: dict, path: str) -> None:  # type: ignore[type-arg]
        assert "$ref" not in node and "anyOf" not in node, path
        assert "type" in node, f"{path} has no type"
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "")
