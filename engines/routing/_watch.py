"""Google's ``Watch`` for a query without order, for the gateway's listeners
(``engines.routing._listener``, whose module doc says why), which also skips the decoding of a
document it already holds at the same update time.

A listen stream can deliver a document the listener already holds, unchanged: after a reset
(the server resends the whole result set, and every held document is first marked removed),
and on the Firestore emulator after every write to the collection (it resends every document of
the query; at 1,000 documents that is a thousand decodings per write, most of a listener's CPU).
Google's client decodes every field of each into a new snapshot, and only then finds the update
time unchanged. Here such a document is taken as the held snapshot again, undecoded: the
snapshot Google builds is then exactly what it would have found (no change).

Imported only when a listener opens, as every use of Google's client in the gateway is."""

from __future__ import annotations

from typing import Any

from google.cloud.firestore_v1.watch import WATCH_TARGET_ID, DocTreeEntry, Watch, WatchDocTree

__all__ = ["UnorderedWatch"]


class _InPlaceDocTree(WatchDocTree):
    """Google's document tree, changed in place: its ``insert`` and ``remove`` copy the whole
    tree (for an immutable tree's semantics ``Watch`` does not rely on: it keeps only the
    returned tree)."""

    def insert(self, key: Any, value: Any) -> _InPlaceDocTree:
        self._dict[key] = DocTreeEntry(value, self._index)
        self._index += 1
        return self

    def remove(self, key: Any) -> _InPlaceDocTree:
        del self._dict[key]
        return self


def _by_path(doc1: Any, doc2: Any) -> int:
    """The order of documents by path, which is the order of a query without ``order_by``
    (Google's comparator builds protobuf messages on each call to find that out)."""
    path1: str = doc1.reference._document_path
    path2: str = doc2.reference._document_path
    return (path1 > path2) - (path1 < path2)


class UnorderedWatch(Watch):
    """Google's ``Watch`` for a query without order: its snapshots give the held documents
    unordered (arrival order), and its document tree changes in place (see the module's doc)."""

    def __init__(
        self,
        document_reference: Any,
        firestore: Any,
        target: Any,
        comparator: Any,
        snapshot_callback: Any,
        document_snapshot_cls: Any,
    ) -> None:
        # The changes of one snapshot are still ordered (by Google's _compute_snapshot): by path.
        super().__init__(
            document_reference, firestore, target, _by_path, snapshot_callback,
            document_snapshot_cls,
        )  # type: ignore[no-untyped-call]  # fmt: skip

    def _init_stream(self) -> None:
        # Google's __init__ makes its tree just before starting the stream here; a reset of the
        # stream comes back here with this class's tree already in place.
        if not isinstance(self.doc_tree, _InPlaceDocTree):
            if len(self.doc_tree):
                raise RuntimeError("the listener's document tree is not empty at its start")
            self.doc_tree = _InPlaceDocTree()  # type: ignore[no-untyped-call]
        super()._init_stream()  # type: ignore[no-untyped-call]

    def on_snapshot(self, proto: Any) -> None:
        """Google's ``on_snapshot``, except for a changed document that is held at the same
        update time: the held snapshot is its change (see the module's doc)."""
        if proto is not None and not self._closing.locked():
            pb = proto._pb
            if pb.WhichOneof("response_type") == "document_change":
                change = pb.document_change
                if WATCH_TARGET_ID in change.target_ids:
                    name = change.document.name
                    held = self.doc_map.get(name)
                    if held is not None and held.update_time.timestamp_pb() == (
                        change.document.update_time
                    ):
                        self.change_map[name] = held
                        return
        super().on_snapshot(proto)  # type: ignore[no-untyped-call]

    def push(self, read_time: Any, next_resume_token: Any) -> None:
        """Google's ``push`` without its sort of every held document."""
        changes = self._extract_changes(self.doc_map, self.change_map, read_time)  # type: ignore[no-untyped-call]
        tree, docs, applied = self._compute_snapshot(self.doc_tree, self.doc_map, *changes)  # type: ignore[no-untyped-call]
        if not self.has_pushed or applied:
            self._snapshot_callback(tree.keys(), applied, read_time)
            self.has_pushed = True
        self.doc_tree, self.doc_map = tree, docs
        self.change_map.clear()
        self.resume_token = next_resume_token
