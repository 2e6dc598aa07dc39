"""The operator's TLS read buffers (``routing_operator.heap.small_tls_buffers``, called at its
start) on a real TLS connection to the real kube-apiserver: a connection opened after it holds a
64 KiB read buffer instead of asyncio's 256 KiB (each pooled API connection the operator keeps
open holds one), and an answer many times that size (the API server's OpenAPI document) still
arrives whole.
"""

from __future__ import annotations

import asyncio
import json
from asyncio import sslproto
from typing import Any

import aiohttp
import pytest
from kubernetes import client, config
from routing_operator import heap


async def fetch_openapi(cfg: client.Configuration) -> tuple[int, int]:
    """(the connection's TLS read buffer in bytes, the answer's size) of one GET /openapi/v2."""
    import ssl

    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    headers = {v["key"]: v["value"] for v in cfg.auth_settings().values() if v["in"] == "header"}
    url = f"{cfg.host}/openapi/v2"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=context, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.connection is not None and resp.connection.transport is not None
        buffer = len(resp.connection.transport._ssl_protocol._ssl_buffer)  # type: ignore[attr-defined]
        body = await resp.read()
    json.loads(body)  # whole: it parses
    return buffer, len(body)


def test_connections_opened_after_it_read_through_a_64_kib_buffer(
    kube_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = client.Configuration()
    config.load_kube_config(str(kube_cluster.kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    default, _ = asyncio.run(fetch_openapi(cfg))
    assert default == 256 * 1024, "asyncio's default changed: revisit heap.small_tls_buffers"

    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", sslproto.SSLProtocol.max_size)
    heap.small_tls_buffers()
    small, size = asyncio.run(fetch_openapi(cfg))
    assert small == heap.TLS_READ_BUFFER == 64 * 1024
    assert size > 10 * small, f"an answer of {size} bytes does not test reading in pieces"
