"""``routingctl explain`` and ``routingctl matrix`` over the offline sources: ``dir`` (manifests)
and ``files`` (a mounted ConfigMap directory, laid out as the operator writes its keys).

Covers the §3 chain step by step (own entry beats the default, a default fills in, a project
entry beats both, never another env), the winner's origin/revision/backend/config, conflicts
(§3 order), secrets never printed, exit codes (0 resolved/complete, 1 missing, 2 bad source),
and the matrix in text (colour on demand), JSON and CSV — with the two sources giving the
same answers for the same entries.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from engines.cli import main
from engines.cli._validate import validate_paths
from engines.routing import CATALOG

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = str(ROOT / "examples")
KINDS = [k.value for k in CATALOG]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def entry(
    name: str, tenant: str, kind: str, backend: str, settings: dict[str, object], **extra: object
) -> str:
    spec = {
        "tenant": tenant,
        "env": "prod",
        "resourceKind": kind,
        "backend": backend,
        backend: settings,
        **extra,
    }
    return json.dumps(
        {
            "apiVersion": "routing.engines.io/v1alpha1",
            "kind": "RoutingEntry",
            "metadata": {"name": name, "namespace": "engines"},
            "spec": spec,
        }
    )


@pytest.fixture
def mounted(tmp_path: Path) -> Path:
    """examples/ projected the way the operator writes ConfigMap keys, all in one directory."""
    target = tmp_path / "routing"
    target.mkdir()
    report = validate_paths([EXAMPLES])
    assert not report.problems
    for parsed in report.entries:
        record = parsed.record()
        (target / record.key.configmap_key).write_text(json.dumps(record.to_document()))
    return target


# -- explain ---------------------------------------------------------------------------------


def test_explain_default_fills_in_for_a_tenant_without_its_own_entry() -> None:
    code, out, _ = run(
        "explain",
        "--env",
        "prod",
        "--tenant",
        "globex",
        "--project",
        "shop",
        "--kind",
        "rate_limit",
        "--source",
        "dir",
        EXAMPLES,
        "-o",
        "json",
    )
    assert code == 0
    result = json.loads(out)
    assert [(s["key"], s["state"]) for s in result["steps"]] == [
        ("prod:globex:shop:rate_limit", "not found"),
        ("prod:globex:*:rate_limit", "not found"),
        ("prod:*:shop:rate_limit", "not found"),
        ("prod:*:*:rate_limit", "wins"),
    ]
    winner = result["winner"]
    assert winner["origin"].endswith("prod-defaults.yaml:146")  # the document's first line
    assert winner["entry"] == "engines/default-prod-rate-limit"
    assert winner["backend"] == "redis"
    assert winner["config"] == {
        "url": "redis://redis.engines.svc:6379/0",
        "key_prefix": "rate-limit:",
    }
    assert len(winner["revision"]) == 64


def test_explain_own_entry_shadows_the_default() -> None:
    code, out, _ = run(
        "explain",
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--kind",
        "strategy_lock",
        "--source",
        "dir",
        EXAMPLES,
    )
    assert code == 0
    lines = out.splitlines()
    assert re.search(r"1\. prod:acme:\*:strategy_lock .* wins .*acme-prod\.yaml:133$", lines[1])
    assert re.search(
        r"2\. prod:\*:\*:strategy_lock .* shadowed .*prod-defaults\.yaml:133$", lines[2]
    )
    assert "  backend:   redis" in lines
    assert "winner:    prod:acme:*:strategy_lock" in lines


def test_explain_missing_kind_exits_1_with_the_keys_tried() -> None:
    code, out, _ = run(
        "explain",
        "--env",
        "staging",
        "--tenant",
        "acme",
        "--kind",
        "seo",
        "--source",
        "dir",
        EXAMPLES,
    )
    assert code == 1
    assert (
        "not resolved: no RoutingEntry for resource_kind=seo tenant=acme env=staging project=* "
        "(tried staging:acme:*:seo, staging:*:*:seo)" in out
    )
    assert "prod:" not in out  # never another env


def test_explain_project_entry_beats_tenant_and_default(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        entry(
            "acme-shop-kpi", "acme", "kpi", "firestore", {"collection": "shop_kpi"}, project="shop"
        )
    )
    (tmp_path / "b.json").write_text(
        entry("acme-kpi", "acme", "kpi", "firestore", {"collection": "kpi"})
    )
    code, out, _ = run(
        "explain",
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--project",
        "shop",
        "--kind",
        "kpi",
        "--source",
        "dir",
        str(tmp_path),
        "-o",
        "json",
    )
    assert code == 0
    states = [s["state"] for s in json.loads(out)["steps"]]
    assert states == ["wins", "shadowed", "not found", "not found"]
    assert json.loads(out)["winner"]["config"]["collection"] == "shop_kpi"


def test_explain_shows_conflicting_entries_and_the_section_3_winner(tmp_path: Path) -> None:
    (tmp_path / "1.json").write_text(
        entry("zz-kpi", "acme", "kpi", "firestore", {"collection": "zz"})
    )
    (tmp_path / "2.json").write_text(
        entry("aa-kpi", "acme", "kpi", "firestore", {"collection": "aa"})
    )
    code, out, _ = run(
        "explain",
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--kind",
        "kpi",
        "--source",
        "dir",
        str(tmp_path),
    )
    assert code == 0
    # same (missing) creationTimestamp: namespace/name decides, so engines/aa-kpi wins
    assert "(RoutingEntry engines/aa-kpi)" in out
    assert f"conflict: {tmp_path}/1.json:1 has the same identity and loses" in out


def test_explain_never_prints_credentials(tmp_path: Path) -> None:
    (tmp_path / "chat.json").write_text(
        entry(
            "acme-chat",
            "acme",
            "chat_bus",
            "redis",
            {"url": "redis://default:hunter2@redis.engines.svc:6379/0"},
            secretRef={"name": "redis-auth", "key": "password"},
        )
    )
    for output in ("text", "json"):
        code, out, _ = run(
            "explain",
            "--env",
            "prod",
            "--tenant",
            "acme",
            "--kind",
            "chat_bus",
            "--source",
            "dir",
            str(tmp_path),
            "-o",
            output,
        )
        # Such an entry is refused by the model (a password belongs in the Secret); whatever
        # explain then reports, the password is never echoed.
        assert code != 0
        assert "hunter2" not in out


def test_explain_from_mounted_files_matches_the_manifests(mounted: Path) -> None:
    args = [
        "explain",
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--kind",
        "media_v2_storage",
        "-o",
        "json",
    ]
    _, from_dir, _ = run(*args, "--source", "dir", EXAMPLES)
    code, from_files, _ = run(*args, "--source", "files", str(mounted))
    assert code == 0
    a, b = json.loads(from_dir)["winner"], json.loads(from_files)["winner"]
    assert (a["revision"], a["backend"], a["config"]) == (b["revision"], b["backend"], b["config"])
    assert b["origin"] == str(mounted / "acme._.media_v2_storage.json")
    assert b["entry"] == "engines/acme-prod-media-v2-storage"  # from the record's source


def test_explain_reports_invalid_mounted_files(mounted: Path) -> None:
    (mounted / "acme._.kpi.json").write_text('{"tenant": "acme"}')
    code, out, _ = run(
        "explain",
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--kind",
        "kpi",
        "--source",
        "files",
        str(mounted),
    )
    assert code == 0  # the broken file does not resolve; the "*" default does
    assert "wins  ← " in out and "prod:*:*:kpi" in out.split("wins")[0].splitlines()[-1]
    assert "1 invalid entry in the source ignored" in out
    assert "acme._.kpi.json" in out


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (["dir"], "--source dir needs at least one PATH"),
        (["bogus"], "--source 'bogus': expected one of"),
        (["firestore", "x"], "--source firestore takes no PATH"),
        (["files", "/does/not/exist"], "not a directory"),
        (["dir", "/does/not/exist"], "no such file or directory"),
    ],
)
def test_bad_source_exits_2(source: list[str], message: str) -> None:
    code, out, err = run(
        "explain", "--env", "prod", "--tenant", "acme", "--kind", "seo", "--source", *source
    )
    assert code == 2
    assert out == ""
    assert message in err


def test_unknown_kind_is_a_usage_error() -> None:
    code, _, _ = run("explain", "--env", "prod", "--tenant", "acme", "--kind", "search")
    assert code == 2


# -- matrix ----------------------------------------------------------------------------------


def cells(out: str) -> dict[tuple[str, str], dict[str, object]]:
    return {(c["tenant"], c["resource_kind"]): c for c in json.loads(out)["cells"]}


def test_matrix_json_classifies_own_default_and_missing() -> None:
    code, out, _ = run(
        "matrix",
        "--env",
        "prod",
        "--tenants",
        "acme,globex",
        "--source",
        "dir",
        EXAMPLES,
        "-o",
        "json",
    )
    assert code == 0
    got = cells(out)
    assert len(got) == 3 * len(KINDS)  # acme, globex and the "*" column
    assert all(got["acme", k]["state"] == "own" for k in KINDS)
    assert all(got["globex", k]["state"] == "default" for k in KINDS)
    assert got["acme", "strategy_lock"]["backend"] == "redis"
    assert got["globex", "strategy_lock"]["backend"] == "firestore"
    assert json.loads(out)["missing"] == 0


def test_matrix_tenants_default_to_those_with_entries_and_missing_exits_1() -> None:
    good = str(ROOT / "tests/fixtures/manifests/good")
    code, out, _ = run("matrix", "--env", "prod", "--source", "dir", good, "-o", "json")
    assert code == 1
    report = json.loads(out)
    assert report["tenants"] == ["acme"]
    got = cells(out)
    assert got["acme", "seo"]["state"] == "own"
    assert got["acme", "kpi"]["state"] == "missing"
    assert got["acme", "kpi"]["tried"] == ["prod:acme:*:kpi", "prod:*:*:kpi"]
    assert got["acme", "media_v2_storage"]["state"] == "default"  # from the exported List
    assert report["missing"] == len(KINDS) - 2


def test_matrix_text_marks_defaults_and_missing_cells(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(
        entry("default-seo", "*", "seo", "firestore", {"collection": "seo"})
    )
    (tmp_path / "a.json").write_text(
        entry("acme-kpi", "acme", "kpi", "firestore", {"collection": "kpi"})
    )
    code, out, _ = run(
        "matrix",
        "--env",
        "prod",
        "--kinds",
        "seo,kpi",
        "--tenants",
        "acme,globex",
        "--source",
        "dir",
        str(tmp_path),
        "--color",
        "never",
    )
    assert code == 1
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.startswith("│")
    }
    assert rows["seo"] == ["firestore (*)", "firestore (*)", "firestore"]
    assert rows["kpi"] == ["firestore", "MISSING", "-"]
    assert "1 missing cell(s) across 2 tenant(s)" in out
    assert "\x1b[" not in out


def test_matrix_colour_on_demand(tmp_path: Path) -> None:
    code, out, _ = run(
        "matrix",
        "--env",
        "prod",
        "--tenants",
        "acme",
        "--kinds",
        "seo",
        "--source",
        "dir",
        EXAMPLES,
        "--color",
        "always",
    )
    assert code == 0
    assert "\x1b[" in out


def test_matrix_csv_is_one_row_per_tenant() -> None:
    code, out, _ = run(
        "matrix",
        "--env",
        "prod",
        "--tenants",
        "acme,globex",
        "--kinds",
        "chat_bus,raw_storage",
        "--source",
        "dir",
        EXAMPLES,
        "-o",
        "csv",
    )
    assert code == 0
    assert out.splitlines() == [
        "tenant,chat_bus,raw_storage",
        "acme,redis,gcs",
        "globex,redis (*),gcs (*)",
        "*,redis,gcs",
    ]


def test_matrix_from_mounted_files_matches_the_manifests(mounted: Path) -> None:
    args = ["matrix", "--env", "prod", "--tenants", "acme,globex", "-o", "json"]
    _, from_dir, _ = run(*args, "--source", "dir", EXAMPLES)
    code, from_files, _ = run(*args, "--source", "files", str(mounted))
    assert code == 0

    def essence(out: str) -> dict[tuple[str, str], tuple[object, ...]]:
        return {k: (c["state"], c.get("backend"), c.get("revision")) for k, c in cells(out).items()}

    assert essence(from_dir) == essence(from_files)


def test_matrix_files_source_ignores_other_envs(mounted: Path) -> None:
    code, out, _ = run(
        "matrix",
        "--env",
        "staging",
        "--tenants",
        "acme",
        "--source",
        "files",
        str(mounted),
        "-o",
        "json",
    )
    assert code == 1
    assert json.loads(out)["missing"] == len(KINDS)
