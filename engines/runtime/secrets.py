"""Turn a routing entry's ``secretRef`` into the credential its backend needs.

Credentials never travel through Firestore or ConfigMaps (§2): the entry only names a Secret
key, and the pod reads the value from the Secret mounted as files (``{root}/{name}/{key}``, the
layout of a Secret volume per name). A missing file is ``BackendUnavailable`` — the slot keeps
its last known-good backend and retries, which picks the value up once kubelet mounts it.

The name and key come from a RoutingEntry, i.e. from whoever may write one, so the reader trusts
neither: both must pass the model's rules again (DNS subdomain; Kubernetes' key alphabet, no
``.``/``..``), and the file, once every symlink is resolved, must lie inside the Secret's own
directory under the root. Kubelet's layout (``key -> ..data/key``, ``..data -> ..2026_…``) stays
inside that directory, so it reads; a symlink pointing anywhere else is refused. Only regular
files of at most 1 MiB (a Secret's size limit) are read.

A value is read when a backend is built, and its digest is what the slots compare to notice a
rotated Secret (kubelet swaps ``..data`` atomically): see :meth:`MountedSecrets.digest`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from engines.routing.errors import BackendUnavailable, InvalidRouting
from engines.routing.model import SecretRef, secret_ref_violation

__all__ = ["DEFAULT_SECRETS_DIR", "MAX_SECRET_BYTES", "MountedSecrets", "SecretResolver"]

SecretResolver = Callable[[SecretRef], str]
"""Returns the secret value; raises ``BackendUnavailable`` when it cannot be read."""

DEFAULT_SECRETS_DIR = Path("/etc/engines/secrets")
MAX_SECRET_BYTES = 1024 * 1024
"""The API server's size limit for a whole Secret: a bigger file is not a Secret key."""


class MountedSecrets:
    """Reads ``{root}/{secret name}/{key}`` (one Secret volume per name under ``root``).

    ``digest(ref)`` is the sha256 of the value the last successful read returned (``None``
    before any read), and ``current_digest(ref)`` that of the value on disk now: when they differ
    the Secret was rotated and the backend built with the old value must be rebuilt.
    """

    def __init__(self, root: Path = DEFAULT_SECRETS_DIR) -> None:
        self.root = root
        self._digests: dict[SecretRef, str] = {}

    def path_of(self, ref: SecretRef) -> Path:
        """The resolved file of ``ref``, strictly inside its Secret's directory under the root.

        Raises ``InvalidRouting`` for a name or key that could leave the root (the model refuses
        them first; this holds even for a record that bypassed it) and for a symlink escape,
        ``BackendUnavailable`` when the Secret is not mounted (yet).
        """
        found = secret_ref_violation(ref.name, ref.key)
        if found is not None:
            raise InvalidRouting(f"secretRef.{found[0]}: {found[1]}", field="secretRef")
        root = self.root.resolve()
        secret_dir = root / ref.name
        try:
            target = (secret_dir / ref.key).resolve(strict=True)
            mount = secret_dir.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise BackendUnavailable(
                f"secret {ref.name}/{ref.key} is not mounted: mount the Secret {ref.name!r} "
                f"under {self.root} (as {self.root}/{ref.name}/{ref.key})"
            ) from exc
        if not mount.is_relative_to(root) or not target.is_relative_to(mount):
            raise InvalidRouting(
                f"secret {ref.name}/{ref.key} resolves outside {self.root}/{ref.name}: refused "
                "(a symlink leaves the Secret's directory); mount the Secret as a volume",
                field="secretRef",
            )
        return target

    def __call__(self, ref: SecretRef) -> str:
        value = self._read(ref)
        self._digests[ref] = _digest(value)
        return value

    def digest(self, ref: SecretRef) -> str | None:
        """sha256 of the value last returned for ``ref`` (what the serving backend holds)."""
        return self._digests.get(ref)

    def current_digest(self, ref: SecretRef) -> str | None:
        """sha256 of the value on disk now; ``None`` when it cannot be read (keep what serves)."""
        try:
            return _digest(self._read(ref))
        except (BackendUnavailable, InvalidRouting):
            return None

    def _read(self, ref: SecretRef) -> str:
        path = self.path_of(ref)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise BackendUnavailable(
                f"secret {ref.name}/{ref.key} cannot be read: {exc.strerror}"
            ) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SECRET_BYTES:
                raise InvalidRouting(
                    f"secret {ref.name}/{ref.key} is not a regular file of at most "
                    f"{MAX_SECRET_BYTES} bytes: refused; mount the Secret as a volume",
                    field="secretRef",
                )
            data = b""
            while chunk := os.read(fd, MAX_SECRET_BYTES + 1 - len(data)):
                data += chunk
        finally:
            os.close(fd)
        try:
            return data.decode().strip()
        except UnicodeDecodeError as exc:
            raise InvalidRouting(
                f"secret {ref.name}/{ref.key} is not UTF-8 text", field="secretRef"
            ) from exc


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
