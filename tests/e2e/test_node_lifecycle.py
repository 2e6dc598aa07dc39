"""The local node's own contract: ``up`` gives one Ready node that runs a pod on the bridge
network; ``down`` leaves nothing on the host — no process, no mount, no veth, no bridge, no
iptables rule, no cgroup.

Why: the node touches host-wide state (a bridge, NAT rules, kubepods cgroups, overlay and netns
mounts). A teardown that leaks any of it breaks the next run or the developer's machine, so the
whole host is compared before and after, not just our own records. Runs with
``--cluster=node`` (``hack/e2e.sh``) on the session's stack: it stops the node if the other e2e
tests started it, so the host is compared with its state before any node ran.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from devstack._node import NODE_COMPONENTS
from devstack._node.host import NODE_IP, NODE_NAME, POD_SUBNET
from devstack._node.images import pause_ref
from devstack._node.teardown import node_leftovers
from devstack._procs import marked_pids, marker_of
from devstack.stack import LocalStack
from devstack.testing import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def iptables_rules() -> list[str]:
    """Every rule and chain of the tables a node touches, without packet counters."""
    rules = []
    for table in ("nat", "filter", "mangle"):
        out = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            if line.startswith("#"):
                continue
            rules.append(re.sub(r"\[\d+:\d+\]", "", line))
    return rules


@pytest.fixture
def node_stack(e2e_gate: str, local_stack: LocalStack) -> Iterator[LocalStack]:
    """The session's stack with its node stopped (only one node runs per machine)."""
    if e2e_gate != "node":
        pytest.skip("the local node's lifecycle runs with --cluster=node")
    local_stack.down(list(NODE_COMPONENTS))
    try:
        yield local_stack
    finally:
        local_stack.down(list(NODE_COMPONENTS))


def kubectl_json(stack: LocalStack, *args: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={stack.kubeconfig}", *args, "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got: dict = json.loads(done.stdout)  # type: ignore[type-arg]
    return got


def test_node_runs_a_pod_and_down_leaves_nothing_behind(node_stack: LocalStack) -> None:
    stack = node_stack
    before = iptables_rules()
    statuses = stack.up(list(NODE_COMPONENTS))
    assert set(NODE_COMPONENTS) <= set(statuses)

    node = kubectl_json(stack, "get", "node", NODE_NAME)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True", node["status"]["conditions"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP

    # A pod scheduled by kube-scheduler, run by kubelet through containerd, on the bridge.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {
            "containers": [{"name": "c", "image": pause_ref()[0], "imagePullPolicy": "Never"}],
            "terminationGracePeriodSeconds": 1,
        },
    }
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={stack.kubeconfig}", "apply", "-f", "-"],
        input=yaml.safe_dump(pod), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    def running() -> dict | None:  # type: ignore[type-arg]
        got = kubectl_json(stack, "get", "pod", "sleeper")
        return got if got["status"].get("phase") == "Running" else None

    got = wait_for(running, timeout=120, interval=1, what="pod sleeper Running")
    assert got["spec"]["nodeName"] == NODE_NAME
    assert got["status"]["podIP"] in {str(h) for h in POD_SUBNET.hosts()}
    during = node_leftovers(stack.state_dir)
    assert during["mounts"] and during["links"] and during["iptables"], during

    stack.down(list(NODE_COMPONENTS))
    left = {marker_of(pid) for pid in marked_pids(stack.state_dir)}
    assert not {name for _, name in filter(None, left)} & set(NODE_COMPONENTS), left
    assert node_leftovers(stack.state_dir) == {
        "mounts": [], "links": [], "iptables": [], "cgroups": []
    }  # fmt: skip
    assert iptables_rules() == before
