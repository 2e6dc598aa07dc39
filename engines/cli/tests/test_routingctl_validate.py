"""``routingctl validate``: the offline linter, against the fixtures in tests/fixtures/manifests.

Covers every rule with its exact line (``file:doc-index: field.path: message``): YAML/JSON
syntax, duplicate YAML keys, the envelope (apiVersion, unknown top-level fields, non-objects),
metadata.name/namespace, the spec shape, every model rule as parse_spec words it (identity
fields, backend/kind, one settings object, matching settings, test-only backends, typed
settings), items of a ``kind: List``, duplicate objects and identities across files, and
``--require-complete`` with wildcard defaults. Also: the shipped examples/ pass, exit codes
0/1/2, ``--output json`` (with the line of each problem), and stdin.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from engines.cli import main
from engines.routing import CATALOG

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = "tests/fixtures/manifests"
BROKEN = f"{FIXTURES}/broken"
GOOD = f"{FIXTURES}/good"


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        import sys

        old, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            code = main(list(argv), out=out, err=err)
        finally:
            sys.stdin = old
    else:
        code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


EXPECTED: dict[str, list[str]] = {
    "01-yaml-syntax.yaml": [
        "1: (yaml): found character '\\t' that cannot start any token at line 10, column 1; "
        "fix the YAML syntax (documents after this one were not read)",
    ],
    "02-duplicate-key.yaml": [
        "0: (yaml): duplicate key 'backend' at line 10, column 3; keep only one (kubectl refuses "
        "duplicate fields) (documents after this one were not read)",
    ],
    "03-bad.json": [
        "0: (json): Expecting property name enclosed in double quotes at line 2, column 35; "
        "fix the JSON syntax",
    ],
    "04-envelope.yaml": [
        "0: apiVersion: required field is missing; set routing.engines.io/v1alpha1",
        "1: apiVersion: unsupported version 'routing.engines.io/v1'; use "
        "routing.engines.io/v1alpha1",
        "2: specs: unknown field; remove it (a RoutingEntry has only apiVersion, kind, metadata, "
        "spec, status)",
        "3: (document): expected a Kubernetes object (a mapping), got list",
    ],
    "05-metadata.yaml": [
        "0: metadata.name: required field is missing; set e.g. acme-prod-budget",
        "1: metadata.name: invalid value 'Acme_Prod': must be a lowercase RFC 1123 subdomain "
        "(letters, digits, '-' and '.', at most 253); e.g. meta1-prod-kpi",
        "2: metadata.namespace: invalid value 'Engines': must be a DNS label (lowercase letters, "
        "digits, '-', at most 63)",
    ],
    "06-spec-shape.yaml": [
        "0: spec: required field is missing; add spec with tenant, env, resourceKind, backend "
        "and the backend's settings",
        "1: spec: expected a mapping, got list",
    ],
    "07-identity-fields.yaml": [
        "0: spec.tenant: invalid value 'Acme': must be a DNS label (lowercase letters, digits, "
        "'-', at most 63) or *",
        "0: spec.env: invalid value '*': must be a DNS label (lowercase letters, digits, '-', at "
        "most 63); no wildcard",
        "0: spec.resourceKind: invalid value 'search_index'; expected "
        + ", ".join(f"'{k.value}'" for k in list(CATALOG)[:-1])
        + f" or '{list(CATALOG)[-1].value}'",
    ],
    "08-backend-rules.yaml": [
        "0: spec.backend: backend firestore is not allowed for resourceKind chat_bus; allowed: "
        "redis, memory",
        "1: spec.backend: exactly one backend settings object must be set (one of firestore, "
        "redis, gcs, memory, local, noop); found: firestore, redis",
        "2: spec.redis: backend is redis: set spec.redis and no other settings object",
        "3: spec.backend: backend memory is test-only and allowed only when env is test (env is "
        "prod); use a durable backend",
    ],
    "09-settings.yaml": [
        "0: spec.firestore.collection: required field is missing",
        "0: spec.firestore.colection: unknown field; remove it (see the RoutingEntry reference "
        "for allowed fields)",
        "1: spec.redis.url: required field is missing",
        "2: spec.gcs.bucket: required field is missing",
        "3: spec.redis.url: invalid value 'http://redis:6379': must be a redis://, rediss:// or "
        "unix:// URL",
    ],
    "10-duplicates-a.yaml": [],
    "11-duplicates-b.yaml": [
        f"0: metadata.name: duplicate object engines/dup-object, also defined at "
        f"{BROKEN}/10-duplicates-a.yaml:0; the later apply overwrites the earlier — rename one",
        f"1: spec: duplicate identity prod:dup:*:seo (tenant, env, project, resourceKind), also "
        f"defined by engines/dup-identity-first at {BROKEN}/10-duplicates-a.yaml:1; only the "
        "oldest is applied and the others report Conflict — remove one or change its identity",
    ],
    "12-list.yaml": [
        "0: items[1].spec.gcs.bucket: invalid value 'Bad Bucket': must be a GCS bucket name "
        "(lowercase letters, digits, '.', '_', '-')",
    ],
}


def test_every_broken_fixture_has_expectations() -> None:
    on_disk = sorted(p.name for p in (ROOT / BROKEN).iterdir() if p.suffix in (".yaml", ".json"))
    assert on_disk == sorted(EXPECTED)


def test_broken_directory_gives_one_exact_line_per_problem_and_exit_1() -> None:
    code, out, err = run("validate", BROKEN)
    want = [f"{BROKEN}/{name}:{line}" for name, lines in EXPECTED.items() for line in lines]
    assert out.splitlines() == want
    assert code == 1
    assert f"{len(want)} problem(s)" in err


@pytest.mark.parametrize(
    "name", [n for n, lines in EXPECTED.items() if lines and "duplicates" not in n]
)
def test_each_rule_alone(name: str) -> None:
    code, out, _ = run("validate", f"{BROKEN}/{name}")
    assert code == 1
    assert out.splitlines() == [f"{BROKEN}/{name}:{line}" for line in EXPECTED[name]]


def test_duplicates_need_both_files() -> None:
    code, out, _ = run("validate", f"{BROKEN}/11-duplicates-b.yaml")
    assert (code, out) == (0, "")
    code, out, _ = run(
        "validate", f"{BROKEN}/10-duplicates-a.yaml", f"{BROKEN}/11-duplicates-b.yaml"
    )
    assert code == 1
    assert len(out.splitlines()) == 2


def test_good_fixtures_pass_and_other_kinds_are_skipped() -> None:
    code, out, err = run("validate", GOOD)
    assert (code, out) == (0, "")
    assert "OK — 5 RoutingEntry document(s) in 3 file(s), 1 other document(s) skipped" in err


def test_shipped_examples_are_valid_and_complete_for_acme_in_prod() -> None:
    code, out, _ = run(
        "validate", "examples/", "--require-complete", "--env", "prod", "--tenants", "acme"
    )
    assert (code, out) == (0, "")


def test_examples_cover_every_kind_for_acme_and_as_defaults() -> None:
    code, out, _ = run("validate", "examples/", "--output", "json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] and report["valid"] == 2 * len(CATALOG)
    # a tenant with no entry of its own is complete through the wildcard defaults alone
    code, out, _ = run(
        "validate",
        "examples/prod-defaults.yaml",
        "--require-complete",
        "--env",
        "prod",
        "--tenants",
        "globex",
    )
    assert (code, out) == (0, "")


def test_require_complete_reports_each_missing_kind() -> None:
    code, out, _ = run(
        "validate",
        f"{GOOD}/acme-prod.yaml",
        f"{GOOD}/defaults.json",
        "--require-complete",
        "--env",
        "prod",
        "--tenants",
        "acme,globex",
        "--kinds",
        "seo,chat_bus",
    )
    assert code == 1
    # seo: acme has its own, globex inherits the "*" default; chat_bus: acme's entry is for
    # project shop only, so project * does not resolve for either tenant.
    assert out.splitlines() == [
        "require-complete:prod/acme: spec.resourceKind: no RoutingEntry resolves chat_bus for "
        "tenant acme in env prod (tried prod:acme:*:chat_bus, prod:*:*:chat_bus); add one with "
        'spec.env: prod, spec.tenant: acme (or "*" for every tenant), spec.resourceKind: chat_bus',
        "require-complete:prod/globex: spec.resourceKind: no RoutingEntry resolves chat_bus for "
        "tenant globex in env prod (tried prod:globex:*:chat_bus, prod:*:*:chat_bus); add one with "
        'spec.env: prod, spec.tenant: globex (or "*" for every tenant), '
        "spec.resourceKind: chat_bus",
    ]
    code, out, _ = run(
        "validate",
        GOOD,
        "--require-complete",
        "--env",
        "prod",
        "--tenants",
        "acme",
        "--kinds",
        "chat_bus",
        "--project",
        "shop",
    )
    assert (code, out) == (0, "")


def test_require_complete_never_falls_back_to_another_env() -> None:
    code, out, _ = run(
        "validate",
        "examples/",
        "--require-complete",
        "--env",
        "staging",
        "--tenants",
        "acme",
        "--kinds",
        "seo",
    )
    assert code == 1
    assert "tried prod" not in out and "(tried staging:acme:*:seo, staging:*:*:seo)" in out


def test_json_output_carries_rule_and_line() -> None:
    code, out, _ = run("validate", f"{BROKEN}/09-settings.yaml", "--output", "json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    first = report["problems"][0]
    assert first["file"] == f"{BROKEN}/09-settings.yaml"
    assert first["document"] == 0
    assert first["field"] == "spec.firestore.collection"
    assert first["rule"] == "schema"
    assert first["line"] == 5  # the line of spec.firestore (collection itself is absent)
    last = report["problems"][-1]
    assert last["field"] == "spec.redis.url" and last["line"] == 20


def test_stdin_is_read_with_dash() -> None:
    text = (ROOT / BROKEN / "08-backend-rules.yaml").read_text()
    code, out, _ = run("validate", "-", stdin=text)
    assert code == 1
    assert out.splitlines()[0].startswith("-:0: spec.backend: backend firestore is not allowed")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["validate", "does/not/exist.yaml"], "does/not/exist.yaml: no such file or directory"),
        (
            ["validate", "examples/", "--require-complete", "--env", "prod"],
            "needs --env and --tenants",
        ),
        (
            [
                "validate",
                "examples/",
                "--require-complete",
                "--env",
                "prod",
                "--tenants",
                "acme",
                "--kinds",
                "nope",
            ],
            "unknown resource kind(s) nope",
        ),
        (["validate", "examples/", "--tenants", "acme"], "only with --require-complete"),
        (["validate", "engines/cli/tests/__nothing__"], "no such file"),
    ],
)
def test_usage_and_io_errors_exit_2(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert out == ""
    assert message in err


def test_empty_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path))
    assert code == 2
    assert "no YAML/JSON files found" in err


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "0  every RoutingEntry is valid" in text and "2  usage or I/O error" in text
