"""BlobStore: named byte objects per tenant (media, raw uploads).

Names are ``/``-separated paths of non-empty segments (no ``.``/``..``, no leading ``/``), at
most 1024 UTF-8 bytes, so they are safe as object names and as local file paths alike.
"""

from __future__ import annotations

from abc import abstractmethod

from .base import Port
from .errors import InvalidArgument

__all__ = ["BlobStore", "check_blob_name", "check_bytes", "check_prefix"]

MAX_NAME_BYTES = 1024


class BlobStore(Port):
    @abstractmethod
    async def put(
        self, name: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        """Create or replace the blob."""

    @abstractmethod
    async def get(self, name: str) -> bytes:
        """The blob's bytes; ``NotFound`` when absent."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Remove the blob; absent is fine."""

    @abstractmethod
    async def list(self, prefix: str = "") -> list[str]:
        """Names starting with ``prefix`` (plain string prefix), sorted."""


def check_blob_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name.encode()) > MAX_NAME_BYTES
        or any(c in name for c in "\x00\r\n\\")
        or any(seg in ("", ".", "..") for seg in name.split("/"))
    ):
        raise InvalidArgument(
            f"blob name {name!r} must be '/'-separated non-empty segments (no '.', '..', "
            f"leading/trailing '/', backslash or control characters), max {MAX_NAME_BYTES} bytes"
        )
    return name


def check_prefix(prefix: str) -> str:
    if (
        not isinstance(prefix, str)
        or len(prefix.encode()) > MAX_NAME_BYTES
        or any(c in prefix for c in "\x00\r\n\\")
    ):
        raise InvalidArgument(f"blob prefix {prefix!r} is not a valid name prefix")
    return prefix


def check_bytes(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"blob data must be bytes, got {type(data).__name__}")
    return bytes(data)
