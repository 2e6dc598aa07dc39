"""The operator never repeats a credential it refuses (real kube-apiserver, Firestore emulator).

An entry whose ``redis.url`` carries ``?password=…`` cannot be admitted (the CRD's CEL refuses
it: ``tests/test_crd_admission.py``). One stored before those rules existed still reaches the
operator; it must be ``InvalidConfig`` with a message naming the field and the fix, written
nowhere, and the password must appear in no status condition, Event or operator log line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import Entries, OperatorProcess, entry, running_operator, store_past_crd_rules

from devstack.testing import wait_for

SECRET = "hunter2-planted"


@pytest.fixture
def operator(
    kube_cluster: Any, firestore_emulator: Any, namespace: str, collection: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    with running_operator(kube_cluster.kubeconfig, namespace, collection, tmp_path) as op:
        yield op


def test_a_stored_url_password_is_refused_and_repeated_nowhere(
    operator: OperatorProcess,
    entries: Entries,
    kube_cluster: Any,
    firestore_emulator: Any,
    collection: str,
) -> None:
    bad = entry(
        "leaky",
        kind="chat_bus",
        backend="redis",
        settings={"url": f"redis://redis:6379/0?password={SECRET}"},
    )
    store_past_crd_rules(kube_cluster, entries, bad, "spec", "redis")
    cond = entries.wait_reason("leaky", "InvalidConfig", "False")
    assert cond["message"] == (
        "invalid spec, nothing written: spec.redis.url: must not carry a password or username "
        "query parameter (any case): it would be copied into Firestore, ConfigMaps and /routing; "
        "remove it and put the credential in a Secret referenced by spec.secretRef"
    )

    def events() -> list[Any]:
        return [
            e
            for e in entries.core.list_namespaced_event(
                entries.ns, field_selector="involvedObject.name=leaky"
            ).items
            if e.reason == "InvalidConfig"
        ]

    wait_for(events, timeout=30, what="the InvalidConfig Event")
    obj = entries.get("leaky") or {}
    assert SECRET not in str(obj.get("status"))
    assert all(SECRET not in (e.message or "") for e in events())
    assert SECRET not in operator.log()
    fs = firestore_emulator.client()
    assert not fs.collection(collection).document("prod:acme:*:chat_bus").get().exists
    assert entries.configmap_data("routing.prod.acme") is None
