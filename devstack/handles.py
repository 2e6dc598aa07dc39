"""What the pytest fixtures hand to tests: one small object per running service.

Each handle carries the address a client needs and a ``client()`` helper that builds the
vendor client pointed at it, so tests never assemble endpoints or credentials themselves.
Vendor SDKs are imported inside those helpers only: a test that needs Redis does not pay for
importing the Firestore client.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack._errors import StackError
from devstack._kube import kubectl

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from devstack.stack import LocalStack

__all__ = ["FirestoreEmulator", "GcsEmulator", "KubeCluster", "RedisServer"]


@dataclass
class FirestoreEmulator:
    """The Firestore emulator: ``host`` is what ``FIRESTORE_EMULATOR_HOST`` holds."""

    host: str
    project: str
    stack: LocalStack | None = None
    """None when reused from an already-set ``FIRESTORE_EMULATOR_HOST`` (cannot restart it)."""

    def stop(self) -> None:
        """Stop the emulator (its data is lost, as with a real outage and restart)."""
        self._own_stack().down(["firestore"])

    def start(self) -> None:
        """Start it again on the same host:port and wait until it answers."""
        stack = self._own_stack()
        stack.up(["firestore"])
        host = stack.env()["FIRESTORE_EMULATOR_HOST"]
        if host != self.host:
            raise StackError(f"firestore: restarted on {host}, not on {self.host} (port taken)")

    def client(self) -> Any:
        """A ``google.cloud.firestore.Client`` talking to this emulator."""
        from google.cloud import firestore

        return firestore.Client(project=self.project)

    def _own_stack(self) -> LocalStack:
        if self.stack is None:
            raise StackError("firestore: reused from FIRESTORE_EMULATOR_HOST; cannot stop/start")
        return self.stack


@dataclass
class RedisServer:
    """redis-server: ``url`` is what ``REDIS_URL`` holds."""

    url: str

    def client(self) -> Any:
        """A ``redis.Redis`` for ``url``."""
        import redis

        return redis.Redis.from_url(self.url)


@dataclass
class GcsEmulator:
    """The GCS emulator: ``host`` (``http://127.0.0.1:PORT``) is ``STORAGE_EMULATOR_HOST``."""

    host: str
    project: str

    def client(self) -> Any:
        """A ``google.cloud.storage.Client`` with anonymous credentials on this emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage  # type: ignore[attr-defined]

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.host},
        )


@dataclass
class KubeCluster:
    """A Kubernetes API with the CRDs applied; ``mode`` is local, kind or existing."""

    kubeconfig: Path
    mode: str

    def api_client(self) -> ApiClient:
        """A new ``kubernetes.client.ApiClient`` for ``kubeconfig`` (close it when done)."""
        from kubernetes import config

        api: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )
        return api

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the machine's kubectl against this cluster; check ``returncode`` yourself."""
        return kubectl(self.kubeconfig, *args, input=input)
