"""A real node beside the local control plane: containerd, kubelet, kube-controller-manager and
kube-scheduler, so pods run, probes are sent and controllers act (``routing-dev up --node``).

Why a node of our own rather than kind: kind needs a Docker daemon and pulls images; this machine
(and CI) has neither. Everything here comes from the local package manager (containerd, runc, the
CNI plugins, conntrack, iptables) or is built from ``k8s.io/kubernetes`` at the API server's
version by ``hack/build-node-binaries.sh``. No image is ever pulled: the sandbox ("pause") image is
a static binary built locally and imported, and so is the project image.

Layout under the stack's state directory (all of it removed from the system on ``down``):

    node/containerd/   config.toml, root/, state/ (netns mounts live here), containerd.sock
    node/cni/          net.d/ (the bridge network), ipam/ (host-local leases)
    node/kubelet/      config.yaml, root/ (pod volumes), pod-logs/
    node/pki/          serving certificates of kube-controller-manager and kube-scheduler

Networking: one Linux bridge ``routing-dev0`` carries the pod subnet; its address is the node's
InternalIP, so kubelet, probes and ``kubectl exec`` never touch a public interface. Two DNAT rules
(tagged, like every rule here, with a comment naming the state directory) let pods reach what
runs on the host's loopback: the API server through the ``kubernetes`` Service address, and every
other loopback service (the Firestore emulator, redis, the GCS emulator) through the bridge
address; an SNAT rule makes them loopback clients there, and a filter rule drops anything else a
pod sends to the host's loopback. There is no
kube-proxy and no cluster DNS: this is one node for one chart, not a general cluster.

Only one node runs per machine: kubelet's cgroups (``/kubepods``) and the bridge are host-wide.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from devstack._binaries import build_with_script, cache_dir, repo_root
from devstack._components import LOOPBACK, Component, Context
from devstack._errors import StackError
from devstack._health import http_ok
from devstack._kube import kubectl
from devstack._procs import marker_of

__all__ = [
    "DEFAULT_NODE_IMAGE",
    "NODE_COMPONENTS",
    "NODE_IP",
    "NODE_NAME",
    "NodeNetwork",
    "import_image",
    "import_node_images",
    "node_leftovers",
    "pause_image_ref",
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
_SOCKET_MAX = 100
"""sun_path holds 108 bytes; containerd appends suffixes (``.ttrpc``)."""


# ---- paths and identity -------------------------------------------------------------------------


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


class NodeNetwork:
    """The bridge, its address, and the rules that connect pods to the host's loopback."""

    def __init__(self, paths: NodePaths) -> None:
        self.paths = paths
        self.gateway = NODE_IP

    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", *args], what="node network", check=check)

    def bridge_exists(self) -> bool:
        return self._ip("link", "show", BRIDGE, check=False).returncode == 0

    def ensure(self, api_port: int) -> None:
        """Create the bridge with the node address, the sysctls, and the two DNAT rules."""
        if not self.bridge_exists():
            self._refuse_overlap()
            self._ip("link", "add", BRIDGE, "type", "bridge")
        self._ip("addr", "replace", f"{self.gateway}/{POD_SUBNET.prefixlen}", "dev", BRIDGE)
        self._ip("link", "set", BRIDGE, "up")
        # Forwarding between the bridge and the host, and loopback destinations reachable from
        # the bridge (what the DNAT rules below rely on).
        _write_sysctl("net/ipv4/ip_forward", "1")
        _write_sysctl(f"net/ipv4/conf/{BRIDGE}/route_localnet", "1")
        self._replace_rules(
            [
                # In-cluster clients (KUBERNETES_SERVICE_HOST) reach the loopback API server.
                ("nat", "PREROUTING", ["-d", SERVICE_IP, "-p", "tcp", "--dport", "443",
                 "-j", "DNAT", "--to-destination", f"{LOOPBACK}:{api_port}"]),
                # Pods reach the host's loopback services at the bridge address, same port.
                ("nat", "PREROUTING", ["-s", str(POD_SUBNET), "-d", self.gateway, "-p", "tcp",
                 "-j", "DNAT", "--to-destination", LOOPBACK]),
                # ... seen there as a loopback client (redis' protected mode refuses others).
                ("nat", "INPUT", ["-s", str(POD_SUBNET), "-d", "127.0.0.0/8",
                 "-j", "SNAT", "--to-source", LOOPBACK]),
                # route_localnet must not let a pod address the host's loopback directly: only
                # the two translations above get through (kubelet's own guard is turned off,
                # as it would leave host-wide chains behind).
                ("filter", "INPUT", ["-i", BRIDGE, "-d", "127.0.0.0/8", "-m", "conntrack",
                 "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"]),
            ]
        )  # fmt: skip

    def _refuse_overlap(self) -> None:
        routes = json.loads(self._ip("-j", "route", "show").stdout or "[]")
        for route in routes:
            dst = route.get("dst", "")
            if dst in ("default", "") or route.get("dev") == BRIDGE:
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.IPv4Network(dst, strict=False).overlaps(POD_SUBNET):
                    raise StackError(
                        f"kubelet: the pod subnet {POD_SUBNET} overlaps route {dst} on "
                        f"{route.get('dev')}; free that range to run the local node"
                    )

    def _rules(self, table: str) -> list[str]:
        done = _run(["iptables", "-w", "-t", table, "-S"], what="iptables")
        return [line for line in done.stdout.splitlines() if self.paths.tag in line]

    def _replace_rules(self, rules: list[tuple[str, str, list[str]]]) -> None:
        self.remove_rules()
        for table, chain, rule in rules:
            _run(
                ["iptables", "-w", "-t", table, "-A", chain,
                 "-m", "comment", "--comment", self.paths.tag, *rule],
                what="iptables",
            )  # fmt: skip

    def remove_rules(self) -> None:
        for table in ("nat", "filter"):
            for line in self._rules(table):
                argv = shlex.split(line)
                if argv[0] == "-A":
                    _run(["iptables", "-w", "-t", table, "-D", *argv[1:]], what="iptables")

    def remove_bridge(self) -> None:
        """Delete every interface enslaved to the bridge (stale veths), then the bridge."""
        if not self.bridge_exists():
            return
        links = json.loads(self._ip("-j", "link", "show", "master", BRIDGE).stdout or "[]")
        for link in links:
            self._ip("link", "delete", link["ifname"], check=False)
        self._ip("link", "delete", BRIDGE)

    def veths(self) -> list[str]:
        if not self.bridge_exists():
            return []
        links = json.loads(self._ip("-j", "link", "show", "master", BRIDGE).stdout or "[]")
        return [str(link["ifname"]) for link in links]

    def tagged_rules(self) -> list[str]:
        return [*self._rules("nat"), *self._rules("filter")]


# ---- helpers ------------------------------------------------------------------------------------


def _run(
    argv: list[str],
    *,
    what: str,
    check: bool = True,
    timeout: float = 120.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, input=input
    )
    if check and done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise StackError(f"{what}: `{' '.join(argv)}` failed: {output}")
    return done


def _write_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
    except OSError as exc:
        raise StackError(f"node network: cannot set sysctl {key}={value}: {exc}") from exc


def _ensure_packages() -> None:
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


def _ctr(paths: NodePaths, *args: str, check: bool = True, timeout: float = 300.0) -> str:
    done = _run(
        ["ctr", "--address", str(paths.socket), "--namespace", "k8s.io", *args],
        what="containerd", check=check, timeout=timeout,
    )  # fmt: skip
    return done.stdout


def _pause_ref() -> tuple[str, Path]:
    binary = node_binaries(["routing-pause"])["routing-pause"]
    tag = binary.parent.name.removeprefix("routing-pause-")
    return f"localhost/routing-pause:{tag}", binary


def pause_image_ref() -> str:
    """The local sandbox image's name (``localhost/routing-pause:<content hash>``)."""
    return _pause_ref()[0]


def _pause_archive(ref: str, binary: Path) -> Path:
    """The pause image as an OCI archive, built with podman once and cached by content."""
    archive = cache_dir() / "images" / f"{ref.rsplit('/', 1)[1].replace(':', '-')}.oci.tar"
    if archive.is_file():
        return archive
    if shutil.which("podman") is None:
        raise StackError("containerd: podman is needed once to build the local pause image")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(binary, Path(tmp) / "pause")
        (Path(tmp) / "Containerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        )
        _run(["podman", "build", "--quiet", "--tag", ref, tmp], what="pause image", timeout=300)
        part = archive.with_suffix(".part")
        _run(
            ["podman", "save", "--format", "oci-archive", "--output", str(part), ref],
            what="pause image", timeout=300,
        )  # fmt: skip
        part.replace(archive)
    return archive


def image_present(state_dir: Path, ref: str) -> bool:
    return ref in _ctr(NodePaths(state_dir), "images", "ls", "--quiet").split()


def import_image(state_dir: Path, ref: str) -> Path:
    """Import podman's image ``ref`` into the node's containerd; cached by podman's image id.

    Raises with the fix when podman does not have it (``make image`` builds it).
    """
    inspect = _run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref], what="image", check=False
    )
    if inspect.returncode != 0:
        raise StackError(
            f"image {ref} is not in podman's store ({inspect.stderr.strip()}); build it first "
            "with `make image`"
        )
    image_id = inspect.stdout.strip()[:16]
    name = ref.rsplit("/", 1)[-1].replace(":", "-")
    archive = cache_dir() / "images" / f"{name}-{image_id}.oci.tar"
    if not archive.is_file():
        archive.parent.mkdir(parents=True, exist_ok=True)
        part = archive.with_suffix(".part")
        _run(
            ["podman", "save", "--format", "oci-archive", "--output", str(part), ref],
            what="image", timeout=600,
        )  # fmt: skip
        part.replace(archive)
        for older in archive.parent.glob(f"{name}-*.oci.tar"):
            if older != archive:
                older.unlink()  # one archive per image name: the cache does not grow per build
    _ctr(NodePaths(state_dir), "images", "import", str(archive), timeout=600)
    return archive


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
    _run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", f"/CN={name}"],
        what=name,
    )  # fmt: skip
    _run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.ca_crt),
         "-CAkey", str(ca.dir / "ca.key"), "-CAcreateserial", "-days", "3650",
         "-extfile", str(ext), "-out", str(crt)],
        what=name,
    )  # fmt: skip
    return crt, key


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


# ---- teardown -----------------------------------------------------------------------------------


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    prefix = str(root)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=len, reverse=True)


def _kubepods_cgroups() -> list[Path]:
    """kubelet's cgroup directories in every v1 hierarchy (and the unified one), deepest first."""
    found: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / KUBEPODS
        if top.is_dir():
            found.extend(p for p in top.rglob("*") if p.is_dir())
            found.append(top)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def node_leftovers(state_dir: Path) -> dict[str, list[str]]:
    """What a node left on the host: mounts, bridge ports, tagged iptables rules, cgroups.

    Empty lists everywhere once ``down`` has run; the teardown test asserts exactly that.
    """
    paths = NodePaths(Path(state_dir).resolve())
    net = NodeNetwork(paths)
    return {
        "mounts": _mounts_under(paths.root),
        "links": [*net.veths(), *([BRIDGE] if net.bridge_exists() else [])],
        "iptables": net.tagged_rules(),
        "cgroups": [str(p) for p in _kubepods_cgroups()],
    }


def _kill_tasks(paths: NodePaths) -> None:
    """SIGKILL every container still running under this containerd and delete its task."""
    if not paths.socket.exists():
        return
    tasks = _ctr(paths, "tasks", "ls", "--quiet", check=False).split()
    for task in tasks:
        _ctr(paths, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 20
    while tasks and time.monotonic() < deadline:
        for task in tasks:
            _ctr(paths, "tasks", "delete", task, check=False)
        tasks = _ctr(paths, "tasks", "ls", "--quiet", check=False).split()
        if tasks:
            time.sleep(0.2)


def _unmount_all(root: Path) -> None:
    for point in _mounts_under(root):
        if _run(["umount", point], what="umount", check=False).returncode != 0:
            _run(["umount", "--lazy", point], what="umount", check=False)
    left = _mounts_under(root)
    if left:
        raise StackError(f"node: mounts left under {root}: {left}")


def _remove_cgroups(timeout: float = 15.0) -> None:
    """rmdir kubelet's cgroups, deepest first; a killed container may take a moment to leave."""
    deadline = time.monotonic() + timeout
    while True:
        busy = []
        for directory in _kubepods_cgroups():
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                busy.append(directory)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise StackError(f"node: cgroups still in use: {[str(d) for d in busy]}")
        time.sleep(0.2)


# ---- components ---------------------------------------------------------------------------------


class Containerd(Component):
    """containerd with a config of our own: runc, cgroupfs, everything under the state dir."""

    name = "containerd"
    port_names = ()
    timeout = 30.0
    grace = 15.0

    def prepare(self, ctx: Context) -> None:
        if os.geteuid() != 0:
            raise StackError(
                "containerd: the local node needs root (it runs containers, creates a bridge and "
                "iptables rules); run `routing-dev up --node` as root, or leave out --node"
            )
        _ensure_packages()
        paths = NodePaths(ctx.state_dir)
        if len(str(paths.socket)) > _SOCKET_MAX:
            raise StackError(
                f"containerd: socket path {paths.socket} is longer than {_SOCKET_MAX} bytes; "
                "use a shorter --state-dir"
            )
        for d in (paths.containerd, paths.cni_conf_dir, paths.cni_ipam_dir):
            d.mkdir(parents=True, exist_ok=True)
        ref, _ = _pause_ref()
        c = paths.containerd
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        paths.containerd_config.write_text(
            f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"

[grpc]
  address = "{paths.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"

[{cri}]
  sandbox_image = "{ref}"
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  # This machine may not lower oom_score_adj (kubelet asks -998 for sandboxes).
  restrict_oom_score_adj = true
  [{cri}.containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{paths.cni_conf_dir}"
"""
        )
        network = {
            "cniVersion": "0.4.0",
            "name": "routing-dev",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(paths.cni_ipam_dir),
                        "ranges": [[{"subnet": str(POD_SUBNET)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "loopback"},
            ],
        }
        (paths.cni_conf_dir / "10-routing-dev.conflist").write_text(json.dumps(network, indent=2))

    def argv(self, ctx: Context) -> list[str]:
        exe = shutil.which("containerd")
        assert exe is not None  # prepare() installed it
        return [exe, "--config", str(NodePaths(ctx.state_dir).containerd_config)]

    def healthy(self, ctx: Context) -> bool:
        paths = NodePaths(ctx.state_dir)
        return (
            paths.socket.exists()
            and _run(
                ["ctr", "--address", str(paths.socket), "version"], what="containerd", check=False
            ).returncode
            == 0
        )

    def after_healthy(self, ctx: Context) -> None:
        ref, binary = _pause_ref()
        if not image_present(ctx.state_dir, ref):
            _ctr(NodePaths(ctx.state_dir), "images", "import", str(_pause_archive(ref, binary)))

    def before_stop(self, ctx: Context) -> None:
        _kill_tasks(NodePaths(ctx.state_dir))

    def after_stop(self, ctx: Context) -> None:
        """Whatever kubelet and the CNI plugin did not undo: mounts, veths, rules, cgroups."""
        paths = NodePaths(ctx.state_dir)
        if not paths.root.exists():
            return
        _unmount_all(paths.root)
        net = NodeNetwork(paths)
        net.remove_bridge()
        net.remove_rules()
        _remove_cgroups()

    def exports(self, ctx: Context) -> dict[str, str]:
        return {
            "CONTAINERD_ADDRESS": str(NodePaths(ctx.state_dir).socket),
            "CONTAINERD_NAMESPACE": "k8s.io",
        }


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
            "address": NodeNetwork(paths).gateway,
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
            # No host-wide KUBE-* chains: the only rules are the node's own, tagged, above.
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
            f"--node-ip={NodeNetwork(paths).gateway}",
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
        while time.monotonic() < deadline and _mounts_under(paths.kubelet_root / "pods"):
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


NODE_COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (Containerd(), Kubelet(), ClusterDns(), KubeControllerManager(), KubeScheduler())
}
"""The node's components by name, in start order (after the base stack's)."""


DEFAULT_NODE_IMAGE = "localhost/routing-registry:dev"
"""What ``make image`` builds (podman's name for ``routing-registry:dev``)."""


def import_node_images(state_dir: Path, refs: list[str] | None) -> list[str]:
    """Import ``refs`` into the node; with None, the project image when podman has it."""
    if refs is None:
        if (
            shutil.which("podman") is None
            or _run(
                ["podman", "image", "exists", DEFAULT_NODE_IMAGE], what="image", check=False
            ).returncode
            != 0
        ):
            return []
        refs = [DEFAULT_NODE_IMAGE]
    for ref in refs:
        import_image(state_dir, ref)
    return refs
