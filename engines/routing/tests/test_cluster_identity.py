"""The cluster identity rule shared by the operator and ``routingctl`` (``source.cluster``):
a given ``--cluster-id`` is checked, not trusted blindly; an API server that does not answer is
asked again for the time allowed and then named with the fix. (The refused and the working
cases run against a real API server in tests/test_operator_restarts.py and
tests/test_two_clusters.py.)
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from devstack import free_port
from engines.routing.cluster import ClusterIdentityError, cluster_identity


def unreachable() -> client.CoreV1Api:
    """A client of an API server that is not there (a loopback port nothing listens on)."""
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{free_port()}"
    config.retries = False
    return client.CoreV1Api(client.ApiClient(config))


def test_a_given_identity_is_used_as_is_when_valid_and_refused_when_not() -> None:
    assert cluster_identity(None, "prod-eu-1") == "prod-eu-1"
    assert cluster_identity(None, "gke_proj_europe-west1_prod:1") == "gke_proj_europe-west1_prod:1"
    for bad in ("", "-lead", "trail.", "has space", "x" * 254, "slash/es"):
        with pytest.raises(ClusterIdentityError, match="is not a valid cluster identity"):
            cluster_identity(None, bad)


def test_an_api_server_that_does_not_answer_is_asked_again_then_named_with_the_fix() -> None:
    started = time.monotonic()
    with pytest.raises(ClusterIdentityError) as failure:
        cluster_identity(unreachable(), None, wait=2.5)
    assert time.monotonic() - started >= 1.0, "asked only once"
    message = str(failure.value)
    assert "cannot determine this cluster's identity: the API server did not answer" in message
    assert "pass --cluster-id (chart value operator.clusterId)" in message
    assert "allow get on namespace kube-system" in message
