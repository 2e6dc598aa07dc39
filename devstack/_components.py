"""The five components of the local stack, each described once: how to start, probe and export it.

A component is data plus three small behaviours (``argv``, ``healthy``, ``exports``); the
orchestration — ports, pid records, reuse, deadlines, stopping — lives in ``stack.py`` and is
the same for all of them. Order matters only through ``requires``: kube-apiserver needs etcd.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from devstack._binaries import repo_root
from devstack._certs import Pki, ensure_pki
from devstack._errors import StackError
from devstack._health import firestore_serves, http_ok, redis_ping
from devstack._kube import apply_crds, install_peering

__all__ = ["COMPONENTS", "LOOPBACK", "Component", "Context"]

LOOPBACK = "127.0.0.1"


@dataclass
class Context:
    """What a component needs to know about the stack it is part of."""

    state_dir: Path
    project: str
    crds_dir: Path | None
    ports: dict[str, dict[str, int]] = field(default_factory=dict)
    binaries: dict[str, Path] = field(default_factory=dict)

    def port(self, component: str, name: str = "port") -> int:
        return self.ports[component][name]

    @property
    def pki(self) -> Pki:
        return Pki(self.state_dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"


class Component:
    """Base: a process on loopback ports, healthy when its probe answers."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    port_names: ClassVar[tuple[str, ...]] = ("port",)
    binaries: ClassVar[tuple[str, ...]] = ()
    timeout: ClassVar[float] = 60.0
    """Seconds from spawn to healthy before ``up`` gives up."""
    grace: ClassVar[float] = 10.0
    """Seconds between SIGTERM and SIGKILL on stop."""

    def prepare(self, ctx: Context) -> None:
        """Create directories and files the process needs; runs before every start."""

    def argv(self, ctx: Context) -> list[str]:
        raise NotImplementedError

    def child_env(self, ctx: Context) -> dict[str, str]:
        return {}

    def healthy(self, ctx: Context) -> bool:
        raise NotImplementedError

    def after_healthy(self, ctx: Context) -> None:
        """Runs after every successful start or reuse (idempotent)."""

    def before_stop(self, ctx: Context) -> None:
        """Runs before the process is signalled, only while it runs (e.g. drain the node)."""

    def after_stop(self, ctx: Context) -> None:
        """Runs after the process is gone, on every stop (idempotent host cleanup)."""

    def exports(self, ctx: Context) -> dict[str, str]:
        return {}


class Etcd(Component):
    name = "etcd"
    port_names = ("client", "peer")
    binaries = ("etcd",)
    timeout = 30.0

    @staticmethod
    def data_dir(state_dir: Path) -> Path:
        """Where etcd keeps its data (kept across a stop)."""
        return state_dir / "etcd"

    def argv(self, ctx: Context) -> list[str]:
        client = f"http://{LOOPBACK}:{ctx.port(self.name, 'client')}"
        peer = f"http://{LOOPBACK}:{ctx.port(self.name, 'peer')}"
        return [
            str(ctx.binaries["etcd"]),
            "--name=routing-dev",
            f"--data-dir={self.data_dir(ctx.state_dir)}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=routing-dev={peer}",
            "--unsafe-no-fsync",  # a throw-away dev store: speed over durability, as envtest does
            "--log-level=warn",
        ]

    def healthy(self, ctx: Context) -> bool:
        url = f"http://{LOOPBACK}:{ctx.port(self.name, 'client')}/health"
        return http_ok(url, body_ok=lambda b: json.loads(b).get("health") == "true")


class KubeApiserver(Component):
    name = "kube-apiserver"
    requires = ("etcd",)
    binaries = ("kube-apiserver",)
    timeout = 120.0
    grace = 15.0

    def prepare(self, ctx: Context) -> None:
        pki = ensure_pki(ctx.pki.dir)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "routing-dev",
                    "cluster": {
                        "server": self.url(ctx),
                        "certificate-authority": str(pki.ca_crt),
                    },
                }
            ],
            "users": [{"name": "routing-dev-admin", "user": {"token": pki.admin_token}}],
            "contexts": [
                {
                    "name": "routing-dev",
                    "context": {
                        "cluster": "routing-dev",
                        "user": "routing-dev-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "routing-dev",
        }
        tmp = ctx.kubeconfig.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        tmp.chmod(0o600)
        tmp.replace(ctx.kubeconfig)

    def url(self, ctx: Context) -> str:
        return f"https://{LOOPBACK}:{ctx.port(self.name)}"

    def argv(self, ctx: Context) -> list[str]:
        pki = ctx.pki
        return [
            str(ctx.binaries["kube-apiserver"]),
            f"--etcd-servers=http://{LOOPBACK}:{ctx.port('etcd', 'client')}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={ctx.port(self.name)}",
            f"--cert-dir={pki.dir}",
            f"--tls-cert-file={pki.server_crt}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_crt}",
            f"--token-auth-file={pki.token_file}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # The local node's name does not resolve; its InternalIP is the bridge address.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--profiling=false",
        ]

    def healthy(self, ctx: Context) -> bool:
        return http_ok(
            f"{self.url(ctx)}/readyz",
            headers={"Authorization": f"Bearer {ctx.pki.admin_token}"},
            cafile=ctx.pki.ca_crt,
            body_ok=lambda b: b.strip() == b"ok",
        )

    def after_healthy(self, ctx: Context) -> None:
        try:
            apply_crds(ctx.kubeconfig, ctx.crds_dir)
            install_peering(ctx.kubeconfig, _peering_crds_dir())
        except StackError as exc:
            raise StackError(f"kube-apiserver: {exc}") from exc

    def exports(self, ctx: Context) -> dict[str, str]:
        return {"KUBECONFIG": str(ctx.kubeconfig)}


def _peering_crds_dir() -> Path | None:
    """kopf's peering CRDs as the chart ships them (None outside a checkout)."""
    root = repo_root()
    return root / "helm" / "routing-registry" / "crds" if root is not None else None


class Firestore(Component):
    name = "firestore"
    timeout = 90.0

    def argv(self, ctx: Context) -> list[str]:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise StackError("firestore: gcloud not found on PATH (gcloud emulators firestore)")
        return [gcloud, "emulators", "firestore", "start", f"--host-port={self.host(ctx)}"]

    def child_env(self, ctx: Context) -> dict[str, str]:
        # A private gcloud config: no prompts, no writes to the user's ~/.config/gcloud.
        return {
            "CLOUDSDK_CONFIG": str(ctx.state_dir / "gcloud"),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_PROJECT": ctx.project,
        }

    def host(self, ctx: Context) -> str:
        return f"{LOOPBACK}:{ctx.port(self.name)}"

    def healthy(self, ctx: Context) -> bool:
        return http_ok(f"http://{self.host(ctx)}/") and firestore_serves(
            self.host(ctx), ctx.project
        )

    def exports(self, ctx: Context) -> dict[str, str]:
        return {"FIRESTORE_EMULATOR_HOST": self.host(ctx), "GOOGLE_CLOUD_PROJECT": ctx.project}


class Redis(Component):
    name = "redis"
    timeout = 20.0

    def prepare(self, ctx: Context) -> None:
        (ctx.state_dir / "redis").mkdir(parents=True, exist_ok=True)
        if shutil.which("redis-server") is None:
            _apt_install("redis-server")

    def argv(self, ctx: Context) -> list[str]:
        exe = shutil.which("redis-server")
        assert exe is not None  # prepare() installed it
        return [
            exe,
            "--bind", LOOPBACK, "--port", str(ctx.port(self.name)),
            "--dir", str(ctx.state_dir / "redis"),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            # Keep argv and environ readable in /proc: the ownership marker lives there.
            "--set-proc-title", "no",
        ]  # fmt: skip

    def healthy(self, ctx: Context) -> bool:
        return redis_ping(LOOPBACK, ctx.port(self.name))

    def exports(self, ctx: Context) -> dict[str, str]:
        return {"REDIS_URL": f"redis://{LOOPBACK}:{ctx.port(self.name)}/0"}


def _apt_install(package: str) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError(f"redis: {package} is not installed and apt-get is not available")
    done = subprocess.run(
        [apt, "install", "-y", "--no-install-recommends", package],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0 or shutil.which("redis-server") is None:
        raise StackError(f"redis: apt-get install {package} failed:\n{done.stderr[-2000:]}")


class Gcs(Component):
    """fake-gcs-server: the JSON API the google-cloud-storage client speaks, in memory."""

    name = "gcs"
    binaries = ("fake-gcs-server",)
    timeout = 30.0

    def url(self, ctx: Context) -> str:
        return f"http://{LOOPBACK}:{ctx.port(self.name)}"

    def argv(self, ctx: Context) -> list[str]:
        port = ctx.port(self.name)
        return [
            str(ctx.binaries["fake-gcs-server"]),
            "-scheme", "http", "-host", LOOPBACK, "-port", str(port),
            "-backend", "memory",
            "-public-host", f"{LOOPBACK}:{port}", "-external-url", self.url(ctx),
            "-log-level", "warn",
        ]  # fmt: skip

    def healthy(self, ctx: Context) -> bool:
        return http_ok(f"{self.url(ctx)}/storage/v1/b?project={ctx.project}")

    def exports(self, ctx: Context) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url(ctx)}


COMPONENTS: dict[str, Component] = {
    c.name: c for c in (Etcd(), KubeApiserver(), Firestore(), Redis(), Gcs())
}
"""Every component by name, in start order."""
