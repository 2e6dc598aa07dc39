"""kubelet registering the one node, and the cluster DNS it points pods at.

Only one node runs per machine: kubelet's cgroups (``/kubepods``) and the bridge are host-wide,
so a kubelet of another stack is refused with the command that stops it. There is no cluster DNS
server beyond ``ClusterDns``: it answers the ``kubernetes`` Service's names only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

from devstack._components import LOOPBACK, Component, Context
from devstack._errors import StackError
from devstack._health import http_ok
from devstack._kube import kubectl
from devstack._node.host import (
    KUBELET_HOST_DIR,
    NODE_IP,
    NODE_NAME,
    SERVICE_IP,
    NodePaths,
    node_binaries,
)
from devstack._node.network import NodeNetwork
from devstack._node.teardown import mounts_under
from devstack._procs import marker_of

__all__ = ["ClusterDns", "Kubelet"]


class Kubelet(Component):
    """kubelet registering one node; cgroupfs driver (cgroups here are v1), no swap needed."""

    name = "kubelet"
    requires = ("containerd", "kube-apiserver")
    port_names = ("port", "healthz")
    timeout = 180.0
    grace = 20.0

    def prepare(self, ctx: Context) -> None:
        other = _other_node_owner(ctx.state_dir)
        if other is not None:
            raise StackError(
                f"kubelet: a node of the stack in {other} is running; only one node runs per "
                f"machine: `routing-dev down --state-dir {other}` first"
            )
        ctx.binaries.update(node_binaries(["kubelet"]))
        paths = NodePaths(ctx.state_dir)
        paths.kubelet.mkdir(parents=True, exist_ok=True)
        if not KUBELET_HOST_DIR.exists():
            (paths.kubelet / "created-host-dir").touch()
        NodeNetwork(paths).ensure(ctx.port("kube-apiserver"))
        for d in (paths.kubelet_root, paths.kubelet / "pod-logs", paths.kubelet / "volume-plugins"):
            d.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": ctx.port(self.name),
            "readOnlyPort": 0,
            "healthzBindAddress": LOOPBACK,
            "healthzPort": ctx.port(self.name, "healthz"),
            # The API server connects without a client certificate (kubectl logs/exec); the
            # port listens on the node's bridge address only, never on a public interface.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{paths.socket}",
            "podLogsDir": str(paths.kubelet / "pod-logs"),
            "volumePluginDir": str(paths.kubelet / "volume-plugins"),
            "clusterDomain": "cluster.local",
            "clusterDNS": [NODE_IP],
            "resolvConf": "/etc/resolv.conf",
            "registerNode": True,
            "maxPods": 50,
            # A dev machine's disk is often fuller than a cluster's defaults tolerate.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # Projected ConfigMaps are refreshed on this period (the live-switch path).
            "syncFrequency": "10s",
            "configMapAndSecretChangeDetectionStrategy": "Watch",
            "serializeImagePulls": False,
            # No host-wide KUBE-* chains: the only rules are the node's own, tagged (network.py).
            "makeIPTablesUtilChains": False,
            "shutdownGracePeriod": "0s",
        }  # fmt: skip
        paths.kubelet_config.write_text(yaml.safe_dump(config))

    def argv(self, ctx: Context) -> list[str]:
        paths = NodePaths(ctx.state_dir)
        return [
            str(ctx.binaries["kubelet"]),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={ctx.kubeconfig}",
            f"--root-dir={paths.kubelet_root}",
            f"--cert-dir={paths.kubelet / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ]

    def healthy(self, ctx: Context) -> bool:
        url = f"http://{LOOPBACK}:{ctx.port(self.name, 'healthz')}/healthz"
        if not http_ok(url):
            return False
        if _node_ready(ctx.kubeconfig):
            return True
        time.sleep(1)  # each check runs kubectl: no need to do that ten times a second
        return False

    def before_stop(self, ctx: Context) -> None:
        """Let kubelet itself tear every pod down (CNI DEL, unmounts) while it still runs."""
        selector = f"spec.nodeName={NODE_NAME}"
        deleting = kubectl(
            ctx.kubeconfig, "delete", "pods", "--all-namespaces", "--field-selector", selector,
            "--grace-period=1", "--wait=false", timeout=30,
        )  # fmt: skip
        if deleting.returncode != 0:
            return  # the API server is gone: containerd's teardown kills what is left
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            listed = kubectl(
                ctx.kubeconfig, "get", "pods", "--all-namespaces", "--field-selector", selector,
                "-o", "name", timeout=30,
            )  # fmt: skip
            if listed.returncode != 0 or not listed.stdout.strip():
                break
            time.sleep(0.5)
        paths = NodePaths(ctx.state_dir)
        while time.monotonic() < deadline and mounts_under(paths.kubelet_root / "pods"):
            time.sleep(0.5)

    def after_stop(self, ctx: Context) -> None:
        paths = NodePaths(ctx.state_dir)
        if not paths.kubelet.exists():
            return  # this stack never ran a node: nothing to deregister
        created = paths.kubelet / "created-host-dir"
        if created.exists():
            shutil.rmtree(KUBELET_HOST_DIR, ignore_errors=True)
            created.unlink()
        with contextlib.suppress(StackError, subprocess.TimeoutExpired):
            kubectl(ctx.kubeconfig, "delete", "node", NODE_NAME, "--ignore-not-found", timeout=20)

    def exports(self, ctx: Context) -> dict[str, str]:
        return {"ROUTING_DEV_NODE": NODE_NAME}


class ClusterDns(Component):
    """dnsmasq on the node address: the ``kubernetes`` Service's names, nothing else.

    In-cluster clients (kopf among them) dial ``kubernetes.default.svc`` by name. There is no
    kube-proxy behind other Services, so their names are deliberately not answered: a pod that
    relies on one fails to resolve it rather than connecting nowhere. Other names go to the
    host's resolvers.
    """

    name = "cluster-dns"
    requires = ("kubelet",)  # the bridge, whose address it listens on, exists from then on
    port_names = ()
    timeout = 20.0

    def argv(self, ctx: Context) -> list[str]:
        exe = shutil.which("dnsmasq")
        assert exe is not None  # the node's packages include it
        names = ["kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
        return [
            exe,
            "--keep-in-foreground",
            "--log-facility=-",
            "--conf-file=/dev/null",
            "--no-hosts",
            f"--listen-address={NODE_IP}",
            "--bind-interfaces",
            "--user=nobody",
            *(f"--address=/{n}/{SERVICE_IP}" for n in names),
        ]

    def healthy(self, ctx: Context) -> bool:
        try:
            with socket.create_connection((NODE_IP, 53), timeout=1):
                return True
        except OSError:
            return False


def _node_ready(kubeconfig: Path) -> bool:
    done = kubectl(kubeconfig, "get", "node", NODE_NAME, "-o", "json", timeout=10)
    if done.returncode != 0:
        return False
    conditions = json.loads(done.stdout).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _other_node_owner(state_dir: Path) -> str | None:
    """The state directory of a kubelet started by another stack on this machine, if any."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        mark = marker_of(int(entry.name))
        if mark is not None and mark[1] == "kubelet" and mark[0] != str(state_dir):
            return mark[0]
    return None
