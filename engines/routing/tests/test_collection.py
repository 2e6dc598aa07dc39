"""The gateway to the routing collection (``RoutingCollection``) on the real Firestore emulator:
create/replace/delete, the ownership rules of §5 (same entry, orphan of this cluster, another
cluster's document, adoption), deletes that remove only what the caller owns or read, listing
and listening (the whole collection, one env, one cluster, keeping digests only), the probe,
and the translation of every failure into one error type while the emulator is stopped (a real
outage: the emulator process is stopped, then started again). How routingctl reports the same
outage is covered with the CLI's tests.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from devstack.testing import wait_for
from engines.routing import (
    BackendUnavailable,
    ConfigMissing,
    EntryExists,
    OwnershipConflict,
    RoutingKey,
    RoutingRecord,
    Source,
)
from engines.routing.collection import KeptDocument, Outcome, Probe, RoutingCollection
from engines.routing.contract import ADOPT_ANNOTATION, expected_record

pytestmark = pytest.mark.firestore


def spec(collection: str = "seo_pages", tenant: str = "acme", env: str = "prod") -> dict[str, Any]:
    return {
        "tenant": tenant,
        "env": env,
        "resourceKind": "seo",
        "backend": "firestore",
        "firestore": {"collection": collection},
    }


def entry(name: str, cluster: str, uid: str | None = None, **kw: Any) -> RoutingRecord:
    meta = {"namespace": "engines", "name": name, "uid": uid or f"uid-{name}", "generation": 1}
    return expected_record(spec(**kw), meta, cluster)


def alive(*uids: str) -> Any:
    """An ``owner_alive`` answering from a fixed set of live entry uids."""
    return lambda owner: owner.uid in uids


@pytest.fixture
def name(firestore_emulator: Any) -> str:
    return f"routing_{uuid.uuid4().hex[:10]}"


def store(name: str, cluster: str = "") -> RoutingCollection:
    return RoutingCollection(name=name, cluster=cluster)


def test_create_refuses_an_existing_id_and_replace_a_missing_one(name: str) -> None:
    gateway = store(name)
    first = entry("acme-seo", "a")
    gateway.create(first)
    with pytest.raises(EntryExists):
        gateway.create(first)
    stored = gateway.get(first.key)
    assert stored is not None and stored.record() == first
    assert stored.update_time is not None
    missing = entry("acme-seo", "a", tenant="globex")
    with pytest.raises(ConfigMissing):
        gateway.replace(missing)
    assert gateway.delete(first.key) is True
    assert gateway.delete(first.key) is False
    assert gateway.get(first.key) is None


def test_an_entry_rewrites_its_own_document_and_takes_back_an_orphan_of_its_cluster(
    name: str,
) -> None:
    gateway = store(name, cluster="a")
    mine = entry("acme-seo", "a")
    assert gateway.write(mine, alive(), fresh=True) == (Outcome.WRITTEN, None)
    assert gateway.write(mine, alive()) == (Outcome.UNCHANGED, None)
    changed = entry("acme-seo", "a", collection="seo_v2")
    assert gateway.write(changed, alive("uid-acme-seo")) == (Outcome.WRITTEN, None)

    successor = entry("acme-seo-2", "a")  # same identity, its predecessor deleted
    outcome, replaced = gateway.write(successor, alive("uid-acme-seo-2"))
    assert outcome is Outcome.RECLAIMED
    assert replaced == changed.source
    stored = gateway.get(successor.key)
    assert stored is not None and stored.owner == successor.source


def test_a_live_entry_of_this_cluster_keeps_its_document(name: str) -> None:
    gateway = store(name, cluster="a")
    gateway.write(entry("acme-seo", "a"), alive())
    with pytest.raises(OwnershipConflict) as info:
        gateway.write(entry("rival", "a"), alive("uid-acme-seo", "uid-rival"))
    assert str(info.value) == (
        "Firestore document prod:acme:*:seo is owned by RoutingEntry engines/acme-seo"
    )
    assert info.value.owner_uid == "uid-acme-seo"


def test_another_clusters_document_is_refused_until_adopted_on_purpose(name: str) -> None:
    theirs = entry("acme-seo", "b")
    store(name, cluster="b").write(theirs, alive())
    ours = store(name, cluster="a")
    mine = entry("acme-seo", "a", uid="uid-ours", collection="seo_a")
    with pytest.raises(OwnershipConflict) as info:
        ours.write(mine, alive("uid-ours"))
    assert str(info.value) == (
        "Firestore document prod:acme:*:seo belongs to cluster b (RoutingEntry engines/acme-seo "
        "there); nothing written. To take it over on purpose, annotate this entry "
        f'{ADOPT_ANNOTATION}="true"'
    )
    stored = ours.get(mine.key)
    assert stored is not None and stored.record() == theirs  # nothing written

    assert ours.write(mine, alive("uid-ours"), adopt=True) == (Outcome.ADOPTED, theirs.source)
    stored = ours.get(mine.key)
    assert stored is not None and stored.record() == mine


def test_a_document_of_no_recorded_cluster_is_this_entrys_when_it_wrote_it(name: str) -> None:
    legacy = entry("acme-seo", "a")
    unmarked = legacy.model_copy(
        update={"source": Source(namespace="engines", name="acme-seo", uid="uid-acme-seo")}
    )
    store(name).create(unmarked)
    gateway = store(name, cluster="a")
    assert gateway.write(legacy, alive("uid-acme-seo")) == (Outcome.MIGRATED, None)
    # written for an entry that is not here, by a cluster that did not say which
    other = unmarked.model_copy(
        update={"source": Source(namespace="engines", name="elsewhere", uid="uid-gone")}
    )
    store(name).replace(other)
    with pytest.raises(OwnershipConflict, match="records no cluster"):
        gateway.write(entry("acme-seo-2", "a"), alive("uid-acme-seo-2"))


def test_remove_deletes_only_what_the_entry_owns_in_this_cluster(name: str) -> None:
    record = entry("acme-seo", "b")
    store(name, cluster="b").write(record, alive())
    assert store(name, cluster="a").remove(record.key, "uid-acme-seo") is False  # other cluster
    assert store(name, cluster="b").remove(record.key, "uid-someone-else") is False
    assert store(name, cluster="b").get(record.key) is not None
    assert store(name, cluster="b").remove(record.key, "uid-acme-seo") is True
    assert store(name, cluster="b").get(record.key) is None


def test_a_conditional_delete_leaves_a_document_changed_since_it_was_read(name: str) -> None:
    gateway = store(name, cluster="a")
    record = entry("acme-seo", "a")
    gateway.write(record, alive())
    read = gateway.get(record.key)
    assert read is not None
    gateway.write(entry("acme-seo", "a", collection="seo_v2"), alive("uid-acme-seo"))
    assert gateway.delete_unchanged(read) is False
    again = gateway.get(record.key)
    assert again is not None
    assert gateway.delete_unchanged(again) is True
    assert gateway.get(record.key) is None


def change_log() -> tuple[list[str], Callable[[list[Any], list[Any], Any], None]]:
    """A listener callback recording each change as ``TYPE:document-id``, and what it recorded."""
    seen: list[str] = []
    lock = threading.Lock()

    def on_snapshot(docs: list[Any], changes: list[Any], _read_time: Any) -> None:
        with lock:
            seen.extend(f"{c.type.name}:{c.document.id}" for c in changes)

    return seen, on_snapshot


def test_documents_lists_one_env_and_listen_delivers_changes(name: str) -> None:
    gateway = store(name)
    prod, dev = entry("p", "a"), entry("d", "a", env="dev")
    gateway.create(prod)
    gateway.create(dev)
    assert [d.id for d in gateway.documents("prod")] == [prod.key.document_id]
    assert sorted(d.id for d in gateway.documents()) == sorted(
        [prod.key.document_id, dev.key.document_id]
    )

    seen, on_snapshot = change_log()
    listener = gateway.listen(on_snapshot, env="prod")
    try:
        wait_for(lambda: f"ADDED:{prod.key.document_id}" in seen, what="the first snapshot")
        assert listener.alive
        gateway.delete(prod.key)
        gateway.delete(dev.key)
        wait_for(lambda: f"REMOVED:{prod.key.document_id}" in seen, what="the removal")
        assert not any(dev.key.document_id in s for s in seen)  # another env's: never seen
    finally:
        listener.close()


def test_listen_on_a_cluster_delivers_only_that_clusters_documents(name: str) -> None:
    """The drift listener's query: another cluster's documents (and their changes) are never
    delivered; the listener reports its stream connected."""
    ours, theirs = store(name, "a"), store(name, "b")
    mine = entry("acme-seo", "a")
    other = entry("globex-seo", "b", tenant="globex")
    ours.write(mine, alive(), fresh=True)
    theirs.write(other, alive(), fresh=True)

    seen, on_snapshot = change_log()
    listener = ours.listen(on_snapshot, cluster="a")
    try:
        wait_for(lambda: f"ADDED:{mine.key.document_id}" in seen, what="the first snapshot")
        wait_for(lambda: listener.connected, what="the stream connected")
        theirs.write(entry("globex-seo", "b", tenant="globex", collection="v2"), alive())
        ours.write(entry("acme-seo", "a", collection="v2"), alive())
        wait_for(lambda: f"MODIFIED:{mine.key.document_id}" in seen, what="our change")
        assert not any(other.key.document_id in s for s in seen), seen
    finally:
        listener.close()


def test_a_listener_with_keep_holds_only_what_keep_made_of_each_document(name: str) -> None:
    """``keep``: each document is delivered and held as what ``keep`` made of its fields (server
    fields removed), changes included; Google's client holds nothing else of it."""
    gateway = store(name, "a")
    record = entry("acme-seo", "a")
    gateway.write(record, alive(), fresh=True)
    seen: list[tuple[str, str, Any]] = []
    lock = threading.Lock()

    def on_snapshot(docs: list[Any], changes: list[Any], _read_time: Any) -> None:
        with lock:
            seen.extend((c.type.name, c.document.id, c.document.kept) for c in changes)

    def keep(fields: dict[str, Any]) -> tuple[str, bool]:
        return fields["config"]["collection"], "updated_at" in fields

    listener = gateway.listen(on_snapshot, cluster="a", keep=keep)
    doc_id = record.key.document_id
    try:
        wait_for(lambda: ("ADDED", doc_id, ("seo_pages", False)) in seen, what="the first load")
        gateway.write(entry("acme-seo", "a", collection="v2"), alive())
        wait_for(lambda: ("MODIFIED", doc_id, ("v2", False)) in seen, what="the change")
        held = list(listener.watch.doc_map.values())
        assert [type(doc) for doc in held] == [KeptDocument], held
        gateway.delete(record.key)
        wait_for(lambda: any(c[:2] == ("REMOVED", doc_id) for c in seen), what="the removal")
    finally:
        listener.close()


def test_every_failure_with_the_emulator_stopped_is_backend_unavailable_naming_where(
    firestore_emulator: Any, name: str
) -> None:
    if firestore_emulator.stack is None:
        pytest.skip("the emulator comes from FIRESTORE_EMULATOR_HOST: cannot stop/start it")
    gateway = RoutingCollection(name=name, cluster="a", timeout=3.0, list_timeout=3.0)
    record = entry("acme-seo", "a")
    gateway.create(record)
    stored = gateway.get(record.key)
    assert stored is not None
    assert gateway.probe(3.0) == (Probe.OK, None)
    where = f"emulator at {firestore_emulator.host}, project {firestore_emulator.project}"
    firestore_emulator.stop()
    try:
        found, error = gateway.probe(3.0)  # the operator's readiness check: refused is down
        assert found is Probe.DOWN and error is not None, (found, error)
        assert str(error).startswith(f"cannot read {name}: Firestore collection {name} "), error
        calls = {
            f"read {name}/{record.key.document_id}": lambda: gateway.get(record.key),
            f"list {name} (env prod)": lambda: list(gateway.documents("prod")),
            f"create {name}/prod:globex:*:seo": lambda: gateway.create(
                entry("globex-seo", "a", tenant="globex")
            ),
            f"write {name}/{record.key.document_id}": lambda: gateway.write(record, alive()),
            f"delete {name}/{record.key.document_id}": lambda: gateway.remove(
                record.key, "uid-acme-seo"
            ),
        }
        for action, call in calls.items():
            with pytest.raises(BackendUnavailable) as info:
                call()
            message = str(info.value)
            assert message.startswith(
                f"cannot {action}: Firestore collection {name} unavailable ({where}): "
            ), message
            assert "\n" not in message
            assert info.value.__cause__ is not None  # chained: the vendor error stays inspectable

    finally:
        firestore_emulator.start()
    key = RoutingKey("prod", "acme", "*", "seo")
    wait_for(lambda: _answers(gateway, key), timeout=60, what="the restarted emulator")


def _answers(gateway: RoutingCollection, key: RoutingKey) -> bool:
    try:
        gateway.get(key)
    except BackendUnavailable:
        return False
    return True
