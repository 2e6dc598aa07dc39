"""The RoutingEntry's validation rules, each stated once, and how a broken one is told.

The cross-field rules (:data:`RULES`) are rendered as CEL in the CRD by ``engines.routing.crd``
and checked in Python by the model (:func:`rule_violations`), with the same messages, so the API
server and ``routingctl validate`` refuse the same entries in the same words. A refused entry is
told as ``spec.<field>: <fix>``, never with the refused value: it may be a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .catalog import BACKEND_SETTINGS, CATALOG, TEST_ONLY_BACKENDS, Backend, ResourceKind

__all__ = [
    "DNS_LABEL",
    "DNS_LABEL_OR_WILDCARD",
    "IMMUTABLE_MESSAGE",
    "RULES",
    "SETTINGS_FIELDS",
    "Rule",
    "RuleViolation",
    "clause",
    "describe",
    "format_validation_error",
    "raw_rule_violations",
    "rule_violations",
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_LABEL_OR_WILDCARD = r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$"
SETTINGS_FIELDS: tuple[str, ...] = tuple(b.value for b in BACKEND_SETTINGS)


class RuleViolation(ValueError):
    """A cross-field rule failed; ``field`` is the spec field the user should fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Rule:
    """A cross-field rule, enforced by the model and rendered as a CEL rule in the CRD."""

    cel: str
    message: str
    field_path: str | None = None
    message_expression: str | None = None
    reason: str | None = None


def _cel_list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


_TEST_ONLY = _cel_list(sorted(b.value for b in TEST_ONLY_BACKENDS))
_SET_COUNT = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in SETTINGS_FIELDS)


def _backend_rules() -> dict[str, Rule]:
    """One CEL rule per group of kinds sharing an allowed-backend list.

    A single rule indexing a map literal reads better, but its estimated cost exceeds the API
    server's CEL budget, so the catalog is rendered as a handful of cheap implications.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for kind, spec in CATALOG.items():
        groups.setdefault(tuple(b.value for b in spec.allowed), []).append(kind.value)
    rules = {}
    for allowed, kinds in groups.items():
        listed = ", ".join(allowed)
        rules[f"backend_allowed_{kinds[0]}"] = Rule(
            cel=(
                f"!(self.resourceKind in {_cel_list(kinds)}) "
                f"|| self.backend in {_cel_list(list(allowed))}"
            ),
            message=f"backend must be one of {listed} for resourceKind {', '.join(kinds)}",
            message_expression=(
                "'backend ' + self.backend + ' is not allowed for resourceKind ' + "
                f"self.resourceKind + '; allowed: {listed}'"
            ),
            field_path=".backend",
            reason="FieldValueInvalid",
        )
    return rules


RULES: dict[str, Rule] = {
    **_backend_rules(),
    "one_settings": Rule(
        cel=f"{_SET_COUNT} == 1",
        message=(
            "exactly one backend settings object must be set "
            "(one of firestore, redis, gcs, memory, local, noop)"
        ),
    ),
    "settings_match_backend": Rule(
        cel=" && ".join(f"(has(self.{f}) == (self.backend == '{f}'))" for f in SETTINGS_FIELDS),
        message="the settings object set must be the one named by spec.backend",
        message_expression=(
            "'backend is ' + self.backend + ': set spec.' + self.backend + "
            "' and no other settings object'"
        ),
    ),
    "test_only_env": Rule(
        cel=f"!(self.backend in {_TEST_ONLY}) || self.env == 'test'",
        message="test-only backends (memory, local, noop) are allowed only when spec.env is test",
        message_expression=(
            "'backend ' + self.backend + ' is test-only and allowed only when env is test "
            "(env is ' + self.env + '); use a durable backend'"
        ),
        field_path=".backend",
        reason="FieldValueForbidden",
    ),
}

IMMUTABLE_MESSAGE = "{field} is immutable: create a new RoutingEntry instead of changing it"


def rule_violations(
    kind: ResourceKind | None, backend: Backend | None, env: str | None, set_fields: list[str]
) -> list[tuple[str, str]]:
    """Every cross-field rule (:data:`RULES`) the values break, as (spec field, message).

    Each rule is judged on its own, as the API server's CEL does: a value that is itself invalid
    (``None`` here) only skips the rules that need it, so a bad tenant never hides a backend the
    kind does not allow.
    """
    out: list[tuple[str, str]] = []
    if kind is not None and backend is not None and backend not in CATALOG[kind].allowed:
        out.append(
            (
                "backend",
                f"backend {backend.value} is not allowed for resourceKind {kind.value}; allowed: "
                + ", ".join(b.value for b in CATALOG[kind].allowed),
            )
        )
    if len(set_fields) != 1:
        found = ", ".join(set_fields) or "none"
        out.append(("backend", RULES["one_settings"].message + f"; found: {found}"))
    elif backend is not None and set_fields[0] != backend.value:
        out.append(
            (
                backend.value,
                f"backend is {backend.value}: set spec.{backend.value} "
                "and no other settings object",
            )
        )
    if backend in TEST_ONLY_BACKENDS and env is not None and env != "test":
        out.append(
            (
                "backend",
                f"backend {backend.value} is test-only and allowed only when env is test "
                f"(env is {env}); use a durable backend",
            )
        )
    return out


def raw_rule_violations(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """:func:`rule_violations` on an unvalidated spec (each value used only where it is valid)."""

    def enum(cls: type[ResourceKind] | type[Backend], value: Any) -> Any:
        try:
            return cls(value)
        except (ValueError, TypeError):
            return None

    env = spec.get("env")
    env_ok = isinstance(env, str) and len(env) <= 63 and re.match(DNS_LABEL, env) is not None
    return rule_violations(
        enum(ResourceKind, spec.get("resourceKind", spec.get("resource_kind"))),
        enum(Backend, spec.get("backend")),
        env if env_ok else None,
        [f for f in SETTINGS_FIELDS if spec.get(f) is not None],
    )


def describe(err: Any) -> tuple[str, str]:
    """(dotted location, human message) for one pydantic error."""
    loc = ".".join(str(p) for p in err["loc"])
    violation = err.get("ctx", {}).get("error")
    if isinstance(violation, RuleViolation):
        return ".".join(p for p in (loc, violation.field) if p), str(violation)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field; remove it (see the RoutingEntry reference for allowed fields)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        msg = f"must be one of {expected}"
    elif err["type"] == "string_pattern_mismatch":
        msg = _pattern_hint(loc)
    # Never the input: a refused value may be a credential, and these messages end up in status
    # conditions, Events, logs and /readyz. pydantic's own ``msg`` templates carry only the rule.
    return loc, msg


def clause(prefix: str, loc: str, msg: str) -> str:
    """``prefix.loc: msg``, or ``prefix: msg`` for a problem of the whole object."""
    return f"{prefix}.{loc}: {msg}" if loc else f"{prefix}: {msg}"


def format_validation_error(exc: ValidationError, *, prefix: str = "spec") -> str:
    """One clause per problem, ``spec.field.path: message`` (pydantic noise removed)."""
    return "; ".join(clause(prefix, *describe(err)) for err in exc.errors())


def _pattern_hint(loc: str) -> str:
    if loc in ("tenant", "project"):
        return "must be a DNS label (lowercase letters, digits, '-', at most 63) or *"
    if loc == "env":
        return "must be a DNS label (lowercase letters, digits, '-', at most 63); no wildcard"
    if loc.endswith("url"):
        return "must be a redis://, rediss:// or unix:// URL"
    if loc.endswith("bucket"):
        return "must be a GCS bucket name (lowercase letters, digits, '.', '_', '-')"
    return "does not match the required format"
