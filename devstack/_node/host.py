"""Where the node lives on the host: its names and addresses, its paths under the state
directory, the system packages and binaries it needs, and the one way it runs a host command.

Layout under the stack's state directory (all of it removed from the system on ``down``):

    node/containerd/   config.toml, root/, state/ (netns mounts live here), containerd.sock
    node/cni/          net.d/ (the bridge network), ipam/ (host-local leases)
    node/kubelet/      config.yaml, root/ (pod volumes), pod-logs/
    node/pki/          serving certificates of kube-controller-manager and kube-scheduler

Nothing is pulled: the packages come from the local package manager (containerd, runc, the CNI
plugins, conntrack, iptables, dnsmasq); kubelet, kube-controller-manager, kube-scheduler and the
pause binary are built from ``k8s.io/kubernetes`` at the API server's version by
``hack/build-node-binaries.sh``.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

from devstack._binaries import build_with_script, cache_dir, repo_root
from devstack._errors import StackError

__all__ = [
    "BRIDGE",
    "CGROUP_ROOT",
    "CNI_BIN_DIR",
    "KUBELET_HOST_DIR",
    "KUBEPODS",
    "NODE_IP",
    "NODE_NAME",
    "POD_SUBNET",
    "SERVICE_IP",
    "NodePaths",
    "ensure_packages",
    "node_binaries",
    "run",
]

NODE_NAME = "routing-dev-node"
BRIDGE = "routing-dev0"
POD_SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
NODE_IP = str(next(POD_SUBNET.hosts()))
"""The bridge's address: the node's InternalIP, and where pods reach the host's loopback."""
SERVICE_IP = "10.0.0.1"
"""The ``kubernetes`` Service address: first of the API server's --service-cluster-ip-range."""
CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBELET_HOST_DIR = Path("/var/lib/kubelet")
"""kubelet's device-plugin socket lives here whatever --root-dir says."""
KUBEPODS = "kubepods"
_PACKAGES = (
    "containerd", "runc", "containernetworking-plugins", "conntrack", "iptables", "dnsmasq-base"
)  # fmt: skip
_NODE_SCRIPT = Path("hack") / "build-node-binaries.sh"


class NodePaths:
    """Every path of the node under ``<state dir>/node``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.root = state_dir / "node"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_root(self) -> Path:
        return self.kubelet / "root"

    @property
    def kubelet_config(self) -> Path:
        return self.kubelet / "config.yaml"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def tag(self) -> str:
        """Comment on every iptables rule this node adds: how ``down`` finds them again."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return f"routing-dev-node-{digest}"


def run(
    argv: list[str],
    *,
    what: str,
    check: bool = True,
    timeout: float = 120.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; with ``check``, a non-zero exit raises naming ``what`` and the output."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, input=input
    )
    if check and done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise StackError(f"{what}: `{' '.join(argv)}` failed: {output}")
    return done


def ensure_packages() -> None:
    """apt-get install the node's system packages once (a no-op when they are present)."""
    executables = ("containerd", "runc", "conntrack", "iptables", "dnsmasq")
    missing = [exe for exe in executables if shutil.which(exe) is None]
    if not missing and (CNI_BIN_DIR / "bridge").is_file():
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError(
            f"node: {', '.join(missing) or 'CNI plugins'} missing and apt-get is not available; "
            f"install {' '.join(_PACKAGES)}"
        )
    with (cache_dir() / ".apt.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            [apt, "install", "-y", "--no-install-recommends", *_PACKAGES],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise StackError(
            f"node: apt-get install {' '.join(_PACKAGES)} failed:\n{done.stderr[-2000:]}"
        )


def node_binaries(names: list[str]) -> dict[str, Path]:
    """Paths of kubelet / kube-controller-manager / kube-scheduler / routing-pause, built once."""
    root = repo_root()
    if root is None:
        found = {n: Path(p) for n in names if (p := shutil.which(n))}
    else:
        found = build_with_script(root / _NODE_SCRIPT, names, "ROUTING_NODE_BINARIES")
    missing = [n for n in names if n not in found or not os.access(found[n], os.X_OK)]
    if missing:
        raise StackError(f"node binaries not found: {', '.join(missing)} (run {_NODE_SCRIPT})")
    return found
