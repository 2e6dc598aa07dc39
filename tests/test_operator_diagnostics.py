"""First contact with the operator: the documented commands work, and a blocked operator says why.

Covers, each with ``routing-operator`` started from its console script as a user types it (no
``--standalone``) against the real kube-apiserver and Firestore emulator:

- README / DESIGN §9: ``routing-dev up`` (twice: the second reuses everything), ``. env.sh``,
  ``routing-operator --namespace engines`` and ``routing-operator --all-namespaces`` with their
  defaults drive an applied entry to Ready (``up`` installs kopf's peering CRDs and objects);
- a missing peering object, a missing RoutingEntry CRD (a second API server without it),
  Firestore unreachable (a port nothing listens on), RBAC forbidden (a ServiceAccount token
  with no rights) and credentials the API server refuses (a wrong token): each is in the log
  within 5 s of the operator's first line, on ``/readyz`` (503, JSON naming the reason and the
  fix, ``/healthz`` still 200) and in ``routing_operator_blocked{reason}``; where the fix can be
  applied here, applying it turns ``/readyz`` to 200 and the entry to Ready;
- the engines app (``uvicorn --factory …``) with Firestore unreachable: ``/readyz`` 503 naming
  the error within 5 s of its startup, and the same in its log;
- the log cadence: a reason is logged when it appears, repeated at most every 30 s, and its end
  is logged (``Diagnostics.update`` with explicit times: no component involved).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from operator_harness import Entries, entry

from devstack import LocalStack, free_port, stop_group
from devstack._kube import PEERING_NAME, PEERING_NAMESPACES, kubectl
from devstack.testing import metric_sum, wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIRST_WORDS_S = 5.0
"""The operator says why it waits within this many seconds of its first log line."""


class TypedOperator:
    """``routing-operator ARGS`` started the way a shell starts it: the console script, the
    environment given, output to a log file, in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.argv = [str(BIN / "routing-operator"), *args]
        self.env = env
        self.log_path = log_dir / f"operator-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TypedOperator:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_group(self.proc.pid, what="routing-operator")
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def said_within(self, text: str, seconds: float = FIRST_WORDS_S) -> str:
        """Wait for the first log line, then for ``text`` at most ``seconds`` later."""
        wait_for(lambda: "starting:" in self.log() or self._dead(), timeout=60, what="a first line")
        assert not self._dead(), f"the operator exited:\n{self.log()}"
        wait_for(
            lambda: text in self.log(),
            timeout=seconds,
            what=lambda: f"{text!r} in the log:\n{self.log()[-4000:]}",
        )
        return next(line for line in self.log().splitlines() if text in line)

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None


@pytest.fixture
def typed(tmp_path: Path) -> Iterator[list[TypedOperator]]:
    """Operators a test starts; each is stopped, and its log printed, at the end."""
    started: list[TypedOperator] = []
    yield started
    for op in started:
        op.stop()
        print(f"--- {' '.join(op.argv[1:])} ({op.log_path}) ---\n{op.log()[-6000:]}")


def run_typed(
    started: list[TypedOperator], args: list[str], env: dict[str, str], log_dir: Path
) -> TypedOperator:
    op = TypedOperator(args, env, log_dir).start()
    started.append(op)
    return op


def health(port: int, path: str = "/readyz") -> tuple[int, dict[str, Any]]:
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.TransportError:
        return 0, {}
    return resp.status_code, resp.json()


def blocked_reasons(port: int) -> set[str]:
    return {b["reason"] for b in health(port)[1].get("blocked", [])}


def blocked_metric(port: int, reason: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return -1.0
    return metric_sum(text, "routing_operator_blocked", {"reason": reason})


def assert_reported(op: TypedOperator, reason: str, ports: tuple[int, int]) -> dict[str, Any]:
    """``reason`` in the log within 5 s, on /readyz (503) with a fix, on /healthz (200), and
    as the gauge; returns the /readyz item."""
    line = op.said_within(f"cannot work: {reason}: ")
    assert "Fix: " in line, line
    metrics, live = ports
    wait_for(lambda: reason in blocked_reasons(live), timeout=10, what=f"{reason} on /readyz")
    status, body = health(live)
    assert status == 503 and body["status"] == "blocked", body
    [item] = [b for b in body["blocked"] if b["reason"] == reason]
    assert item["message"] and item["fix"] and item["since"], item
    assert health(live, "/healthz")[0] == 200, "a blocked operator is alive: no restart fixes it"
    wait_for(lambda: blocked_metric(metrics, reason) == 1.0, timeout=10, what=f"gauge {reason}")
    return item


def ports_args() -> tuple[tuple[int, int], list[str]]:
    """Free metrics and health ports, and a collection of this test's own (the session's
    emulator is shared: another test's document for the same identity would be a Conflict)."""
    metrics, live = free_port(), free_port()
    return (metrics, live), [
        "--metrics-port", str(metrics), "--liveness-port", str(live),
        "--collection", f"routing_{uuid.uuid4().hex[:8]}",
    ]  # fmt: skip


# -- the documented commands ---------------------------------------------------------------------


def env_of(env_sh: Path) -> dict[str, str]:
    """The environment a shell has after ``. env.sh``."""
    out = subprocess.run(
        ["bash", "-c", f'. "{env_sh}" && env -0'], capture_output=True, check=True
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def routing_dev_up(state_dir: Path) -> tuple[Path, str]:
    done = subprocess.run(
        [str(BIN / "routing-dev"), "up", "--state-dir", str(state_dir)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip()), done.stderr


def test_documented_operator_commands_work_after_routing_dev_up(
    local_stack: LocalStack, typed: list[TypedOperator], tmp_path: Path
) -> None:
    """README: ``. "$(routing-dev up)" && kubectl apply -f …`` then ``routing-operator
    --namespace engines``; DESIGN §9: ``routing-operator --all-namespaces``. Default flags,
    default ports, default peering: each drives an entry to Ready."""
    env_sh, _ = routing_dev_up(local_stack.state_dir)
    env_sh_again, again = routing_dev_up(local_stack.state_dir)
    assert env_sh_again == env_sh
    assert "started" not in again, f"a second `up` reuses everything:\n{again}"
    env = {**os.environ, **env_of(env_sh)}
    kubeconfig = Path(env["KUBECONFIG"])
    for namespace in PEERING_NAMESPACES:
        got = kubectl(kubeconfig, "get", "kopfpeering", PEERING_NAME, "-n", namespace)
        assert got.returncode == 0, got.stderr
    assert kubectl(kubeconfig, "get", "clusterkopfpeering", PEERING_NAME).returncode == 0

    from kubernetes import config

    api = config.new_client_from_config(str(kubeconfig))
    entries = Entries(api, "engines")
    tenant = f"docs{uuid.uuid4().hex[:6]}"
    try:
        for n, args in enumerate((["--namespace", "engines"], ["--all-namespaces"])):
            name = f"{tenant}-{n}"
            applied = kubectl(
                kubeconfig, "apply", "-n", "engines", "-f", "-",
                input=json.dumps(entry(name, tenant=tenant, kind=("kpi", "seo")[n])),
            )  # fmt: skip
            assert applied.returncode == 0, applied.stderr
            op = run_typed(typed, args, env, tmp_path)
            entries.wait_reason(name, "Synced", "True", timeout=90)
            wait_for(lambda: health(8081)[0] == 200, timeout=30, what="/readyz 200")
            assert health(8081)[1]["status"] == "working"
            entries.delete(name)
            wait_for(lambda name=name: entries.get(name) is None, timeout=60, what=f"{name} gone")
            op.stop()
            assert "cannot work" not in op.log()
    finally:
        for n in range(2):
            if entries.get(f"{tenant}-{n}") is not None:
                entries.delete(f"{tenant}-{n}")
        api.close()


# -- each reason, on the real API server ---------------------------------------------------------


def test_a_missing_peering_object_is_reported_and_its_fix_works(
    kube_cluster: Any,
    firestore_emulator: Any,
    namespace: str,
    entries: Entries,
    typed: list[TypedOperator],
    tmp_path: Path,
) -> None:
    ports, port_args = ports_args()
    env = {**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig)}
    peering = f"nope-{uuid.uuid4().hex[:4]}"
    op = run_typed(
        typed, ["--namespace", namespace, "--peering", peering, *port_args], env, tmp_path
    )
    item = assert_reported(op, "PeeringMissing", ports)
    assert f"KopfPeering '{peering}' does not exist in namespace(s) {namespace}" in item["message"]
    entries.create(entry("acme-kpi"))

    # The fix, as printed: the command before the first " (" is a shell line.
    command = item["fix"].removeprefix("create it: ").split(" (")[0]
    done = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    wait_for(lambda: health(ports[1])[0] == 200, timeout=30, what="/readyz 200 after the fix")
    assert blocked_metric(ports[0], "PeeringMissing") == 0.0
    entries.wait_reason("acme-kpi", "Synced", "True", timeout=60)
    assert "PeeringMissing resolved" in op.log()


def test_firestore_unreachable_is_reported(
    kube_cluster: Any, namespace: str, typed: list[TypedOperator], tmp_path: Path
) -> None:
    ports, port_args = ports_args()
    closed = free_port()  # nothing listens on it: real connection refusals
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_cluster.kubeconfig),
        "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{closed}",
        "GOOGLE_CLOUD_PROJECT": "routing-test",
    }
    created = kubectl(
        kube_cluster.kubeconfig, "apply", "-f", "-",
        input=json.dumps({
            "apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
            "metadata": {"name": PEERING_NAME, "namespace": namespace},
        }),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    op = run_typed(typed, ["--namespace", namespace, *port_args], env, tmp_path)
    item = assert_reported(op, "FirestoreUnreachable", ports)
    assert f"127.0.0.1:{closed}" in item["message"]
    assert blocked_reasons(ports[1]) == {"FirestoreUnreachable"}


def sa_kubeconfig(kube_cluster: Any, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig holding a real token of a ServiceAccount (TokenRequest API)."""
    made = kube_cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    assert made.returncode == 0, made.stderr
    token = kube_cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h")
    assert token.returncode == 0, token.stderr
    admin = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
                "users": [{"name": account, "user": {"token": token.stdout.strip()}}],
                "contexts": [{"name": "sa", "context": {"cluster": "local", "user": account}}],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return path


def test_rbac_forbidden_is_reported_and_granting_clears_it(
    kube_cluster: Any,
    firestore_emulator: Any,
    namespace: str,
    typed: list[TypedOperator],
    tmp_path: Path,
) -> None:
    kubeconfig = sa_kubeconfig(kube_cluster, namespace, "nobody", tmp_path / "sa.kubeconfig")
    ports, port_args = ports_args()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    op = run_typed(typed, ["--namespace", namespace, *port_args], env, tmp_path)
    item = assert_reported(op, "Forbidden", ports)
    user = f"system:serviceaccount:{namespace}:nobody"
    assert f"'{user}' may not list/watch/patch routingentries.routing.engines.io" in item["message"]
    assert f"get kopfpeerings.kopf.dev '{PEERING_NAME}'" in item["message"]

    for step in (
        ("create", "role", "operator", "-n", namespace, "--verb=get,list,watch,patch",
         "--resource=routingentries.routing.engines.io,kopfpeerings.kopf.dev"),
        ("create", "rolebinding", "operator", "-n", namespace, "--role=operator",
         f"--serviceaccount={namespace}:nobody"),
    ):  # fmt: skip
        done = kube_cluster.kubectl(*step)
        assert done.returncode == 0, done.stderr
    wait_for(
        lambda: "Forbidden" not in blocked_reasons(ports[1]),
        timeout=30,
        what=lambda: f"Forbidden cleared (readyz: {health(ports[1])})",
    )
    assert "Forbidden resolved" in op.log()


def test_credentials_the_api_server_refuses_are_reported(
    kube_cluster: Any,
    firestore_emulator: Any,
    namespace: str,
    typed: list[TypedOperator],
    tmp_path: Path,
) -> None:
    """An expired or wrong token (401 on every call), the first thing a stale kubeconfig does."""
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": "expired"}
    kubeconfig = tmp_path / "expired.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    ports, port_args = ports_args()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    op = run_typed(typed, ["--namespace", namespace, *port_args], env, tmp_path)
    item = assert_reported(op, "KubernetesUnavailable", ports)
    assert "HTTP 401 Unauthorized" in item["message"], item
    assert "Traceback" not in op.log(), "the startup list retries with one line, not a traceback"


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A second API server (its own etcd) given no RoutingEntry CRD: what a cluster looks like
    before the CRD is installed. kopf's peering is there (``up`` installs it)."""
    root = tmp_path_factory.mktemp("bare")
    (root / "no-crds").mkdir()
    stack = LocalStack(root / "state", project="routing-test", crds_dir=root / "no-crds")
    stack.up(["kube-apiserver"])
    yield stack
    stack.down()


def test_a_missing_crd_is_reported_and_installing_it_unblocks(
    bare_cluster: LocalStack, firestore_emulator: Any, typed: list[TypedOperator], tmp_path: Path
) -> None:
    ports, port_args = ports_args()
    env = {**os.environ, "KUBECONFIG": str(bare_cluster.kubeconfig)}
    op = run_typed(typed, ["--namespace", "default", *port_args], env, tmp_path)
    item = assert_reported(op, "CRDMissing", ports)
    assert "routingentries.routing.engines.io/v1alpha1" in item["message"]
    assert blocked_reasons(ports[1]) == {"CRDMissing"}

    applied = kubectl(bare_cluster.kubeconfig, "apply", "--server-side", "-f", str(ROOT / "crds"))
    assert applied.returncode == 0, applied.stderr
    wait_for(lambda: health(ports[1])[0] == 200, timeout=30, what="/readyz 200 once served")
    from kubernetes import config

    with config.new_client_from_config(str(bare_cluster.kubeconfig)) as api:
        entries = Entries(api, "default")
        entries.create(entry("acme-kpi"))
        entries.wait_reason("acme-kpi", "Synced", "True", timeout=90)


# -- the log cadence -----------------------------------------------------------------------------


def test_a_reason_is_logged_when_it_appears_repeated_at_most_every_30s_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from routing_operator.diagnostics import Blocker, Diagnostics

    diag = Diagnostics(lambda: [], repeat=30.0)
    missing = Blocker("CRDMissing", "not served", "install it")
    caplog.set_level(logging.INFO, logger="routing_operator.diagnostics")
    for t in (0.0, 2.0, 4.0, 29.0, 31.0, 33.0, 60.0, 62.0):
        diag.update([missing], t)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "cannot work: CRDMissing: not served. Fix: install it",
        "still cannot work (31s): CRDMissing: not served. Fix: install it",
        "still cannot work (62s): CRDMissing: not served. Fix: install it",
    ]
    assert diag.health()[0] == 503
    diag.update([], 70.0)
    assert caplog.records[-1].getMessage() == "CRDMissing resolved after 70s"
    status, body = diag.health()
    assert (status, body["status"], body["blocked"]) == (200, "working", [])


def test_the_stack_peering_name_is_the_operator_default() -> None:
    from routing_operator.cli import parse_args

    assert parse_args(["--all-namespaces"]).peering == PEERING_NAME


# -- the engines app -----------------------------------------------------------------------------


def test_the_engines_app_says_within_seconds_that_firestore_is_unreachable(tmp_path: Path) -> None:
    """``uvicorn --factory engines.chat.service.server:create_app`` (DESIGN §9) with
    ``FIRESTORE_EMULATOR_HOST`` on a port nothing listens on: ``/readyz`` answers 503 within 5 s
    of the app's startup, its registry item naming the refusal and the emulator, and the log
    says the same: the app does not sit out its registry timeout for a registry that has already
    failed."""
    port, closed = free_port(), free_port()
    env = {
        **os.environ,
        "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{closed}",
        "GOOGLE_CLOUD_PROJECT": "routing-test",
        "ENGINES_ENV": "prod",
        "ENGINES_TENANTS": "acme",
    }
    env.pop("ENGINES_ROUTING_SOURCE", None)
    log_path = tmp_path / "engines.log"
    argv = [str(BIN / "uvicorn"), "--factory", "engines.chat.service.server:create_app"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)], env=env, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def registry_item() -> dict[str, Any] | None:
        try:
            resp = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        except httpx.TransportError:
            return None
        items = [i for i in resp.json().get("unavailable", []) if i["source"] == "registry"]
        return items[0] if resp.status_code == 503 and items else None

    try:
        wait_for(
            lambda: "Waiting for application startup" in log_path.read_text(),
            timeout=60,
            what=lambda: f"the app's startup:\n{log_path.read_text()[-3000:]}",
        )
        item = wait_for(registry_item, timeout=FIRST_WORDS_S, what="/readyz 503 naming why")
        # Either failure the registry sees first names the cause: the channel's state or the
        # stream's error; both name the emulator.
        causes = ("Connection refused", "Firestore connection lost")
        assert item["reason"] == "not_loaded"
        assert any(c in item["message"] for c in causes), item
        assert f"emulator at 127.0.0.1:{closed}" in item["message"], item
        said = [line for line in log_path.read_text().splitlines() if "has not loaded (" in line]
        assert said and any(c in said[0] for c in causes), log_path.read_text()[-3000:]
        assert f"emulator at 127.0.0.1:{closed}" in said[0]
    finally:
        stop_group(proc.pid, what="engines app")
        proc.wait(10)
