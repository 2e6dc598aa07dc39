"""kube-controller-manager and kube-scheduler beside the local API server, so controllers act
and pods are scheduled onto the node. Each serves its health port on loopback TLS with a
certificate signed by the stack's CA, so the probe verifies it like any other client would.
"""

from __future__ import annotations

from pathlib import Path

from devstack._components import LOOPBACK, Component, Context
from devstack._health import http_ok
from devstack._node.host import NodePaths, node_binaries, run

__all__ = ["KubeControllerManager", "KubeScheduler"]


class _ControlPlaneProcess(Component):
    """kube-controller-manager and kube-scheduler: admin kubeconfig, loopback TLS health port."""

    requires = ("kube-apiserver",)
    timeout = 90.0

    def prepare(self, ctx: Context) -> None:
        ctx.binaries.update(node_binaries([self.name]))
        _serving_cert(ctx, self.name)

    def common_args(self, ctx: Context) -> list[str]:
        crt, key = _serving_cert(ctx, self.name)
        kubeconfig = str(ctx.kubeconfig)
        return [
            str(ctx.binaries[self.name]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ctx.port(self.name)}",
            f"--tls-cert-file={crt}",
            f"--tls-private-key-file={key}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def healthy(self, ctx: Context) -> bool:
        return http_ok(
            f"https://{LOOPBACK}:{ctx.port(self.name)}/healthz",
            cafile=ctx.pki.ca_crt,
            body_ok=lambda b: b.strip() == b"ok",
        )


class KubeControllerManager(_ControlPlaneProcess):
    name = "kube-controller-manager"

    def argv(self, ctx: Context) -> list[str]:
        return [
            *self.common_args(ctx),
            "--cluster-name=routing-dev",
            "--controllers=*",
            # Each controller as its own ServiceAccount, as in a real cluster: admission policies
            # (the chart's deletion guard) see system:serviceaccount:kube-system:<controller>.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={ctx.pki.sa_key}",
            f"--root-ca-file={ctx.pki.ca_crt}",
            f"--flex-volume-plugin-dir={NodePaths(ctx.state_dir).kubelet / 'volume-plugins'}",
            # One node that must not be evicted from while it restarts.
            "--node-monitor-grace-period=60s",
        ]


class KubeScheduler(_ControlPlaneProcess):
    name = "kube-scheduler"

    def argv(self, ctx: Context) -> list[str]:
        return self.common_args(ctx)


def _serving_cert(ctx: Context, name: str) -> tuple[Path, Path]:
    """A loopback serving certificate for ``name`` signed by the stack's CA (so probes verify)."""
    pki = NodePaths(ctx.state_dir).pki
    crt, key = pki / f"{name}.crt", pki / f"{name}.key"
    if crt.is_file() and key.is_file():
        return crt, key
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = ctx.pki
    ext = pki / f"{name}.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
    )
    csr = pki / f"{name}.csr"
    run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", f"/CN={name}"],
        what=name,
    )  # fmt: skip
    run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.ca_crt),
         "-CAkey", str(ca.dir / "ca.key"), "-CAcreateserial", "-days", "3650",
         "-extfile", str(ext), "-out", str(crt)],
        what=name,
    )  # fmt: skip
    return crt, key
