"""The ConfigMap drift watch: the managed ConfigMaps (label-selected), as they change.

One thread per watched namespace (or one for all) lists the ConfigMaps, then watches from the
list's resourceVersion, and hands each key's digest to the judge (``drift_judge``); listed
again (and compared) when the watch expires or fails. Values are never parsed: a key's identity
comes from the ConfigMap's and the key's names, so a value edited out of shape is still judged.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from engines.routing.contract import MANAGED_BY_SELECTOR, RoutingKey, digest
from engines.routing.errors import InvalidRouting

from .drift_judge import CONFIGMAP, DriftJudge, KeyDigests

__all__ = ["WATCH_SECONDS", "ConfigMapDriftWatch", "key_digests"]

log = logging.getLogger(__name__)

NAME = CONFIGMAP
WATCH_SECONDS = 300
"""Server-side timeout of one ConfigMap watch request (then it resumes where it was)."""


def key_digests(cm: dict[str, Any]) -> KeyDigests:
    """A managed ConfigMap's keys → (digest of the value, the identity the key is for). The
    identity comes from the ConfigMap's and the key's names alone, so a value edited out of
    shape is still compared with the right document, and no value is parsed."""
    name = cm["metadata"]["name"]
    found: KeyDigests = {}
    for key, value in (cm.get("data") or {}).items():
        try:
            doc_id = RoutingKey.from_configmap(name, key).document_id
        except InvalidRouting:
            continue  # not a routing key of this ConfigMap: nothing of ours to judge
        found[key] = (digest(value), doc_id)
    return found


class ConfigMapDriftWatch:
    """Watches the managed ConfigMaps of ``namespace`` (None: of all) until ``stopping``."""

    def __init__(self, judge: DriftJudge, namespace: str | None, stopping: threading.Event):
        self.judge = judge
        self.namespace = namespace
        self.stopping = stopping
        self._watches: list[Any] = []

    def stop(self) -> None:
        """Stop the watch request in flight (the thread then sees ``stopping``)."""
        for watch in list(self._watches):
            watch.stop()

    def run(self) -> None:
        """The thread: list, then watch from the list's resourceVersion; listed again when the
        watch expires or fails."""
        from kubernetes.client.exceptions import ApiException

        judge, namespace = self.judge, self.namespace
        core = judge.reconciler.configmaps.api
        if namespace is None:
            func, args = core.list_config_map_for_all_namespaces, []
        else:
            func, args = core.list_namespaced_config_map, [namespace]
        scope = {"label_selector": MANAGED_BY_SELECTOR}
        while not self.stopping.is_set():
            try:
                body = json.loads(func(*args, **scope, _preload_content=False).data)
                full = {
                    (cm["metadata"]["namespace"], cm["metadata"]["name"]): key_digests(cm)
                    for cm in body["items"]
                }
                judge.post(judge.configmaps_reset, namespace, full)
                self._follow(func, args, scope, body["metadata"]["resourceVersion"])
            except ApiException as exc:
                if exc.status == 410:  # expired: list again, and compare
                    continue
                judge.down(NAME, f"HTTP {exc.status} {exc.reason}")
            except Exception as exc:
                judge.down(NAME, f"{type(exc).__name__}: {exc}")
            self.stopping.wait(judge.retry)

    def _follow(self, func: Any, args: list[Any], scope: dict[str, str], version: str) -> None:
        """Watch from ``version`` until stopped (or an error, raised)."""
        from kubernetes import watch as kwatch

        judge = self.judge
        # The first watch lasts a second: ended without an error, it proves the watch is
        # allowed and works, and only then is the listener reported up.
        seconds = 1
        while not self.stopping.is_set():
            watch = kwatch.Watch()  # type: ignore[no-untyped-call]
            self._watches.append(watch)
            try:
                for event in watch.stream(  # type: ignore[no-untyped-call]
                    func, *args, **scope, resource_version=version,
                    timeout_seconds=seconds, deserialize=False,
                ):  # fmt: skip
                    cm = event["object"]
                    meta = cm["metadata"]
                    version = meta.get("resourceVersion") or version
                    if event["type"] == "BOOKMARK":
                        continue
                    values = None if event["type"] == "DELETED" else key_digests(cm)
                    judge.post(judge.configmap_changed, (meta["namespace"], meta["name"]), values)
            finally:
                self._watches.remove(watch)
            judge.up(NAME)
            seconds = WATCH_SECONDS
