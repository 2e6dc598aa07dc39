"""Service routers declare the kinds they need; a dependency hands each request its backend.

``ServiceRouter(kinds=...)`` is an ``APIRouter`` that says which resource kinds its endpoints
use: the app's slots (and so ``/readyz``) cover exactly the union of the mounted routers' kinds.
``backend(kind, Port)`` is the only way an endpoint gets a port: it leases the (tenant, kind)
slot for the duration of the call, so a live switch never closes a backend under a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request

from engines.ports import Port
from engines.ports.errors import InvalidArgument
from engines.routing.catalog import ResourceKind

from ..manager import BackendSlots, TenantNotServed

__all__ = ["TENANT_HEADER", "ServiceRouter", "Tenant", "backend", "get_slots", "served_tenant"]

P = TypeVar("P", bound=Port)
TENANT_HEADER = "X-Tenant"


class ServiceRouter(APIRouter):
    """An ``APIRouter`` with the resource kinds its endpoints resolve."""

    def __init__(self, *, kinds: Iterable[ResourceKind], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kinds: frozenset[ResourceKind] = frozenset(ResourceKind(k) for k in kinds)


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


def backend(kind: ResourceKind, port: type[P]) -> Any:
    """``Annotated[DocumentStore, backend(K.SEO, DocumentStore)]``: the leased port of the kind."""

    async def lease_backend(request: Request, tenant: Tenant) -> AsyncIterator[P]:
        async with get_slots(request).lease(tenant, kind) as leased:
            if not isinstance(leased, port):  # the factory test makes this unreachable
                raise TypeError(f"{kind} backend is {type(leased).__name__}, not {port.__name__}")
            yield leased

    lease_backend.__name__ = f"lease_{kind.value}"
    return Depends(lease_backend, scope="function")
