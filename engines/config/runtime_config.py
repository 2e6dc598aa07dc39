"""Runtime settings of an engines pod (§6), read once from the environment at start-up.

These settings say *where the routing registry is* and *which tenants this pod serves*; none of
them picks a storage backend — that is the registry's job. A missing or malformed setting is a
start-up error that names the variable and says how to fix it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["RoutingSource", "RuntimeConfig", "RuntimeConfigError", "load_runtime_config"]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class RoutingSource(StrEnum):
    FIRESTORE = "firestore"
    FILES = "files"


class RuntimeConfigError(ValueError):
    """A start-up setting is missing or invalid; the message names the variable."""


class RuntimeConfig(BaseSettings):
    """Settings read from ``ENGINES_*`` (and the Google client's own variables)."""

    model_config = SettingsConfigDict(env_prefix="ENGINES_", extra="ignore", frozen=True)

    env: Annotated[str, Field(pattern=_DNS_LABEL)]
    """Environment served (``ENGINES_ENV``, required); never a wildcard."""

    tenants: Annotated[tuple[str, ...], NoDecode] = ()
    """Tenants served (``ENGINES_TENANTS``, comma list, required, at least one)."""

    project: Annotated[str, Field(pattern=r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$")] = "*"
    """Project served (``ENGINES_PROJECT``), ``*`` by default."""

    routing_source: RoutingSource = RoutingSource.FIRESTORE
    """Where routing entries come from (``ENGINES_ROUTING_SOURCE``): firestore or files."""

    routing_dir: Annotated[tuple[Path, ...], NoDecode] = (Path("/etc/engines/routing"),)
    """Mounted ConfigMap directories (``ENGINES_ROUTING_DIR``; comma list) for source=files."""

    routing_collection: Annotated[str, Field(min_length=1)] = "routing_entries"
    """Firestore collection of routing entries (``ENGINES_ROUTING_COLLECTION``)."""

    allow_test_backends: bool = False
    """``ENGINES_ALLOW_TEST_BACKENDS=1``: the only way memory/noop/local backends are built.

    Exactly ``1`` enables and ``0`` (or unset) disables; anything else (``true``, ``yes``...) is
    a start-up error, so a typo can never switch test-only backends on (or silently off)."""

    strict_startup: bool = False
    """``ENGINES_STRICT_STARTUP=1``: refuse to start while any mounted kind is missing.

    Same spelling as ``ENGINES_ALLOW_TEST_BACKENDS``: ``1`` or ``0``/unset, nothing else."""

    admin_port: Annotated[int | None, Field(ge=1, le=65535)] = None
    """``ENGINES_ADMIN_PORT``: serve ``/routing`` and ``/metrics`` on this port only.

    Unset (the default), both stay on the app port. Set, the same process listens on this port
    (all interfaces) for them, and the app port answers 404 for both: the routing table and the
    metrics stay off the public Service, which exposes only the app port. A port that cannot be
    bound stops start-up with an error naming this variable."""

    max_body_bytes: Annotated[int, Field(ge=1)] = 8 * 1024 * 1024
    """``ENGINES_MAX_BODY_BYTES``: the largest request body accepted (default 8388608, 8 MiB).

    A larger body gets 413 ``ContentTooLarge`` naming the limit: refused from its
    ``Content-Length`` before any byte is read, or, for a chunked body, as soon as the bytes
    received pass the limit (the rest is never read)."""

    max_sse_subscribers: Annotated[int, Field(ge=1)] = 256
    """``ENGINES_MAX_SSE_SUBSCRIBERS``: server-sent-event streams open at once in this pod.

    A stream beyond the cap gets 503 ``TooManySubscribers`` with ``Retry-After``; a slot frees
    as soon as a subscriber disconnects (default 256)."""

    @field_validator("tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("routing_dir", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(p.strip()) for p in value.split(",") if p.strip())
        return value

    @field_validator("allow_test_backends", "strict_startup", mode="before")
    @classmethod
    def _one_or_zero(cls, value: object) -> object:
        # Python callers pass a bool; the environment must say exactly 1 or 0.
        if isinstance(value, bool):
            return value
        if value in ("1", 1):
            return True
        if value in ("0", 0):
            return False
        raise ValueError(f"must be 1 (on) or 0 (off), got {value!r}")

    @field_validator("tenants")
    @classmethod
    def _check_tenants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import re

        if not value:
            raise ValueError("at least one tenant is required")
        bad = [t for t in value if not re.fullmatch(_DNS_LABEL, t)]
        if bad:
            raise ValueError(f"tenants must be DNS labels (no wildcard); invalid: {bad}")
        return value

    @model_validator(mode="after")
    def _check_source(self) -> RuntimeConfig:
        if self.routing_source is RoutingSource.FILES and not self.routing_dir:
            raise ValueError(
                "ENGINES_ROUTING_DIR names no directory but ENGINES_ROUTING_SOURCE=files; set "
                "ENGINES_ROUTING_DIR to the mounted routing ConfigMap directories (comma list)"
            )
        return self


def load_runtime_config() -> RuntimeConfig:
    """Read the environment; raise ``RuntimeConfigError`` naming each bad variable."""
    try:
        return RuntimeConfig()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a check across settings: its message names the variables
                problems.append(message)
                continue
            var = "ENGINES_" + "_".join(str(p) for p in err["loc"]).upper()
            if err["type"] == "missing":
                problems.append(f"{var} is required but not set")
            else:
                problems.append(f"{var}: {message}")
        raise RuntimeConfigError(
            "invalid engines runtime settings: " + "; ".join(problems)
        ) from exc
