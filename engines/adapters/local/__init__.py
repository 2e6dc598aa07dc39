"""The local-directory BlobStore (test-only): blobs as files under ``{path}/{tenant}/``.

``path`` is required and must be an existing directory (no temp-dir default). Writes go to a
temporary file first and are renamed into place, so a reader never sees half a blob.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engines.ports.base import check_tenant
from engines.ports.blob_store import BlobStore, check_blob_name, check_bytes, check_prefix
from engines.ports.errors import BackendUnavailable, Conflict, NotFound
from engines.routing.catalog import Backend, LocalSettings
from engines.routing.errors import InvalidRouting

from .._settings import parse_settings

__all__ = ["LocalBlobStore"]

_TMP = ".tmp"  # tenants are DNS labels, so this never collides with a tenant directory


class LocalBlobStore(BlobStore):
    backend = Backend.LOCAL

    def __init__(
        self,
        config: Mapping[str, Any] | LocalSettings,
        *,
        tenant: str,
        secret: str | None = None,
    ) -> None:
        self.settings = parse_settings(Backend.LOCAL, LocalSettings, config)
        self.tenant = check_tenant(tenant)
        base = Path(self.settings.path)
        if not base.is_absolute() or not base.is_dir():
            raise InvalidRouting(
                f"{self.settings.path!r} must be an existing absolute directory", field="local.path"
            )
        self._root = base / self.tenant
        self._tmp = base / _TMP

    def _path(self, name: str) -> Path:
        return self._root.joinpath(*check_blob_name(name).split("/"))

    async def ping(self) -> None:
        if not self._root.parent.is_dir():
            raise BackendUnavailable(f"local blob directory {self._root.parent} is gone")

    async def put(
        self, name: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        target, payload = self._path(name), check_bytes(data)
        await asyncio.to_thread(self._write, target, payload)

    def _write(self, target: Path, payload: bytes) -> None:
        try:
            self._tmp.mkdir(exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._tmp / uuid.uuid4().hex
            tmp.write_bytes(payload)
            os.replace(tmp, target)
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            raise Conflict(f"blob name clashes with an existing blob or prefix: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailable(f"local blob write failed: {exc}") from exc

    async def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"blob {name!r} does not exist") from None
        except OSError as exc:
            raise BackendUnavailable(f"local blob read failed: {exc}") from exc

    async def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            await asyncio.to_thread(path.unlink, True)
        except (IsADirectoryError, NotADirectoryError):
            return
        except OSError as exc:
            raise BackendUnavailable(f"local blob delete failed: {exc}") from exc

    async def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        out = []
        for dirpath, _dirs, files in os.walk(self._root):
            rel = Path(dirpath).relative_to(self._root).as_posix()
            for f in files:
                name = f if rel == "." else f"{rel}/{f}"
                if name.startswith(prefix):
                    out.append(name)
        return sorted(out)
