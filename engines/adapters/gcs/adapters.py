"""The GCS BlobStore; see the package docstring."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import storage  # type: ignore[attr-defined]
from google.cloud.storage.retry import DEFAULT_RETRY

from engines.ports.base import check_tenant
from engines.ports.blob_store import BlobStore, check_blob_name, check_bytes, check_prefix
from engines.ports.errors import BackendUnavailable, NotFound
from engines.routing.catalog import Backend, GcsSettings
from engines.routing.errors import RoutingError

from .._google import service_account_credentials
from .._settings import parse_settings

__all__ = ["GcsBlobStore"]

T = TypeVar("T")
TIMEOUT_S = 30.0
RETRY = DEFAULT_RETRY.with_timeout(20.0)


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except RoutingError:
        raise
    except (gexc.GoogleAPIError, auth_exc.GoogleAuthError, OSError) as exc:
        raise BackendUnavailable(f"gcs {what} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # requests/urllib3 transport errors are not GoogleAPIError
        if type(exc).__module__.split(".")[0] in ("requests", "urllib3", "google"):
            raise BackendUnavailable(f"gcs {what} failed: {type(exc).__name__}: {exc}") from exc
        raise


class GcsBlobStore(BlobStore):
    backend = Backend.GCS

    def __init__(
        self,
        config: Mapping[str, Any] | GcsSettings,
        *,
        tenant: str,
        secret: str | None = None,
    ) -> None:
        self.settings = parse_settings(Backend.GCS, GcsSettings, config)
        self.tenant = check_tenant(tenant)
        self._root = f"{self.settings.prefix}{self.tenant}/"
        kwargs: dict[str, Any] = {}
        if secret is not None:
            kwargs["credentials"], kwargs["project"] = service_account_credentials(secret)
        try:
            self._client = storage.Client(**kwargs)
        except (auth_exc.GoogleAuthError, OSError) as exc:
            raise BackendUnavailable(f"gcs credentials unavailable: {exc}") from exc
        self._bucket = self._client.bucket(self.settings.bucket)

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        def run() -> T:
            with _translate(what):
                return fn()

        return await asyncio.to_thread(run)

    async def ping(self) -> None:
        def probe() -> None:
            try:
                list(
                    self._client.list_blobs(
                        self._bucket, prefix=self._root, max_results=1, retry=None, timeout=5
                    )
                )
            except gexc.NotFound as exc:
                raise BackendUnavailable(f"gcs bucket {self.settings.bucket!r} not found") from exc

        await self._call("ping", probe)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()

    async def put(
        self, name: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        blob = self._bucket.blob(self._root + check_blob_name(name))
        payload = check_bytes(data)
        await self._call(
            "put",
            lambda: blob.upload_from_string(
                payload, content_type=content_type, timeout=TIMEOUT_S, retry=RETRY
            ),
        )

    async def get(self, name: str) -> bytes:
        blob = self._bucket.blob(self._root + check_blob_name(name))

        def download() -> bytes:
            try:
                data: bytes = blob.download_as_bytes(timeout=TIMEOUT_S, retry=RETRY)
                return data
            except gexc.NotFound:
                raise NotFound(f"blob {name!r} does not exist") from None

        return await self._call("get", download)

    async def delete(self, name: str) -> None:
        blob = self._bucket.blob(self._root + check_blob_name(name))

        def remove() -> None:
            with contextlib.suppress(gexc.NotFound):
                blob.delete(timeout=TIMEOUT_S, retry=RETRY)

        await self._call("delete", remove)

    async def list(self, prefix: str = "") -> list[str]:
        full = self._root + check_prefix(prefix)
        cut = len(self._root)

        def names() -> list[str]:
            return sorted(
                b.name[cut:]
                for b in self._client.list_blobs(
                    self._bucket, prefix=full, timeout=TIMEOUT_S, retry=RETRY
                )
            )

        return await self._call("list", names)
