"""Routing registry read from mounted ConfigMap directories (``ENGINES_ROUTING_SOURCE=files``).

Each directory holds keys named ``{tenant}.{project}.{resource_kind}.json`` (``*`` written as
``_``), the values the operator writes into ``routing.{env}`` and ``routing.{env}.{tenant}``.
Kubelet updates a ConfigMap volume by writing a new timestamped directory and atomically
re-pointing the ``..data`` symlink, so a reader that re-scans when ``..data`` (or, for a plain
directory, any file's mtime) changes always sees one consistent generation, never a half-write.
A poller thread does that every ``poll_interval`` seconds; ``reload()`` forces a scan.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ..errors import InvalidRouting
from ..model import RoutingRecord
from .base import ReadOnlyRegistry

__all__ = ["FileRoutingRegistry"]

log = logging.getLogger(__name__)


class FileRoutingRegistry(ReadOnlyRegistry):
    """Reads one or more directories; ``env`` ignores entries of other environments."""

    def __init__(
        self,
        directories: Iterable[str | os.PathLike[str]],
        *,
        env: str | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        super().__init__()
        self.directories = [Path(d) for d in directories]
        self.env = env
        self.poll_interval = poll_interval
        self.invalid: dict[str, str] = {}
        self._signature: tuple[object, ...] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._scan_lock = threading.Lock()

    def _dir_signature(self, directory: Path) -> object:
        data = directory / "..data"
        if data.is_symlink():
            return ("..data", os.readlink(data))
        try:
            entries = sorted(
                (p.name, p.stat().st_mtime_ns, p.stat().st_size)
                for p in directory.iterdir()
                if p.name.endswith(".json") and not p.name.startswith(".")
            )
        except FileNotFoundError:
            return ("absent",)
        return ("plain", tuple(entries))

    def reload(self) -> bool:
        """Scan now if anything changed; returns whether the table was rebuilt."""
        with self._scan_lock:
            signature = tuple(self._dir_signature(d) for d in self.directories)
            if signature == self._signature:
                return False
            records: dict[str, RoutingRecord] = {}
            invalid: dict[str, str] = {}
            for directory in self.directories:
                if not directory.is_dir():
                    continue
                for path in sorted(directory.iterdir()):
                    name = path.name
                    if name.startswith(".") or not name.endswith(".json"):
                        continue
                    where = str(path)
                    try:
                        record = RoutingRecord.from_document(json.loads(path.read_text()))
                        if record.key.configmap_key != name:
                            raise InvalidRouting(
                                f"file name does not match its content "
                                f"(expected {record.key.configmap_key})",
                                field="key",
                            )
                    except (InvalidRouting, ValueError, OSError) as exc:
                        invalid[where] = str(exc)
                        continue
                    if self.env is not None and record.env != self.env:
                        continue
                    previous = records.get(record.key.document_id)
                    if previous is not None and previous != record:
                        invalid[where] = (
                            f"duplicate key {record.key.document_id} in two directories"
                        )
                        continue
                    records[record.key.document_id] = record
            for where, reason in invalid.items():
                if self.invalid.get(where) != reason:
                    log.error("ignoring invalid routing file %s: %s", where, reason)
            self.invalid = invalid
            self._signature = signature
            self.table.replace_all(records.values())
            self._loaded.set()
            return True

    def start(self) -> None:
        self.reload()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="routing-files", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.reload()
            except Exception:  # keep serving the last good table; say why loudly
                log.exception("reloading routing files failed; keeping the previous table")

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._loaded.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
