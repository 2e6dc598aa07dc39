"""Service routers declare the kinds they need; a dependency hands each request its backend.

``ServiceRouter(kinds=...)`` is an ``APIRouter`` that says which resource kinds its endpoints
use: the app's slots (and so ``/readyz``) cover exactly the union of the mounted routers' kinds.
``backend(kind, Port)`` is the only way an endpoint gets a port: it leases the (tenant, kind)
slot for the duration of the call, so a live switch never closes a backend under a request.
A router also declares its :class:`SmokeRequest`: one harmless request any working backend of its
kinds answers with 2xx, so checks that walk every kind learn it from the service itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request

from engines.ports import Port
from engines.ports.errors import InvalidArgument
from engines.routing.catalog import ResourceKind

from ..manager import BackendSlots, TenantNotServed
from .errors import error_responses

__all__ = [
    "BLOB_NAME_PATTERN",
    "KEY_PATTERN",
    "TENANT_HEADER",
    "BlobName",
    "BlobPrefix",
    "Key",
    "KeyQuery",
    "ServiceRouter",
    "SmokeRequest",
    "Tenant",
    "TopicName",
    "backend",
    "complete_openapi",
    "get_slots",
    "json_integer",
    "served_tenant",
]

P = TypeVar("P", bound=Port)
TENANT_HEADER = "X-Tenant"


_C = r"[^/\x00]"  # a key character: anything but '/' and NUL
KEY_PATTERN = (
    # check_key's rule without lookarounds (JSON Schema and test generators lack them): not
    # '.', '..' or __x__ (a name wrapped in double underscores, reserved by Firestore).
    rf"^(?:[^/\x00_.]{_C}*|\.[^/\x00.]{_C}*|\.\.{_C}+|_|_[^/\x00_]{_C}*|__|___"
    rf"|__{_C}*[^/\x00_]_?)$"
)
MAX_KEY_CHARS = 100
"""Ids in paths: 100 characters fit the ports' 500-byte key limit with room for suffixes."""

Key = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_KEY_CHARS,
        pattern=KEY_PATTERN,
        description=f"1..{MAX_KEY_CHARS} characters, no '/' or NUL; not '.', '..' or __x__",
    ),
]
"""A document id, flag, metric, lock or member name in a path."""

KeyQuery = Query(
    min_length=1,
    max_length=MAX_KEY_CHARS,
    pattern=KEY_PATTERN,
    description=f"An id: 1..{MAX_KEY_CHARS} characters, no '/' or NUL; not '.', '..' or __x__",
)
"""A document id in a query parameter (``start_after``): the rule of :data:`Key`."""

_S = r"[^/\x00\r\n\\]"  # a blob name character inside a segment
_SEGMENT = rf"(?:[^/\x00\r\n\\.]{_S}*|\.[^/\x00\r\n\\.]{_S}*|\.\.{_S}+)"
BLOB_NAME_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
"""``check_blob_name``'s rule: '/'-separated segments, none empty, '.' or '..'."""
MAX_BLOB_NAME_CHARS = 256
"""Blob names: 256 characters always fit the blob ports' 1024-byte name limit."""

BlobName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_BLOB_NAME_CHARS,
        pattern=BLOB_NAME_PATTERN,
        description="'/'-separated non-empty segments, none '.' or '..'; no backslash, CR, LF "
        f"or NUL; at most {MAX_BLOB_NAME_CHARS} characters",
    ),
]

BlobPrefix = Annotated[
    str,
    Query(
        max_length=MAX_BLOB_NAME_CHARS,
        pattern=r"^[^\x00\r\n\\]*$",
        description="Names starting with this; no backslash, CR, LF or NUL",
    ),
]

TopicName = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="[A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 characters",
    ),
]


_UNROUTED = {
    "description": "NotFound: the item does not exist, or a path parameter holds a character "
    "no route takes ('/', a line break)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def json_integer(value: object) -> object:
    """``BeforeValidator`` of a JSON-body integer: 3 and 3.0 as JSON Schema's ``integer``.

    Never ``true`` or ``"3"``, which pydantic's lax int accepts. Place it after the field's
    constraints (``Annotated[int, Field(ge=1), BeforeValidator(json_integer)]``) so that the
    schema keeps them.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be a whole number")
    return int(value)


@dataclass(frozen=True)
class SmokeRequest:
    """A request that any working backend of the router's kinds answers with 2xx, and that
    leaves nothing behind a test would trip over (a read, or a write to a name of its own)."""

    method: str
    path: str
    """The full path, prefix included."""
    json: Any = None


class ServiceRouter(APIRouter):
    """An ``APIRouter`` with the resource kinds its endpoints resolve.

    Every endpoint of a service leases a backend, so each documents what that can answer besides
    its own statuses: 403 (tenant not served), 422 (invalid request), 500 (routing missing or
    invalid) and 503 (backend unreachable), all with the app's one error schema.
    """

    def __init__(
        self, *, kinds: Iterable[ResourceKind], smoke: SmokeRequest | None = None, **kwargs: Any
    ) -> None:
        kwargs["responses"] = {**error_responses(403, 422, 500, 503), **kwargs.get("responses", {})}
        super().__init__(**kwargs)
        self.kinds: frozenset[ResourceKind] = frozenset(ResourceKind(k) for k in kinds)
        self.smoke = smoke


def get_slots(request: Request) -> BackendSlots:
    slots: BackendSlots = request.app.state.slots
    return slots


async def served_tenant(
    request: Request,
    x_tenant: Annotated[str | None, Header(alias=TENANT_HEADER)] = None,
) -> str:
    """The tenant of the request (``X-Tenant``); refused unless this pod serves it.

    A pod serving a single tenant accepts requests without the header.
    """
    slots = get_slots(request)
    if x_tenant is None:
        if len(slots.tenants) == 1:
            return slots.tenants[0]
        raise InvalidArgument(
            f"the {TENANT_HEADER} header is required; served tenants: {', '.join(slots.tenants)}"
        )
    if not slots.serves(x_tenant):
        raise TenantNotServed(x_tenant, slots.tenants)
    return x_tenant


Tenant = Annotated[str, Depends(served_tenant)]


def complete_openapi(app: FastAPI, tenants: Sequence[str]) -> None:
    """Make the OpenAPI document say which ``X-Tenant`` values this pod takes, and the 404s.

    The header's schema lists the served tenants (another gets 403) and is required unless the
    pod serves a single tenant, which is then the default. Every operation with a path
    parameter documents 404: a value holding '/' (or a line break, in a blob name) makes the
    path match no route.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for operation in (op for path in build()["paths"].values() for op in path.values()):
                params = operation.get("parameters", ())
                if any(p["in"] == "path" for p in params):
                    operation["responses"].setdefault("404", _UNROUTED)
                for param in params:
                    if param["in"] == "header" and param["name"].lower() == TENANT_HEADER.lower():
                        param["required"] = len(tenants) > 1
                        param["schema"] = {"type": "string", "enum": list(tenants)}
                        param["description"] = (
                            "The tenant of the request: one this pod serves (ENGINES_TENANTS); "
                            "optional when the pod serves a single tenant"
                        )
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def backend(kind: ResourceKind, port: type[P]) -> Any:
    """``Annotated[DocumentStore, backend(K.SEO, DocumentStore)]``: the leased port of the kind."""

    async def lease_backend(request: Request, tenant: Tenant) -> AsyncIterator[P]:
        async with get_slots(request).lease(tenant, kind) as leased:
            if not isinstance(leased, port):  # the factory test makes this unreachable
                raise TypeError(f"{kind} backend is {type(leased).__name__}, not {port.__name__}")
            yield leased

    lease_backend.__name__ = f"lease_{kind.value}"
    return Depends(lease_backend, scope="function")
