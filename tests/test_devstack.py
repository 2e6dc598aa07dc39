"""`routing-dev up/down` and the stack fixtures, against the real processes.

Covers: `up` brings every component up and writes env.sh; the API server answers /readyz through
the generated kubeconfig; each service serves its client; a second `up` reuses every running
process (same pids) and restarts only what died; `down` leaves no process behind (recorded pids,
the state dir on any command line, the ownership marker in any environment); a component that
dies while starting fails with its name and log; the Firestore fixture restarts on the same port;
a second control plane (`up --share-emulators-with`) runs its own etcd + kube-apiserver (its own
kube-system uid) on the first stack's emulators, remembers it, and its `down` stops only itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import LocalStack, StackError
from devstack._procs import OWNER_ENV, is_alive, spawn, wait_until
from devstack.handles import FirestoreEmulator, GcsEmulator, KubeCluster, RedisServer

pytestmark = [pytest.mark.cluster, pytest.mark.firestore, pytest.mark.redis, pytest.mark.gcs]

REPO = Path(__file__).resolve().parents[1]
EXPORTS = (
    "KUBECONFIG",
    "FIRESTORE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
    "REDIS_URL",
    "STORAGE_EMULATOR_HOST",
)


def routing_dev(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "devstack.cli", *args],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )  # fmt: skip


def read_env(path: Path) -> dict[str, str]:
    """Source env.sh in a clean shell and read the variables back."""
    script = f". {path} && env -0"
    out = subprocess.run(
        ["bash", "-c", script], env={}, capture_output=True, check=True
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def processes_mentioning(state_dir: Path) -> list[str]:
    """Live processes with the state dir on their command line or our marker in their env."""
    found = []
    marker = f"{OWNER_ENV}={state_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if not is_alive(int(entry.name)):
            continue
        if str(state_dir).encode() in cmdline or marker in environ.split(b"\0"):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("stack").resolve()
    first = routing_dev("up", "--state-dir", str(path))
    if first.returncode != 0:
        LocalStack(path).down()  # a failed `up` leaves what it started running
    assert first.returncode == 0, first.stderr
    yield path
    LocalStack(path).down()  # safety net if a test failed before `down`


def test_up_writes_env_sh_with_every_export(state_dir: Path) -> None:
    env = read_env(state_dir / "env.sh")
    assert all(env.get(name) for name in EXPORTS), env
    assert env["KUBECONFIG"] == str(state_dir / "kubeconfig")
    assert env["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")
    assert env["REDIS_URL"].startswith("redis://127.0.0.1:")
    assert set(LocalStack(state_dir).pids()) == {
        "etcd",
        "kube-apiserver",
        "firestore",
        "redis",
        "gcs",
    }


def test_apiserver_readyz_answers_ok(state_dir: Path) -> None:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(state_dir / "kubeconfig"), "get", "--raw", "/readyz"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_apiserver_enforces_rbac(state_dir: Path) -> None:
    kubeconfig = str(state_dir / "kubeconfig")
    done = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "auth", "can-i", "list", "pods",
         "--as", "system:serviceaccount:default:nobody"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.strip() == "no", done.stdout + done.stderr


def test_each_service_serves_its_client(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore, storage  # type: ignore[attr-defined]

    env = read_env(state_dir / "env.sh")
    for name in EXPORTS:
        monkeypatch.setenv(name, env[name])
    key = uuid.uuid4().hex

    r = redis.Redis.from_url(env["REDIS_URL"])
    r.set(key, b"v")
    assert r.get(key) == b"v"

    doc = firestore.Client(project=env["GOOGLE_CLOUD_PROJECT"]).collection("smoke").document(key)
    doc.set({"ok": True})
    assert doc.get().to_dict() == {"ok": True}

    gcs = storage.Client(
        project=env["GOOGLE_CLOUD_PROJECT"],
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": env["STORAGE_EMULATOR_HOST"]},
    )
    bucket = gcs.create_bucket(f"smoke-{key[:12]}")
    bucket.blob("a.txt").upload_from_string(b"hello")
    assert bucket.blob("a.txt").download_as_bytes() == b"hello"


def test_up_twice_reuses_and_restarts_only_what_died(state_dir: Path) -> None:
    before = LocalStack(state_dir).pids()
    again = routing_dev("up", "--state-dir", str(state_dir))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(state_dir / "env.sh")
    assert LocalStack(state_dir).pids() == before
    assert again.stderr.count("reused") == len(before), again.stderr

    os.killpg(before["redis"], signal.SIGKILL)
    wait_until(lambda: not is_alive(before["redis"]), what="redis kill", timeout=10,
               log_path=state_dir / "logs" / "redis.log")  # fmt: skip
    third = routing_dev("up", "--state-dir", str(state_dir))
    assert third.returncode == 0, third.stderr
    after = LocalStack(state_dir).pids()
    assert after["redis"] != before["redis"]
    assert {k: v for k, v in after.items() if k != "redis"} == {
        k: v for k, v in before.items() if k != "redis"
    }
    assert read_env(state_dir / "env.sh")["REDIS_URL"] == LocalStack(state_dir).env()["REDIS_URL"]


def kube_system_uid(kubeconfig: Path) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "namespace", "kube-system",
         "-o", "jsonpath={.metadata.uid}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout, done.stderr
    return done.stdout


def test_a_second_control_plane_shares_the_first_stacks_emulators(
    state_dir: Path, tmp_path: Path
) -> None:
    first = LocalStack(state_dir).pids()
    second = tmp_path / "second"
    up = routing_dev("up", "--state-dir", str(second), "--share-emulators-with", str(state_dir))
    assert up.returncode == 0, up.stderr
    try:
        env, theirs = read_env(second / "env.sh"), read_env(state_dir / "env.sh")
        assert env["KUBECONFIG"] == str(second.resolve() / "kubeconfig")
        for name in EXPORTS[1:]:
            assert env[name] == theirs[name], name
        assert set(LocalStack(second).pids()) == {"etcd", "kube-apiserver"}
        assert LocalStack(state_dir).pids() == first
        assert kube_system_uid(second / "kubeconfig") != kube_system_uid(state_dir / "kubeconfig")

        again = routing_dev("up", "--state-dir", str(second))  # remembered, no flag needed
        assert again.returncode == 0 and again.stderr.count("reused") == 5, again.stderr
        other = routing_dev("up", "--state-dir", str(second), "--share-emulators-with", "/nope")
        assert other.returncode == 1 and f"shares the emulators of {state_dir}" in other.stderr
        theirs_only = routing_dev("down", "--state-dir", str(second), "--only", "redis")
        assert theirs_only.returncode == 1 and "stop them there" in theirs_only.stderr
        status = routing_dev("status", "--state-dir", str(second))
        assert f"(emulators shared with {state_dir})" in status.stdout
    finally:
        down = routing_dev("down", "--state-dir", str(second))
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(second.resolve()) == []
    assert LocalStack(state_dir).pids() == first, "the shared emulators keep running"


def test_down_leaves_no_process_behind(state_dir: Path) -> None:
    pids = LocalStack(state_dir).pids()
    assert pids, "the stack should be running before down"
    done = routing_dev("down", "--state-dir", str(state_dir))
    assert done.returncode == 0, done.stderr
    assert [name for name, pid in pids.items() if is_alive(pid)] == []
    assert processes_mentioning(state_dir) == []
    assert LocalStack(state_dir).pids() == {}
    assert not (state_dir / "env.sh").exists()


def test_a_component_that_dies_while_starting_is_named_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "broken.log"
    pid = spawn(["sh", "-c", "echo boom-marker; exit 3"], log_path=log, owner=tmp_path,
                component="broken")  # fmt: skip
    with pytest.raises(StackError) as failure:
        wait_until(lambda: False, what="broken", timeout=30, log_path=log, pid=pid)
    message = str(failure.value)
    assert "broken exited before becoming healthy" in message
    assert str(log) in message and "boom-marker" in message


def test_firestore_fixture_restarts_on_the_same_port(firestore_emulator: FirestoreEmulator) -> None:
    if firestore_emulator.stack is None:
        pytest.skip("FIRESTORE_EMULATOR_HOST was set: the emulator is not ours to restart")
    from devstack._health import http_ok

    host = firestore_emulator.host
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == host
    firestore_emulator.stop()
    assert not http_ok(f"http://{host}/")
    firestore_emulator.start()
    assert firestore_emulator.host == host
    assert http_ok(f"http://{host}/")
    doc = firestore_emulator.client().collection("restart").document("d")
    doc.set({"n": 1})
    assert doc.get().to_dict() == {"n": 1}


def test_service_fixtures_hand_working_clients(
    redis_server: RedisServer,
    gcs_emulator: GcsEmulator,
    kube_cluster: KubeCluster,
    namespace: str,
) -> None:
    from kubernetes import client

    assert os.environ["REDIS_URL"] == redis_server.url
    assert redis_server.client().ping() is True
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs_emulator.host
    bucket = gcs_emulator.client().create_bucket(f"fixture-{uuid.uuid4().hex[:12]}")
    assert bucket.exists()
    with kube_cluster.api_client() as api:
        assert client.CoreV1Api(api).read_namespace(namespace).status.phase == "Active"
