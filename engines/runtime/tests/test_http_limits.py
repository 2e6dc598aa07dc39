"""What one client can make a pod hold, and where the admin endpoints live, on a real uvicorn.

Covers: a body over ``ENGINES_MAX_BODY_BYTES`` gets 413 naming the limit and the setting —
refused from its ``Content-Length`` before a byte is sent, and a chunked body is answered 413
while the client is still sending it (the app stopped reading at the limit, nothing is stored);
a body at the limit is stored. ``ENGINES_MAX_SSE_SUBSCRIBERS`` streams at once: one more gets 503
with ``Retry-After``, and a slot frees when a subscriber disconnects. ``ENGINES_ADMIN_PORT``
moves ``/routing`` and ``/metrics`` to a second port of the same process (the app port answers
404 for both, SIGTERM still stops the process cleanly); a port in use stops start-up with an
error naming the variable; unset, both stay on the app port. Every error has the one error
schema, and 405 lists every method of the path in ``Allow``. The path-id patterns of the
OpenAPI document accept exactly what the ports accept.

Each app is a ``uvicorn --factory`` process routed from files to test-only backends: the limits
are the HTTP layer's, whatever the backend.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import free_port
from devstack.testing import ServedApp, metric_sum, served_app, wait_for
from engines.ports.base import check_key
from engines.ports.blob_store import check_blob_name
from engines.ports.errors import InvalidArgument
from engines.runtime.http.routers import BLOB_NAME_PATTERN, KEY_PATTERN

LIMIT = 64 * 1024
MAX_STREAMS = 2


def _ready(app: ServedApp) -> None:
    wait_for(
        lambda: httpx.get(f"{app.url}/readyz").status_code == 200,
        timeout=60,
        what=lambda: f"/readyz 200; log:\n{app.output()}",
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    env = {"ENGINES_MAX_BODY_BYTES": str(LIMIT), "ENGINES_MAX_SSE_SUBSCRIBERS": str(MAX_STREAMS)}
    with served_app(tmp_path_factory.mktemp("limits"), port=free_port(), env=env) as served:
        _ready(served)
        yield served


def _raw_response(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Read one HTTP/1.1 response with a Content-Length body from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body)


def _assert_too_large(status: int, body: dict[str, Any]) -> None:
    assert status == 413, body
    assert body["error"] == "ContentTooLarge" and body["limit"] == LIMIT
    assert str(LIMIT) in body["detail"] and "ENGINES_MAX_BODY_BYTES" in body["detail"]


def test_a_body_at_the_limit_is_stored(app: ServedApp) -> None:
    data = bytes(range(256)) * (LIMIT // 256)
    put = httpx.put(f"{app.url}/media-v2/blobs/exact", content=data)
    assert put.status_code == 200 and put.json()["size"] == LIMIT
    assert httpx.get(f"{app.url}/media-v2/blobs/exact").content == data


def test_a_declared_length_over_the_limit_is_refused_before_any_byte_is_sent(
    app: ServedApp,
) -> None:
    port = int(app.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"PUT /media-v2/blobs/declared HTTP/1.1\r\nHost: engines\r\n"
            b"Content-Type: application/octet-stream\r\n"
            + f"Content-Length: {LIMIT + 1}\r\n\r\n".encode()
        )
        status, headers, body = _raw_response(sock)  # no body byte was sent
    _assert_too_large(status, body)
    assert headers["connection"] == "close"
    assert httpx.get(f"{app.url}/media-v2/blobs/declared").status_code == 404


def test_a_chunked_body_is_cut_off_at_the_limit_while_the_client_still_sends(
    app: ServedApp,
) -> None:
    port = int(app.url.rsplit(":", 1)[1])
    chunk = b"x" * 8192
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"PUT /media-v2/blobs/streamed HTTP/1.1\r\nHost: engines\r\n"
            b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        while sent <= LIMIT:  # one chunk past the limit, and no final chunk: the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        # An app buffering the whole body would still be waiting for its end.
        status, _, body = _raw_response(sock)
        _assert_too_large(status, body)
        assert sock.recv(1) == b"", "the server must close the connection it stopped reading"
    assert httpx.get(f"{app.url}/media-v2/blobs/streamed").status_code == 404


def test_a_json_body_over_the_limit_is_refused(app: ServedApp) -> None:
    document = {"text": "y" * LIMIT}
    resp = httpx.put(f"{app.url}/seo/page", json=document)
    _assert_too_large(resp.status_code, resp.json())
    assert httpx.get(f"{app.url}/seo/page").status_code == 404


class _Stream:
    """An open event stream; its line iterator is kept, since dropping it closes the stream."""

    def __init__(self, client: httpx.Client) -> None:
        self.response = client.send(client.build_request("GET", "/chat/room/events"), stream=True)
        self.lines = self.response.iter_lines()

    def subscribed(self) -> bool:
        return self.response.status_code == 200 and any(
            line == "event: subscribed" for line in itertools.islice(self.lines, 4)
        )

    def close(self) -> None:
        self.response.close()


def test_streams_beyond_the_cap_get_503_until_a_subscriber_leaves(app: ServedApp) -> None:
    clients = [httpx.Client(base_url=app.url, timeout=10) for _ in range(MAX_STREAMS + 1)]
    streams: list[_Stream] = []
    try:
        for client in clients[:MAX_STREAMS]:
            streams.append(_Stream(client))
            assert streams[-1].subscribed()
        refused = clients[-1].get("/chat/room/events")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        body = refused.json()
        assert body["error"] == "TooManySubscribers"
        assert f"{MAX_STREAMS} event streams" in body["detail"]
        assert "ENGINES_MAX_SSE_SUBSCRIBERS" in body["detail"]
        metrics = httpx.get(f"{app.url}/metrics").text
        assert metric_sum(metrics, "engines_sse_subscribers") == MAX_STREAMS
        assert metric_sum(metrics, "engines_sse_subscribers_refused_total") >= 1

        # A subscriber of an idle topic disconnects: its slot frees, with no event to send.
        streams.pop().close()
        clients[MAX_STREAMS - 1].close()

        def admitted() -> bool:
            stream = _Stream(clients[-1])
            if stream.response.status_code != 200:
                stream.close()
                return False
            streams.append(stream)
            return stream.subscribed()

        wait_for(admitted, timeout=30, what="a stream admitted after one disconnected")
    finally:
        for stream in streams:
            stream.close()
        for client in clients:
            client.close()


def test_routing_and_metrics_stay_on_the_app_port_without_an_admin_port(app: ServedApp) -> None:
    assert httpx.get(f"{app.url}/routing").json()["entries"]
    assert "engines_backend_slot_ready" in httpx.get(f"{app.url}/metrics").text


def test_errors_share_one_schema_and_405_allows_every_method_of_the_path(
    app: ServedApp,
) -> None:
    not_allowed = httpx.post(f"{app.url}/seo/page")
    assert not_allowed.status_code == 405
    assert not_allowed.headers["allow"] == "DELETE, GET, PUT"
    assert not_allowed.json()["error"] == "MethodNotAllowed"
    unknown = httpx.get(f"{app.url}/no/such/path")
    assert unknown.status_code == 404 and unknown.json()["error"] == "NotFound"
    invalid = httpx.put(f"{app.url}/budget/b", json={"limit": "lots"})
    assert invalid.status_code == 422
    body = invalid.json()
    assert body["error"] == "ValidationError" and "body.limit" in body["detail"]
    assert body["problems"][0]["loc"] == ["body", "limit"]
    assert "lots" not in invalid.text  # the rule is named, the value is not echoed
    refused = httpx.get(f"{app.url}/seo", headers={"X-Tenant": "globex"})
    assert refused.status_code == 403 and refused.json()["error"] == "TenantNotServed"
    schema = httpx.get(f"{app.url}/openapi.json").json()
    assert "ErrorBody" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]


@pytest.fixture(scope="module")
def admin_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedApp, str]]:
    port, admin = free_port(), free_port()
    env = {"ENGINES_ADMIN_PORT": str(admin)}
    with served_app(tmp_path_factory.mktemp("admin"), port=port, env=env) as served:
        _ready(served)
        yield served, f"http://127.0.0.1:{admin}"


def test_the_admin_port_alone_serves_routing_and_metrics(
    admin_app: tuple[ServedApp, str],
) -> None:
    app, admin = admin_app
    for path in ("/routing", "/metrics"):
        resp = httpx.get(f"{app.url}{path}")
        assert resp.status_code == 404 and resp.json()["error"] == "NotFound", path
    entries = httpx.get(f"{admin}/routing").json()["entries"]
    assert {e["resource_kind"] for e in entries} >= {"seo", "chat_bus"}
    assert "engines_backend_slot_ready" in httpx.get(f"{admin}/metrics").text
    for path in ("/readyz", "/seo", "/openapi.json"):  # the admin port serves nothing else
        assert httpx.get(f"{admin}{path}").status_code == 404, path
    assert "/routing" not in httpx.get(f"{app.url}/openapi.json").json()["paths"]


def test_sigterm_stops_the_app_and_its_admin_port(tmp_path: Path) -> None:
    admin = free_port()
    with served_app(tmp_path, port=free_port(), env={"ENGINES_ADMIN_PORT": str(admin)}) as app:
        _ready(app)
        assert httpx.get(f"http://127.0.0.1:{admin}/routing").status_code == 200
        app.process.terminate()
        # uvicorn shuts down, then re-raises the SIGTERM it handled, as it does without us.
        assert app.process.wait(timeout=30) == -signal.SIGTERM, app.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{admin}/routing")
    output = app.output()
    assert "Application shutdown complete." in output and "Traceback" not in output


def test_an_admin_port_in_use_stops_startup_naming_the_setting(tmp_path: Path) -> None:
    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = taken.getsockname()[1]
        env = {"ENGINES_ADMIN_PORT": str(port)}
        with served_app(tmp_path, port=free_port(), env=env) as app:
            assert app.process.wait(timeout=60) != 0
    output = app.output()
    assert f"ENGINES_ADMIN_PORT={port}: cannot listen on port {port}" in output


@pytest.mark.parametrize(
    ("pattern", "check", "alphabet"),
    [
        (KEY_PATTERN, check_key, "a_./\x00é"),
        (BLOB_NAME_PATTERN, check_blob_name, "a._/\\\n"),
    ],
    ids=["key", "blob-name"],
)
def test_path_patterns_accept_exactly_what_the_ports_accept(
    pattern: str, check: Any, alphabet: str
) -> None:
    """Every string up to 6 characters over the characters each rule is about."""
    disagreements = []
    for n in range(1, 7):
        for chars in itertools.product(alphabet, repeat=n):
            name = "".join(chars)
            try:
                check(name)
                accepted = True
            except InvalidArgument:
                accepted = False
            if bool(re.fullmatch(pattern, name)) != accepted:
                disagreements.append(name)
    assert disagreements == []
