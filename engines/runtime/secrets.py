"""Turn a routing entry's ``secretRef`` into the credential its backend needs.

Credentials never travel through Firestore or ConfigMaps (§2): the entry only names a Secret
key, and the pod reads the value from the Secret mounted as files (``{root}/{name}/{key}``, the
layout of a Secret volume per name). A missing file is ``BackendUnavailable`` — the slot keeps
its last known-good backend and retries, which picks the value up once kubelet mounts it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engines.routing.errors import BackendUnavailable
from engines.routing.model import SecretRef

__all__ = ["DEFAULT_SECRETS_DIR", "MountedSecrets", "SecretResolver"]

SecretResolver = Callable[[SecretRef], str]
"""Returns the secret value; raises ``BackendUnavailable`` when it cannot be read."""

DEFAULT_SECRETS_DIR = Path("/etc/engines/secrets")


class MountedSecrets:
    """Reads ``{root}/{secret name}/{key}`` (one Secret volume per name under ``root``)."""

    def __init__(self, root: Path = DEFAULT_SECRETS_DIR) -> None:
        self.root = root

    def __call__(self, ref: SecretRef) -> str:
        path = self.root / ref.name / ref.key
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise BackendUnavailable(
                f"secret {ref.name}/{ref.key} is not mounted at {path}: mount the Secret "
                f"{ref.name!r} under {self.root}"
            ) from exc
