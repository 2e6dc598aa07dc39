"""Taking the node off the host: what containerd and kubelet leave behind (running tasks, mounts,
kubepods cgroups) removed, and ``node_leftovers``, the host-wide check that nothing is left.
"""

from __future__ import annotations

import time
from pathlib import Path

from devstack._errors import StackError
from devstack._node.host import BRIDGE, CGROUP_ROOT, KUBEPODS, NodePaths, run
from devstack._node.images import ctr
from devstack._node.network import NodeNetwork

__all__ = ["kill_tasks", "mounts_under", "node_leftovers", "remove_cgroups", "unmount_all"]


def mounts_under(root: Path) -> list[str]:
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
        "mounts": mounts_under(paths.root),
        "links": [*net.veths(), *([BRIDGE] if net.bridge_exists() else [])],
        "iptables": net.tagged_rules(),
        "cgroups": [str(p) for p in _kubepods_cgroups()],
    }


def kill_tasks(paths: NodePaths) -> None:
    """SIGKILL every container still running under this containerd and delete its task."""
    if not paths.socket.exists():
        return
    tasks = ctr(paths, "tasks", "ls", "--quiet", check=False).split()
    for task in tasks:
        ctr(paths, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 20
    while tasks and time.monotonic() < deadline:
        for task in tasks:
            ctr(paths, "tasks", "delete", task, check=False)
        tasks = ctr(paths, "tasks", "ls", "--quiet", check=False).split()
        if tasks:
            time.sleep(0.2)


def unmount_all(root: Path) -> None:
    """Unmount everything below ``root``, lazily where a plain unmount is refused."""
    for point in mounts_under(root):
        if run(["umount", point], what="umount", check=False).returncode != 0:
            run(["umount", "--lazy", point], what="umount", check=False)
    left = mounts_under(root)
    if left:
        raise StackError(f"node: mounts left under {root}: {left}")


def remove_cgroups(timeout: float = 15.0) -> None:
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
