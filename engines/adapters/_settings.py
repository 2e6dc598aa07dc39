"""Parse a backend's settings once, at construction, into its typed model from the catalog.

A missing or wrong field becomes ``InvalidRouting`` whose ``field`` names it as the user wrote it
in the RoutingEntry (``redis.url``, ``gcs.bucket``...), so the failure happens when the backend is
built — never at the first request, and never papered over by a default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from engines.routing.catalog import BACKEND_SETTINGS, Backend
from engines.routing.errors import InvalidRouting

__all__ = ["from_json", "parse_settings", "to_json"]

S = TypeVar("S", bound=BaseModel)


def parse_settings(backend: Backend, model: type[S], config: Mapping[str, Any] | S) -> S:
    if isinstance(config, model):
        return config
    assert BACKEND_SETTINGS[backend] is model, (backend, model)
    if not isinstance(config, Mapping):
        raise InvalidRouting(
            f"settings must be an object, got {type(config).__name__}", field=backend.value
        )
    try:
        return model.model_validate(dict(config))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join([backend.value, *(str(p) for p in err["loc"])])
        if err["type"] == "missing":
            msg = f"required setting is missing (no default: set {field} in the RoutingEntry)"
        elif err["type"] == "extra_forbidden":
            msg = "unknown setting; remove it"
        elif field.endswith("url"):  # never echo a URL: it may carry a password
            msg = f"{err['msg']} (expected redis://, rediss:// or unix://)"
        else:
            msg = f"{err['msg']} (got {err.get('input')!r})"
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise InvalidRouting(msg, field=field) from exc


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def from_json(raw: str | bytes) -> Any:
    return json.loads(raw)
