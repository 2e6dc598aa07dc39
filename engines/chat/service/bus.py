"""HTTP: ``POST /chat/{topic}/messages`` publishes; ``GET /chat/{topic}/events`` streams (SSE).

Streams per pod are capped (``ENGINES_MAX_SSE_SUBSCRIBERS``, :mod:`engines.runtime.http.limits`).
A stream outlives single requests, so it holds its backend lease for as long as it runs; when the
``chat_bus`` entry switches backends the stream notices (``SlotLease.superseded``), re-subscribes on
the new backend and carries on, so the old bus drains instead of being held open until timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

from fastapi import Body, Request
from fastapi.responses import StreamingResponse

from engines.ports import MessageBus
from engines.ports.message_bus import check_topic
from engines.routing.catalog import ResourceKind
from engines.routing.errors import RoutingError
from engines.runtime.http import (
    ServiceRouter,
    SmokeRequest,
    Tenant,
    TopicName,
    backend,
    error_responses,
    get_slots,
)
from engines.runtime.http.limits import SubscriberCap, too_many_subscribers_response
from engines.runtime.manager import BackendSlots

__all__ = ["router"]

KIND = ResourceKind.CHAT_BUS
router = ServiceRouter(
    kinds=[KIND],
    prefix="/chat",
    tags=[KIND.value],
    smoke=SmokeRequest("POST", "/chat/probe/messages", {"probe": True}),
)
Bus = Annotated[MessageBus, backend(KIND, MessageBus)]


@router.post(
    "/{topic}/messages",
    status_code=202,
    summary="Publish a JSON message to the topic",
    responses=error_responses(400, 413),
)
async def publish(
    topic: TopicName, message: Annotated[dict[str, Any], Body()], bus: Bus
) -> dict[str, str]:
    await bus.publish(topic, message)
    return {"topic": topic, "status": "published"}


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _follow(slots: BackendSlots, tenant: str, topic: str) -> AsyncIterator[bytes]:
    """Messages of ``topic`` as SSE frames, across backend switches, until the client leaves."""
    while True:
        lease = slots.lease(tenant, KIND)
        try:
            bus = cast(MessageBus, await lease.__aenter__())
        except RoutingError as exc:
            yield _sse("error", {"error": type(exc).__name__, "detail": str(exc)})
            return
        try:
            async with await bus.subscribe(topic) as sub:
                yield _sse("subscribed", {"topic": topic, "backend": type(bus).__name__})
                superseded = asyncio.ensure_future(lease.superseded.wait())
                try:
                    while True:
                        nxt = asyncio.ensure_future(anext(sub))
                        await asyncio.wait({nxt, superseded}, return_when=asyncio.FIRST_COMPLETED)
                        if not nxt.done():
                            nxt.cancel()
                            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                                await nxt
                            break  # the backend was switched: re-subscribe on the new one
                        try:
                            message = nxt.result()
                        except StopAsyncIteration:
                            break  # the subscription ended (its bus closed): subscribe again
                        yield _sse("message", message)
                finally:
                    superseded.cancel()
        finally:
            await lease.__aexit__(None, None, None)


@router.get(
    "/{topic}/events",
    summary="Follow the topic as server-sent events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Events `subscribed`, then `message` (the JSON published), until the "
            "client leaves; `error` (an ErrorBody) if the kind's routing breaks meanwhile",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **too_many_subscribers_response(),
    },
)
async def events(topic: TopicName, request: Request, tenant: Tenant) -> StreamingResponse:
    slots = get_slots(request)
    check_topic(topic)  # refuse a bad topic with a status, not a broken stream
    slots.slot(tenant, KIND)
    cap: SubscriberCap = request.app.state.sse_subscribers
    return cap.stream(
        _follow(slots, tenant, topic),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )
