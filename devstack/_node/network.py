"""The node's network: one Linux bridge for the pod subnet, and the tagged iptables rules that
connect pods to what runs on the host's loopback.

The bridge ``routing-dev0`` carries the pod subnet; its address is the node's InternalIP, so
kubelet, probes and ``kubectl exec`` never touch a public interface. Two DNAT rules (tagged, like
every rule here, with a comment naming the state directory) let pods reach what runs on the
host's loopback: the API server through the ``kubernetes`` Service address, and every other
loopback service (the Firestore emulator, redis, the GCS emulator) through the bridge address; an
SNAT rule makes them loopback clients there, and a filter rule drops anything else a pod sends to
the host's loopback. There is no kube-proxy: this is one node for one chart, not a general
cluster.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shlex
import subprocess
from pathlib import Path

from devstack._components import LOOPBACK
from devstack._errors import StackError
from devstack._node.host import BRIDGE, NODE_IP, POD_SUBNET, SERVICE_IP, NodePaths, run

__all__ = ["NodeNetwork"]


class NodeNetwork:
    """The bridge, its address, and the rules that connect pods to the host's loopback."""

    def __init__(self, paths: NodePaths) -> None:
        self.paths = paths
        self.gateway = NODE_IP

    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", *args], what="node network", check=check)

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
        done = run(["iptables", "-w", "-t", table, "-S"], what="iptables")
        return [line for line in done.stdout.splitlines() if self.paths.tag in line]

    def _replace_rules(self, rules: list[tuple[str, str, list[str]]]) -> None:
        self.remove_rules()
        for table, chain, rule in rules:
            run(
                ["iptables", "-w", "-t", table, "-A", chain,
                 "-m", "comment", "--comment", self.paths.tag, *rule],
                what="iptables",
            )  # fmt: skip

    def remove_rules(self) -> None:
        for table in ("nat", "filter"):
            for line in self._rules(table):
                argv = shlex.split(line)
                if argv[0] == "-A":
                    run(["iptables", "-w", "-t", table, "-D", *argv[1:]], what="iptables")

    def remove_bridge(self) -> None:
        """Delete every interface enslaved to the bridge (stale veths), then the bridge."""
        if not self.bridge_exists():
            return
        for link in self.veths():
            self._ip("link", "delete", link, check=False)
        self._ip("link", "delete", BRIDGE)

    def veths(self) -> list[str]:
        """The interfaces enslaved to the bridge (the pods' veth ends)."""
        if not self.bridge_exists():
            return []
        links = json.loads(self._ip("-j", "link", "show", "master", BRIDGE).stdout or "[]")
        return [str(link["ifname"]) for link in links]

    def tagged_rules(self) -> list[str]:
        return [*self._rules("nat"), *self._rules("filter")]


def _write_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
    except OSError as exc:
        raise StackError(f"node network: cannot set sysctl {key}={value}: {exc}") from exc
