"""The RoutingEntry custom resource as pydantic models: the single schema of the project.

The CRD YAML (``crds/``) is generated from these models by ``engines.routing.crd``; the operator
validates every object it reconciles with them; ``routingctl validate`` uses them offline. The
rules that the API server enforces with CEL are the same rules ``RoutingEntrySpec`` enforces in
Python, with the same messages (both are built from :data:`RULES`).

A ``RoutingRecord`` is what travels at run time: the identity key, the backend, its validated
settings and the provenance, in the shape of the Firestore document / ConfigMap value (§5).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .catalog import (
    BACKEND_SETTINGS,
    CATALOG,
    TEST_ONLY_BACKENDS,
    Backend,
    FirestoreSettings,
    GcsSettings,
    LocalSettings,
    MemorySettings,
    NoopSettings,
    RedisSettings,
    ResourceKind,
    Settings,
)
from .contract import GROUP_VERSION, SCHEMA_VERSION, RoutingKey, canonical_json
from .errors import InvalidRouting

__all__ = [
    "RULES",
    "Condition",
    "RoutingEntry",
    "RoutingEntrySpec",
    "RoutingEntryStatus",
    "RoutingRecord",
    "SecretRef",
    "Source",
    "format_validation_error",
    "parse_spec",
    "rule_violations",
    "spec_problems",
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_LABEL_OR_WILDCARD = r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$"
SETTINGS_FIELDS: tuple[str, ...] = tuple(b.value for b in BACKEND_SETTINGS)


class _RuleViolation(ValueError):
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

TenantName = Annotated[
    str,
    Field(
        max_length=63,
        pattern=DNS_LABEL_OR_WILDCARD,
        description="Tenant this entry applies to: a DNS label, or * for every tenant.",
        json_schema_extra={"x-immutable": True},
    ),
]
EnvName = Annotated[
    str,
    Field(
        max_length=63,
        pattern=DNS_LABEL,
        description="Environment (prod, staging, test...): a DNS label, never a wildcard.",
        json_schema_extra={"x-immutable": True},
    ),
]
ProjectName = Annotated[
    str,
    Field(
        max_length=63,
        pattern=DNS_LABEL_OR_WILDCARD,
        description="Project within the tenant: a DNS label, or * (default) for every project.",
        json_schema_extra={"x-immutable": True},
    ),
]


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
SECRET_NAME_MESSAGE = (
    "name must be a Secret name: a DNS subdomain (lowercase letters, digits, '-' and '.', "
    "at most 253, starting and ending with a letter or digit)"
)
SECRET_KEY_MESSAGE = (
    "key must be a key of the Secret: letters, digits, '-', '_' and '.' only (no '/'), "
    "not . and not starting with .. (Kubernetes' own rule for Secret keys)"
)


def _secret_name_ok(name: str) -> bool:
    return len(name) <= 253 and re.match(DNS_SUBDOMAIN, name) is not None


def _secret_key_ok(key: str) -> bool:
    return (
        len(key) <= 253
        and re.match(SECRET_KEY, key) is not None
        and key != "."
        and not key.startswith("..")
    )


def secret_ref_violation(name: str, key: str) -> tuple[str, str] | None:
    """(field, rule) of the first rule a ``secretRef`` breaks; the values are never echoed."""
    if not _secret_name_ok(name):
        return "name", SECRET_NAME_MESSAGE
    if not _secret_key_ok(key):
        return "key", SECRET_KEY_MESSAGE
    return None


class SecretRef(BaseModel):
    """A key of a Secret in the entry's namespace; its value never leaves Kubernetes.

    Both parts become a path under the pod's secrets root (``{root}/{name}/{key}``), so they are
    held to the API server's own rules for Secret names and keys: no ``/``, no ``.``/``..``.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.name.matches('{DNS_SUBDOMAIN}')",
                    "message": SECRET_NAME_MESSAGE,
                    "fieldPath": ".name",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": (
                        f"self.key.matches('{SECRET_KEY}') && self.key != '.' "
                        "&& !self.key.startsWith('..')"
                    ),
                    "message": SECRET_KEY_MESSAGE,
                    "fieldPath": ".key",
                    "reason": "FieldValueInvalid",
                },
            ]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=253, description="Secret name.")]
    key: Annotated[str, Field(min_length=1, max_length=253, description="Key in the Secret.")]

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not _secret_name_ok(name):
            raise ValueError(SECRET_NAME_MESSAGE)
        return name

    @field_validator("key")
    @classmethod
    def _safe_key(cls, key: str) -> str:
        if not _secret_key_ok(key):
            raise ValueError(SECRET_KEY_MESSAGE)
        return key


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


def _raw_rule_violations(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
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


class RoutingEntrySpec(BaseModel):
    """Which backend one (tenant, env, project, resourceKind) uses, with its typed settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tenant: TenantName
    env: EnvName
    project: ProjectName = "*"
    resource_kind: Annotated[
        ResourceKind,
        Field(
            alias="resourceKind",
            description="The resource kind (see the catalog).",
            json_schema_extra={"x-immutable": True},
        ),
    ]
    backend: Annotated[Backend, Field(description="Backend for this kind; allowed per kind.")]
    firestore: FirestoreSettings | None = None
    redis: RedisSettings | None = None
    gcs: GcsSettings | None = None
    memory: MemorySettings | None = None
    local: LocalSettings | None = None
    noop: NoopSettings | None = None
    secret_ref: Annotated[
        SecretRef | None,
        Field(alias="secretRef", description="Credentials for the backend, kept in a Secret."),
    ] = None

    @model_validator(mode="after")
    def _check_rules(self) -> RoutingEntrySpec:
        set_fields = [f for f in SETTINGS_FIELDS if getattr(self, f) is not None]
        violations = rule_violations(self.resource_kind, self.backend, self.env, set_fields)
        if violations:
            raise _RuleViolation(*violations[0])
        return self

    @property
    def key(self) -> RoutingKey:
        return RoutingKey(self.env, self.tenant, self.project, self.resource_kind.value)

    @property
    def settings(self) -> Settings:
        value = getattr(self, self.backend.value)
        assert value is not None  # guaranteed by _check_rules
        return value  # type: ignore[no-any-return]

    def config(self) -> dict[str, Any]:
        """The backend settings as plain JSON (defaults filled, unset optionals omitted)."""
        return self.settings.model_dump(mode="json", exclude_none=True)

    def revision(self) -> str:
        """sha256 of the canonical JSON of backend + config + secretRef name and key.

        The key counts: pointing at another key of the same Secret is another credential, so the
        backend must be rebuilt.
        """
        ref = self.secret_ref
        payload = {
            "backend": self.backend.value,
            "config": self.config(),
            "secretRef": {"name": ref.name, "key": ref.key} if ref else None,
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(BaseModel):
    """metav1.Condition."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: str
    status: ConditionStatus
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: Annotated[str, Field(alias="lastTransitionTime")]
    observed_generation: Annotated[int | None, Field(alias="observedGeneration")] = None


class FirestoreStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    document: str
    synced_at: Annotated[str | None, Field(alias="syncedAt")] = None


class ConfigMapStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    key: str


class RoutingEntryStatus(BaseModel):
    """What the operator last did with the entry."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    observed_generation: Annotated[int | None, Field(alias="observedGeneration")] = None
    revision: str | None = None
    firestore: FirestoreStatus | None = None
    config_map: Annotated[ConfigMapStatus | None, Field(alias="configMap")] = None
    conditions: list[Condition] = Field(default_factory=list)


class RoutingEntry(BaseModel):
    """The whole custom resource (metadata kept loose: the API server owns it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Annotated[str, Field(alias="apiVersion")] = GROUP_VERSION
    kind: Literal["RoutingEntry"] = "RoutingEntry"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RoutingEntrySpec
    status: RoutingEntryStatus | None = None


def _describe(err: Any) -> tuple[str, str]:
    """(dotted location, human message) for one pydantic error."""
    loc = ".".join(str(p) for p in err["loc"])
    violation = err.get("ctx", {}).get("error")
    if isinstance(violation, _RuleViolation):
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


def _clause(prefix: str, loc: str, msg: str) -> str:
    return f"{prefix}.{loc}: {msg}" if loc else f"{prefix}: {msg}"


def format_validation_error(exc: ValidationError, *, prefix: str = "spec") -> str:
    """One clause per problem, ``spec.field.path: message`` (pydantic noise removed)."""
    return "; ".join(_clause(prefix, *_describe(err)) for err in exc.errors())


def spec_problems(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a CR ``spec`` as (dotted field under spec, message); [] when valid.

    pydantic stops at the field errors and never runs the cross-field rules then; the API server
    evaluates its CEL rules anyway. So the field errors come from the model and every rule is
    judged again on the raw values (:func:`_raw_rule_violations`): one pass shows it all.
    """
    try:
        RoutingEntrySpec.model_validate(dict(spec))
    except ValidationError as exc:
        found: list[tuple[str, str]] = []
        for err in exc.errors():
            if err["loc"] == () and isinstance(err.get("ctx", {}).get("error"), _RuleViolation):
                continue  # a cross-field rule: all of them are listed below
            found.append(_describe(err))
        found += _raw_rule_violations(spec)
        return list(dict.fromkeys(found))
    return []


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


def parse_spec(spec: Mapping[str, Any]) -> RoutingEntrySpec:
    """Validate a CR ``spec`` (camelCase keys); raise ``InvalidRouting`` naming field and fix."""
    try:
        return RoutingEntrySpec.model_validate(dict(spec))
    except ValidationError:
        problems = spec_problems(spec)
    # ``from None``: pydantic's own rendering repeats the input, which may hold a credential.
    raise InvalidRouting("; ".join(_clause("spec", loc, msg) for loc, msg in problems)) from None


class Source(BaseModel):
    """Which RoutingEntry a projection came from, and in which cluster (§5).

    Unknown keys are ignored, not refused: readers run older code than the operator during an
    upgrade, and a field a newer operator adds must not make every document unreadable."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    cluster: str | None = None
    """The writing operator's cluster identity (``--cluster-id``); None in documents written
    before clusters were told apart."""
    namespace: str
    name: str
    uid: str


class RoutingRecord(BaseModel):
    """A resolved routing entry as stored in Firestore and ConfigMaps (§5), minus server fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant: str
    env: str
    project: str
    resource_kind: ResourceKind
    backend: Backend
    config: dict[str, Any]
    secret_ref: SecretRef | None = None
    revision: str
    generation: int = 0
    source: Source | None = None
    schema_version: int = SCHEMA_VERSION

    @model_validator(mode="after")
    def _check(self) -> RoutingRecord:
        # The CR's rules, phrased for the stored shape (``config`` instead of ``spec.<backend>``).
        kind = CATALOG[self.resource_kind]
        if self.backend not in kind.allowed:
            raise _RuleViolation(
                "backend",
                f"backend {self.backend.value} is not allowed for resource_kind "
                f"{self.resource_kind.value}; allowed: " + ", ".join(b.value for b in kind.allowed),
            )
        try:
            BACKEND_SETTINGS[self.backend].model_validate(self.config)
        except ValidationError as exc:
            loc, msg = _describe(exc.errors()[0])
            raise _RuleViolation(f"config.{loc}" if loc else "config", msg) from exc
        if self.backend in TEST_ONLY_BACKENDS and self.env != "test":
            raise _RuleViolation(
                "backend",
                f"backend {self.backend.value} is test-only and allowed only when env is test "
                f"(env is {self.env})",
            )
        return self

    @property
    def key(self) -> RoutingKey:
        return RoutingKey(self.env, self.tenant, self.project, self.resource_kind.value)

    @classmethod
    def from_spec(
        cls, spec: RoutingEntrySpec, *, generation: int = 0, source: Source | None = None
    ) -> RoutingRecord:
        return cls(
            tenant=spec.tenant,
            env=spec.env,
            project=spec.project,
            resource_kind=spec.resource_kind,
            backend=spec.backend,
            config=spec.config(),
            secret_ref=spec.secret_ref,
            revision=spec.revision(),
            generation=generation,
            source=source,
        )

    @classmethod
    def from_document(cls, data: Mapping[str, Any]) -> RoutingRecord:
        """Parse a Firestore document / ConfigMap value; raises ``InvalidRouting``."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            message = format_validation_error(exc, prefix="document")
        raise InvalidRouting(message) from None

    def to_document(self) -> dict[str, Any]:
        """The §5 document without server fields (``updated_at`` is added by the writer)."""
        return self.model_dump(mode="json")
