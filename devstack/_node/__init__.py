"""A real node beside the local control plane: containerd, kubelet, kube-controller-manager and
kube-scheduler, so pods run, probes are sent and controllers act (``routing-dev up --node``).

Why a node of our own rather than kind: kind needs a Docker daemon and pulls images; this machine
(and CI) has neither. Everything here comes from the local package manager or is built from
``k8s.io/kubernetes`` at the API server's version. No image is ever pulled: the sandbox ("pause")
image is a static binary built locally and imported, and so is the project image.

The package by responsibility:

    host.py           names, addresses, paths under the state directory, packages, binaries
    network.py        the bridge and the tagged iptables rules that reach the host's loopback
    images.py         the pause image and podman's images imported into containerd
    teardown.py       tasks, mounts and cgroups removed on ``down``; the leftovers check
    containerd.py     the ``containerd`` component (config, CNI network, cleanup on stop)
    kubelet.py        the ``kubelet`` and ``cluster-dns`` components
    control_plane.py  the ``kube-controller-manager`` and ``kube-scheduler`` components

There is no kube-proxy and no general cluster DNS: this is one node for one chart, not a general
cluster. Only one node runs per machine: kubelet's cgroups (``/kubepods``) and the bridge are
host-wide.
"""

from __future__ import annotations

from devstack._components import Component
from devstack._node.containerd import Containerd
from devstack._node.control_plane import KubeControllerManager, KubeScheduler
from devstack._node.kubelet import ClusterDns, Kubelet

__all__ = ["NODE_COMPONENTS"]

NODE_COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (Containerd(), Kubelet(), ClusterDns(), KubeControllerManager(), KubeScheduler())
}
"""The node's components by name, in start order (after the base stack's)."""
