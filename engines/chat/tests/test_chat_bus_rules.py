"""The chat bus delivers what is published to a topic to that topic's followers, as server-sent
events (``subscribed`` first, then one ``message`` per publish), and refuses a topic name the bus
cannot hold before any stream opens.

Covers the service's own rules through a served app (``uvicorn --factory``, a real socket: an
event stream needs one) on the in-process ``memory`` bus, the reference adapter of the message
bus conformance suite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import free_port
from devstack.testing import ServedApp, served_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ServedApp]:
    with served_app(tmp_path, port=free_port()) as served:
        assert served.process.poll() is None, served.output()
        yield served


def _next_event(lines: Iterator[str]) -> tuple[str, object]:
    event, data = "", None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
        elif not line and event:
            return event, data
    raise AssertionError("the event stream ended")


def test_followers_of_a_topic_receive_what_is_published_to_it(app: ServedApp) -> None:
    with (
        httpx.Client(base_url=app.url, timeout=10) as client,
        client.stream("GET", "/chat/room/events") as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert _next_event(lines)[0] == "subscribed"
        other = client.post("/chat/lobby/messages", json={"text": "elsewhere"})
        published = client.post("/chat/room/messages", json={"text": "hello"})
        assert other.status_code == 202
        assert published.status_code == 202
        assert published.json() == {"topic": "room", "status": "published"}
        assert _next_event(lines) == ("message", {"text": "hello"})


def test_a_topic_the_bus_cannot_hold_is_refused_before_any_stream(app: ServedApp) -> None:
    with httpx.Client(base_url=app.url, timeout=10) as client:
        resp = client.get("/chat/-bad/events")
        assert resp.status_code == 422
        assert client.post("/chat/-bad/messages", json={}).status_code == 422
        not_an_object = client.post("/chat/room/messages", json=[1, 2])
        assert not_an_object.status_code == 422
