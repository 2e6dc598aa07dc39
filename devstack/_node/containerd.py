"""containerd for the node: a config of its own (runc, cgroupfs, everything under the state
directory), the bridge CNI network, and the local pause image imported once it answers.

Stopping it is where the node's host state goes: tasks killed, mounts, veths, tagged rules and
kubepods cgroups removed (see ``teardown``).
"""

from __future__ import annotations

import json
import os
import shutil

from devstack._components import Component, Context
from devstack._errors import StackError
from devstack._node.host import BRIDGE, CNI_BIN_DIR, POD_SUBNET, NodePaths, ensure_packages, run
from devstack._node.images import ctr, image_present, pause_archive, pause_ref
from devstack._node.network import NodeNetwork
from devstack._node.teardown import kill_tasks, remove_cgroups, unmount_all

__all__ = ["Containerd"]

_SOCKET_MAX = 100
"""sun_path holds 108 bytes; containerd appends suffixes (``.ttrpc``)."""


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
        ensure_packages()
        paths = NodePaths(ctx.state_dir)
        if len(str(paths.socket)) > _SOCKET_MAX:
            raise StackError(
                f"containerd: socket path {paths.socket} is longer than {_SOCKET_MAX} bytes; "
                "use a shorter --state-dir"
            )
        for d in (paths.containerd, paths.cni_conf_dir, paths.cni_ipam_dir):
            d.mkdir(parents=True, exist_ok=True)
        ref, _ = pause_ref()
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
            and run(
                ["ctr", "--address", str(paths.socket), "version"], what="containerd", check=False
            ).returncode
            == 0
        )

    def after_healthy(self, ctx: Context) -> None:
        ref, binary = pause_ref()
        if not image_present(ctx.state_dir, ref):
            ctr(NodePaths(ctx.state_dir), "images", "import", str(pause_archive(ref, binary)))

    def before_stop(self, ctx: Context) -> None:
        kill_tasks(NodePaths(ctx.state_dir))

    def after_stop(self, ctx: Context) -> None:
        """Whatever kubelet and the CNI plugin did not undo: mounts, veths, rules, cgroups."""
        paths = NodePaths(ctx.state_dir)
        if not paths.root.exists():
            return
        unmount_all(paths.root)
        net = NodeNetwork(paths)
        net.remove_bridge()
        net.remove_rules()
        remove_cgroups()

    def exports(self, ctx: Context) -> dict[str, str]:
        return {
            "CONTAINERD_ADDRESS": str(NodePaths(ctx.state_dir).socket),
            "CONTAINERD_NAMESPACE": "k8s.io",
        }
