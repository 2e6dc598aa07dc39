"""Health probes: one short request each, True/False, never raising.

They are polled under a deadline by ``_procs.wait_until``; a probe that raised would turn a
component that is merely still starting into a failure.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["firestore_serves", "http_ok", "redis_ping"]


def http_ok(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    cafile: Path | None = None,
    body_ok: Callable[[bytes], bool] | None = None,
    timeout: float = 2.0,
) -> bool:
    """True when ``url`` answers 200 (and ``body_ok`` accepts the body)."""
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body: bytes = response.read()
            return response.status == 200 and (body_ok is None or body_ok(body))
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


def firestore_serves(host: str, project: str, timeout: float = 10.0) -> bool:
    """True when the Firestore emulator answers a document read (found or not).

    Its root URL answers as soon as the HTTP listener is up, while the first real read can still
    take seconds (the JVM warming up); a client with a short deadline then fails. Reading one
    document here makes "healthy" mean "serves reads" and pays that first read before any test.
    """
    url = f"http://{host}/v1/projects/{project}/databases/(default)/documents/_health/probe"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    except (OSError, urllib.error.URLError):
        return False


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server at host:port answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
