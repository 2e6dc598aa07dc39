"""The RoutingEntry custom resource as pydantic models: the single schema of the project.

The CRD YAML (``crds/``) is generated from these models by ``engines.routing.crd``; the operator
validates every object it reconciles with them; ``routingctl validate`` uses them offline. The
rules that the API server enforces with CEL are the same rules ``RoutingEntrySpec`` enforces in
Python, with the same messages (both are built from :data:`engines.routing.rules.RULES`).

A ``RoutingRecord`` is what travels at run time: the identity key, the backend, its validated
settings and the provenance, in the shape of the Firestore document / ConfigMap value (§5).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
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
from .rules import (
    DNS_LABEL,
    DNS_LABEL_OR_WILDCARD,
    SETTINGS_FIELDS,
    RuleViolation,
    clause,
    describe,
    format_validation_error,
    raw_rule_violations,
    rule_violations,
)

__all__ = [
    "Condition",
    "RoutingEntry",
    "RoutingEntrySpec",
    "RoutingEntryStatus",
    "RoutingRecord",
    "SecretRef",
    "Source",
    "parse_spec",
    "secret_ref_violation",
    "spec_problems",
]


def _identity_part(pattern: str, description: str) -> Any:
    """A part of the entry's identity: a DNS label (or ``pattern``), fixed once created."""
    return Field(
        max_length=63,
        pattern=pattern,
        description=description,
        json_schema_extra={"x-immutable": True},
    )


TenantName = Annotated[
    str,
    _identity_part(
        DNS_LABEL_OR_WILDCARD, "Tenant this entry applies to: a DNS label, or * for every tenant."
    ),
]
EnvName = Annotated[
    str,
    _identity_part(
        DNS_LABEL, "Environment (prod, staging, test...): a DNS label, never a wildcard."
    ),
]
ProjectName = Annotated[
    str,
    _identity_part(
        DNS_LABEL_OR_WILDCARD,
        "Project within the tenant: a DNS label, or * (default) for every project.",
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
            raise RuleViolation(*violations[0])
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


def spec_problems(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a CR ``spec`` as (dotted field under spec, message); [] when valid.

    pydantic stops at the field errors and never runs the cross-field rules then; the API server
    evaluates its CEL rules anyway. So the field errors come from the model and every rule is
    judged again on the raw values (:func:`raw_rule_violations`): one pass shows it all.
    """
    try:
        RoutingEntrySpec.model_validate(dict(spec))
    except ValidationError as exc:
        found: list[tuple[str, str]] = []
        for err in exc.errors():
            if err["loc"] == () and isinstance(err.get("ctx", {}).get("error"), RuleViolation):
                continue  # a cross-field rule: all of them are listed below
            found.append(describe(err))
        found += raw_rule_violations(spec)
        return list(dict.fromkeys(found))
    return []


def parse_spec(spec: Mapping[str, Any]) -> RoutingEntrySpec:
    """Validate a CR ``spec`` (camelCase keys); raise ``InvalidRouting`` naming field and fix."""
    try:
        return RoutingEntrySpec.model_validate(dict(spec))
    except ValidationError:
        problems = spec_problems(spec)
    # ``from None``: pydantic's own rendering repeats the input, which may hold a credential.
    raise InvalidRouting("; ".join(clause("spec", loc, msg) for loc, msg in problems)) from None


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
            raise RuleViolation(
                "backend",
                f"backend {self.backend.value} is not allowed for resource_kind "
                f"{self.resource_kind.value}; allowed: " + ", ".join(b.value for b in kind.allowed),
            )
        try:
            BACKEND_SETTINGS[self.backend].model_validate(self.config)
        except ValidationError as exc:
            loc, msg = describe(exc.errors()[0])
            raise RuleViolation(f"config.{loc}" if loc else "config", msg) from exc
        if self.backend in TEST_ONLY_BACKENDS and self.env != "test":
            raise RuleViolation(
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
