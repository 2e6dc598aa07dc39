"""``routingctl validate``: the offline linter, against the fixtures in tests/fixtures/manifests.

Covers every rule with its exact line (``file:LINE: field.path: message (document N)``, the line
of the offending field): every problem of a document (a failing field never hides the
cross-field rules), no credential ever repeated in a problem, YAML/JSON
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


KINDS = ", ".join(f"'{k.value}'" for k in list(CATALOG)[:-1]) + f" or '{list(CATALOG)[-1].value}'"
DNS_LABEL = "must be a DNS label (lowercase letters, digits, '-', at most 63)"
TO_SECRET = (
    "it would be copied into Firestore, ConfigMaps and /routing; remove it and put the "
    "credential in a Secret referenced by spec.secretRef"
)
EXPECTED: dict[str, list[str]] = {
    "01-yaml-syntax.yaml": [
        "10: (yaml): found character '\\t' that cannot start any token at line 10, column 1; "
        "fix the YAML syntax (documents after this one were not read) (document 1)",
    ],
    "02-duplicate-key.yaml": [
        "10: (yaml): duplicate key 'backend' at line 10, column 3; keep only one (kubectl "
        "refuses duplicate fields) (documents after this one were not read) (document 0)",
    ],
    "03-bad.json": [
        "2: (json): Expecting property name enclosed in double quotes at line 2, column 35; "
        "fix the JSON syntax (document 0)",
    ],
    "04-envelope.yaml": [
        "2: apiVersion: required field is missing; set routing.engines.io/v1alpha1 (document 0)",
        "6: apiVersion: unsupported version 'routing.engines.io/v1'; use "
        "routing.engines.io/v1alpha1 (document 1)",
        "14: specs: unknown field; remove it (a RoutingEntry has only apiVersion, kind, "
        "metadata, spec, status) (document 2)",
        "17: (document): expected a Kubernetes object (a mapping), got list (document 3)",
    ],
    "05-metadata.yaml": [
        "4: metadata.name: required field is missing; set e.g. acme-prod-budget (document 0)",
        "9: metadata.name: invalid value 'Acme_Prod': must be a lowercase RFC 1123 subdomain "
        "(letters, digits, '-' and '.', at most 253); e.g. meta1-prod-kpi (document 1)",
        f"14: metadata.namespace: invalid value 'Engines': {DNS_LABEL} (document 2)",
    ],
    "06-spec-shape.yaml": [
        "2: spec: required field is missing; add spec with tenant, env, resourceKind, backend "
        "and the backend's settings (document 0)",
        "9: spec: expected a mapping, got list (document 1)",
    ],
    "07-identity-fields.yaml": [
        f"6: spec.tenant: {DNS_LABEL} or * (document 0)",
        f"7: spec.env: {DNS_LABEL}; no wildcard (document 0)",
        f"8: spec.resourceKind: must be one of {KINDS} (document 0)",
    ],
    "08-backend-rules.yaml": [
        "6: spec.backend: backend firestore is not allowed for resourceKind chat_bus; allowed: "
        "redis, memory (document 0)",
        "15: spec.backend: exactly one backend settings object must be set (one of firestore, "
        "redis, gcs, memory, local, noop); found: firestore, redis (document 1)",
        "22: spec.redis: backend is redis: set spec.redis and no other settings object "
        "(document 2)",
        "27: spec.backend: backend memory is test-only and allowed only when env is test (env is "
        "prod); use a durable backend (document 3)",
    ],
    "09-settings.yaml": [
        "5: spec.firestore.collection: required field is missing (document 0)",
        "5: spec.firestore.colection: unknown field; remove it (see the RoutingEntry reference "
        "for allowed fields) (document 0)",
        "10: spec.redis.url: required field is missing (document 1)",
        "15: spec.gcs.bucket: required field is missing (document 2)",
        "20: spec.redis.url: must be a redis://, rediss:// or unix:// URL (document 3)",
    ],
    "10-duplicates-a.yaml": [],
    "11-duplicates-b.yaml": [
        f"5: metadata.name: duplicate object engines/dup-object, also defined at "
        f"{BROKEN}/10-duplicates-a.yaml:2 (document 0); the later apply overwrites the earlier "
        "— rename one (document 0)",
        f"11: spec: duplicate identity prod:dup:*:seo (tenant, env, project, resourceKind), also "
        f"defined by engines/dup-identity-first at {BROKEN}/10-duplicates-a.yaml:7 (document 1); "
        "only the oldest is applied and the others report Conflict — remove one or change its "
        "identity (document 1)",
    ],
    "12-list.yaml": [
        "12: items[1].spec.gcs.bucket: must be a GCS bucket name (lowercase letters, digits, "
        "'.', '_', '-') (document 0)",
    ],
    "13-every-problem.yaml": [
        f"9: spec.tenant: {DNS_LABEL} or * (document 0)",
        "12: spec.backend: backend firestore is not allowed for resourceKind chat_bus; allowed: "
        "redis, memory (document 0)",
        "15: spec.firestore.colection: unknown field; remove it (see the RoutingEntry reference "
        "for allowed fields) (document 0)",
    ],
    "14-credentials.yaml": [
        "13: spec.redis.url: must not carry userinfo (user:password@, user@ or :password@): "
        f"{TO_SECRET} (document 0)",
        "24: spec.redis.url: must not carry a password or username query parameter (any case): "
        f"{TO_SECRET} (document 1)",
        "37: spec.secretRef.name: name must be a Secret name: a DNS subdomain (lowercase "
        "letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit) "
        "(document 2)",
        "38: spec.secretRef.key: key must be a key of the Secret: letters, digits, '-', '_' and "
        "'.' only (no '/'), not . and not starting with .. (Kubernetes' own rule for Secret keys) "
        "(document 2)",
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
    assert first["text"].startswith(f"{BROKEN}/09-settings.yaml:5: spec.firestore.collection")
    last = report["problems"][-1]
    assert last["field"] == "spec.redis.url" and last["line"] == 20
    assert last["document"] == 3 and last["text"].endswith("(document 3)")


def test_every_problem_of_a_document_is_reported_at_its_own_line() -> None:
    """A failing field does not hide the cross-field rule, as the API server's CEL does not."""
    code, out, _ = run("validate", f"{BROKEN}/13-every-problem.yaml", "--output", "json")
    assert code == 1
    problems = json.loads(out)["problems"]
    assert [(p["line"], p["field"]) for p in problems] == [
        (9, "spec.tenant"),
        (12, "spec.backend"),
        (15, "spec.firestore.colection"),
    ]
    assert {p["document"] for p in problems} == {0}


def test_a_credential_is_never_repeated_in_a_problem() -> None:
    code, out, _ = run("validate", f"{BROKEN}/14-credentials.yaml", "--output", "json")
    assert code == 1
    assert "hunter2" in (ROOT / BROKEN / "14-credentials.yaml").read_text()
    assert "hunter2" not in out


def test_json_documents_get_lines_too(tmp_path: Path) -> None:
    body = {
        "apiVersion": "routing.engines.io/v1alpha1",
        "kind": "RoutingEntry",
        "metadata": {"name": "j"},
        "spec": {"tenant": "acme", "env": "prod", "resourceKind": "seo", "backend": "redis"},
    }
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(body, indent=2))
    code, out, _ = run("validate", str(path))
    assert code == 1
    backend_line = json.dumps(body, indent=2).splitlines().index('    "backend": "redis"') + 1
    assert f"{path}:{backend_line}: spec.backend: backend redis is not allowed" in out


def test_stdin_is_read_with_dash() -> None:
    text = (ROOT / BROKEN / "08-backend-rules.yaml").read_text()
    code, out, _ = run("validate", "-", stdin=text)
    assert code == 1
    assert out.splitlines()[0].startswith("-:6: spec.backend: backend firestore is not allowed")


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
