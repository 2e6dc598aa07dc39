"""Per-pod limits on what one client can make the app hold: body bytes and open SSE streams.

A blob PUT reads its body into memory, and each server-sent-event stream holds a backend lease
and a subscription for as long as the client stays. Without a bound, one client (or a handful)
can exhaust a pod that serves every tenant. So:

- a body over ``ENGINES_MAX_BODY_BYTES`` gets 413 ``ContentTooLarge`` from :class:`BodyLimit`:
  a ``Content-Length`` over the limit before the app runs (no byte is read), a chunked body at
  the first chunk past the limit. Nothing past the limit is ever buffered. (FastAPI's own
  ``max_body_size`` answers a declared length in plain text, outside the app's error schema.)
- :class:`SubscriberCap` counts the open streams; one beyond ``ENGINES_MAX_SSE_SUBSCRIBERS`` gets
  503 ``TooManySubscribers`` with ``Retry-After``, and a slot frees when its client disconnects.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Any

from prometheus_client import Counter, Gauge
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ErrorBody, HTTPError, too_large_detail

__all__ = [
    "BODIES_REFUSED",
    "SSE_REFUSED",
    "SSE_RETRY_AFTER_S",
    "SSE_SUBSCRIBERS",
    "BodyLimit",
    "SubscriberCap",
    "too_many_subscribers_response",
]

SSE_RETRY_AFTER_S = 5
"""``Retry-After`` of a refused stream: streams end as clients leave, so a slot frees soon."""

BODIES_REFUSED = Counter(
    "engines_request_bodies_refused_total",
    "Requests refused with 413 because the body was over ENGINES_MAX_BODY_BYTES",
)
SSE_SUBSCRIBERS = Gauge("engines_sse_subscribers", "Server-sent-event streams open in this process")
SSE_REFUSED = Counter(
    "engines_sse_subscribers_refused_total",
    "Server-sent-event streams refused with 503 because ENGINES_MAX_SSE_SUBSCRIBERS were open",
)


class BodyLimit:
    """413 for a body over ``max_body_bytes``, never reading past the limit.

    A ``Content-Length`` over the limit is answered before the app runs. Otherwise the bytes
    the app receives are counted, and the read that passes the limit raises 413 instead of
    returning them: the endpoint (or FastAPI's body parsing) stops there, and the rest of the
    body is never read; the server then closes the connection.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> HTTPError:
        BODIES_REFUSED.inc()
        return HTTPError(
            413,
            "ContentTooLarge",
            too_large_detail(self.max_body_bytes),
            headers={"Connection": "close"},  # the unread rest of the body is still on the wire
            limit=self.max_body_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            error = self._too_large()
            body = {"error": error.error, "detail": error.detail, **error.fields}
            await JSONResponse(body, status_code=413, headers=error.headers)(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, receive_within_limit, send)


class SubscriberCap:
    """At most ``limit`` streams open at once; :meth:`stream` wraps one and frees its slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def stream(self, content: AsyncIterable[bytes], **kwargs: Any) -> StreamingResponse:
        """A streaming response holding one slot until it ends, however it ends.

        Raises 503 ``TooManySubscribers`` (with ``Retry-After``) when every slot is taken.
        """
        if self.active >= self.limit:
            SSE_REFUSED.inc()
            raise HTTPError(
                503,
                "TooManySubscribers",
                f"this pod already serves {self.limit} event streams, its limit "
                f"(ENGINES_MAX_SSE_SUBSCRIBERS); retry after {SSE_RETRY_AFTER_S}s, "
                "possibly on another pod",
                headers={"Retry-After": str(SSE_RETRY_AFTER_S)},
            )
        self.active += 1
        SSE_SUBSCRIBERS.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active -= 1
                SSE_SUBSCRIBERS.dec()

        return _SlotStream(content, release=release, **kwargs)


class _SlotStream(StreamingResponse):
    def __init__(
        self, content: AsyncIterable[bytes], *, release: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # the client left, the stream ended, or the server shut down
            self._release()


def too_many_subscribers_response() -> dict[int | str, dict[str, Any]]:
    """OpenAPI for the 503 of a refused stream (schema, ``Retry-After``)."""
    return {
        503: {
            "model": ErrorBody,
            "description": "TooManySubscribers: ENGINES_MAX_SSE_SUBSCRIBERS streams are open in "
            "this pod (retry after Retry-After seconds), or BackendUnavailable",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying (TooManySubscribers only)",
                    "schema": {"type": "integer"},
                }
            },
        }
    }
