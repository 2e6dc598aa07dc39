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

__all__ = ["http_ok", "redis_ping"]


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


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server at host:port answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
