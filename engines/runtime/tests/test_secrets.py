"""Secrets a routing entry names: read strictly inside the root, never early, rotated live.

Covers ``MountedSecrets`` on a real directory in kubelet's layout (``key -> ..data/key``,
``..data -> ..<timestamp>``): the value reads; a name or key that could leave the root is refused
even when a record bypassed the model; a symlink out of the Secret's directory, a directory, a
file over 1 MiB and an unmounted Secret are refused, and no refusal repeats the value. The
production factory refuses another tenant's entry and a test-only backend before it reads any
Secret. And rotation against a real ``redis-server --requirepass``: the password is changed in
redis and in the mounted file, the slot rebuilds and swaps without a restart; a wrong new
password keeps the backend built with the previous one serving and is reported in ``/routing``,
the metrics and the log; putting the right value back clears the report. Pointing secretRef at
another key changes the revision and rebuilds with that key's value.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from devstack.stack import free_port
from devstack.testing import async_wait_for, wait_for
from engines.ports import DocumentStore
from engines.routing import InMemoryRoutingRegistry, RoutingRecord, parse_spec
from engines.routing.catalog import ResourceKind
from engines.routing.errors import BackendUnavailable, InvalidRouting, TestBackendNotAllowed
from engines.routing.model import SecretRef
from engines.runtime import BackendSlots, MountedSecrets, SlotStatus, adapter_factory
from engines.runtime.reports import routing_table

VALUE = "s3cr3t-value"


def mount(root: Path, name: str, files: dict[str, str], version: int = 1) -> Path:
    """Write a Secret volume the way kubelet does: a versioned dir, ``..data``, key symlinks.

    A later call with a new ``version`` swaps ``..data`` atomically (rename over the link), as
    kubelet's AtomicWriter does when the Secret changes.
    """
    secret_dir = root / name
    secret_dir.mkdir(parents=True, exist_ok=True)
    versioned = secret_dir / f"..2026_12_01_00_00_{version:02d}"
    versioned.mkdir()
    for key, value in files.items():
        (versioned / key).write_text(value)
    tmp = secret_dir / "..data_tmp"
    tmp.symlink_to(versioned.name)
    os.replace(tmp, secret_dir / "..data")
    for key in files:
        link = secret_dir / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    return secret_dir


def ref(name: str = "redis-auth", key: str = "password") -> SecretRef:
    return SecretRef(name=name, key=key)


def test_kubelet_layout_reads_through_its_data_symlink(tmp_path: Path) -> None:
    mount(tmp_path, "redis-auth", {"password": VALUE + "\n"})
    secrets = MountedSecrets(tmp_path)
    assert secrets(ref()) == VALUE
    assert secrets.digest(ref()) == hashlib.sha256(VALUE.encode()).hexdigest()
    mount(tmp_path, "redis-auth", {"password": "rotated"}, version=2)
    assert secrets.current_digest(ref()) == hashlib.sha256(b"rotated").hexdigest()
    assert secrets.digest(ref()) == hashlib.sha256(VALUE.encode()).hexdigest()  # last read


@pytest.mark.parametrize(
    ("name", "key"),
    [("..", "hostname"), ("redis-auth", "/etc/hostname"), ("redis-auth", ".."), ("a/b", "k")],
)
def test_a_ref_that_could_leave_the_root_is_refused_even_past_the_model(
    tmp_path: Path, name: str, key: str
) -> None:
    bad = SecretRef.model_construct(name=name, key=key)  # as if a record skipped validation
    with pytest.raises(InvalidRouting) as info:
        MountedSecrets(tmp_path / "root")(bad)
    assert "secretRef." in str(info.value) and "must be" in str(info.value)


def test_a_symlink_out_of_the_secret_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text(VALUE)
    mount(tmp_path / "root", "other", {"password": VALUE})
    secret_dir = tmp_path / "root" / "redis-auth"
    secret_dir.mkdir()
    (secret_dir / "password").symlink_to(outside)
    (secret_dir / "sibling").symlink_to("../other/password")
    secrets = MountedSecrets(tmp_path / "root")
    for key in ("password", "sibling"):
        with pytest.raises(InvalidRouting) as info:
            secrets(ref(key=key))
        assert "resolves outside" in str(info.value)
        assert VALUE not in str(info.value)
        assert secrets.current_digest(ref(key=key)) is None


def test_only_a_regular_file_of_at_most_one_mebibyte_is_read(tmp_path: Path) -> None:
    secret_dir = tmp_path / "redis-auth"
    (secret_dir / "adir").mkdir(parents=True)
    (secret_dir / "huge").write_bytes(b"x" * (1024 * 1024 + 1))
    secrets = MountedSecrets(tmp_path)
    for key in ("adir", "huge"):
        with pytest.raises(InvalidRouting, match="not a regular file of at most"):
            secrets(ref(key=key))


def test_an_unmounted_secret_is_unavailable_and_says_where_to_mount_it(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        MountedSecrets(tmp_path)(ref())
    assert f"mount the Secret 'redis-auth' under {tmp_path}" in str(info.value)


class CountingSecrets(MountedSecrets):
    """The real reader, counting reads: the factory must refuse before the first one."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0

    def __call__(self, ref: SecretRef) -> str:
        self.reads += 1
        return super().__call__(ref)


def redis_record(url: str, *, tenant: str = "*", env: str = "prod") -> RoutingRecord:
    spec = {
        "tenant": tenant,
        "env": env,
        "resourceKind": "memory",
        "backend": "redis",
        "redis": {"url": url, "key_prefix": "rot:"},
        "secretRef": {"name": "redis-auth", "key": "password"},
    }
    return RoutingRecord.from_spec(parse_spec(spec))


def test_tenant_and_test_backend_checks_run_before_any_secret_is_read(tmp_path: Path) -> None:
    mount(tmp_path, "redis-auth", {"password": VALUE})
    secrets = CountingSecrets(tmp_path)
    build = adapter_factory(allow_test_backends=False, secrets=secrets)
    with pytest.raises(InvalidRouting, match="not the served tenant"):
        build(redis_record("redis://127.0.0.1:1/0", tenant="globex"), "acme")
    memory = RoutingRecord.from_spec(
        parse_spec(
            {
                "tenant": "*",
                "env": "test",
                "resourceKind": "memory",
                "backend": "memory",
                "memory": {},
                "secretRef": {"name": "redis-auth", "key": "password"},
            }
        )
    )
    with pytest.raises(TestBackendNotAllowed):
        build(memory, "acme")
    assert secrets.reads == 0
    build(redis_record("redis://127.0.0.1:1/0"), "acme")  # builds (no I/O): now it reads
    assert secrets.reads == 1


# -- rotation against a real redis-server with requirepass ---------------------------------------


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A private redis-server requiring ``old-pass`` (the shared one has no password)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (make setup installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--requirepass", "old-pass",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password="old-pass")
        wait_for(lambda: _pings(client), timeout=20, what="redis-server with requirepass")
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rotated_password_is_picked_up_and_a_wrong_one_keeps_the_old_backend(
    tmp_path: Path, redis_with_password: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    host, port = redis_with_password
    admin = redis.Redis(host=host, port=port, password="old-pass")
    root = tmp_path / "secrets"
    mount(root, "redis-auth", {"password": "old-pass"})
    record = redis_record(f"redis://{host}:{port}/0")
    registry = InMemoryRoutingRegistry()
    registry.create(record)
    kind = ResourceKind.MEMORY
    slots = BackendSlots(
        registry,
        env="prod",
        tenants=["acme", "globex"],  # two slots built from the one Secret key
        kinds=[kind],
        factory=adapter_factory(allow_test_backends=False, secrets=MountedSecrets(root)),
        secret_check_interval=0.05,
        retry_initial=0.05,
        retry_max=0.2,
    )
    await slots.start()
    slot = slots.slot("acme", kind)
    try:
        assert slot.status is SlotStatus.READY, slot.error()
        first = slot.current
        other = slots.slot("globex", kind)
        other_first = other.current
        assert first is not None and other_first is not None
        async with slots.lease("acme", kind) as store:
            assert isinstance(store, DocumentStore)
            await store.put("notes", "n1", {"v": 1})

        # Rotate: redis first (live connections stay authenticated), then the mounted Secret.
        admin.config_set("requirepass", "new-pass")
        admin = redis.Redis(host=host, port=port, password="new-pass")
        mount(root, "redis-auth", {"password": "new-pass"}, version=2)
        await async_wait_for(
            _async(
                lambda: (
                    None not in (slot.current, other.current)
                    and slot.current is not first
                    and other.current is not other_first
                )
            ),
            timeout=20,
            what="both slots to rebuild with the rotated password",
        )
        second = slot.current
        assert second is not None and second.record.revision == first.record.revision
        assert first.retired
        assert second.secret_digest == hashlib.sha256(b"new-pass").hexdigest()
        async with slots.lease("acme", kind) as store:
            assert isinstance(store, DocumentStore)
            assert await store.get("notes", "n1") == {"v": 1}

        # A wrong new value: the backend built with new-pass keeps serving, and it is reported.
        failures = _metric(
            "engines_backend_build_failures_total",
            resource_kind=kind.value,
            backend="redis",
            reason="unavailable",
        )
        with caplog.at_level(logging.ERROR, logger="engines.runtime"):
            mount(root, "redis-auth", {"password": "wrong-pass"}, version=3)
            await async_wait_for(
                _async(lambda: slot.failure is not None),
                timeout=20,
                what="the failed rotation to be reported",
            )
        assert slot.current is second and slot.status is SlotStatus.READY
        assert slot.failure is not None
        assert "the rotated value of secret redis-auth/password does not work" in (
            slot.failure.message
        )
        async with slots.lease("acme", kind) as store:
            assert isinstance(store, DocumentStore)
            assert await store.get("notes", "n1") == {"v": 1}
        table = routing_table(slots, registry, source="memory")
        entry = next(e for e in table["entries"] if e["tenant"] == "acme")
        assert entry["serving"]["revision"] == record.revision
        assert "redis-auth/password" in entry["last_error"]["message"]
        assert _metric("engines_backend_slot_stale", tenant="acme", resource_kind=kind.value) == 1
        assert (
            _metric(
                "engines_backend_build_failures_total",
                resource_kind=kind.value,
                backend="redis",
                reason="unavailable",
            )
            > failures
        )
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "keeping the last known-good redis" in logged
        for secret in ("old-pass", "new-pass", "wrong-pass"):
            assert secret not in str(table) and secret not in logged

        # The right value back: the retry finds nothing to rebuild and the report clears.
        mount(root, "redis-auth", {"password": "new-pass"}, version=4)
        await async_wait_for(
            _async(lambda: slot.failure is None), timeout=20, what="the report to clear"
        )
        assert slot.current is second
        assert _metric("engines_backend_slot_stale", tenant="acme", resource_kind=kind.value) == 0
    finally:
        await slots.aclose()


def _async(check: object) -> object:
    async def run() -> bool:
        return bool(check())  # type: ignore[operator]

    return run


async def test_pointing_secret_ref_at_another_key_rebuilds_with_that_value(tmp_path: Path) -> None:
    """The key is part of the revision: the backend is rebuilt and reads the new key's value."""
    mount(tmp_path, "redis-auth", {"password": "first", "password2": "second"})
    first = redis_record("redis://127.0.0.1:1/0")
    second = RoutingRecord.from_spec(
        parse_spec(
            {
                "tenant": "*",
                "env": "prod",
                "resourceKind": "memory",
                "backend": "redis",
                "redis": {"url": "redis://127.0.0.1:1/0", "key_prefix": "rot:"},
                "secretRef": {"name": "redis-auth", "key": "password2"},
            }
        )
    )
    assert first.revision != second.revision
    registry = InMemoryRoutingRegistry()
    registry.create(first)
    slots = BackendSlots(
        registry,
        env="prod",
        tenants=["acme"],
        kinds=[ResourceKind.MEMORY],
        factory=adapter_factory(allow_test_backends=False, secrets=MountedSecrets(tmp_path)),
        verify=False,  # nothing listens on port 1: this test is about what is built, not reached
    )
    await slots.start()
    slot = slots.slot("acme", ResourceKind.MEMORY)
    try:
        held = slot.current
        assert held is not None
        assert held.secret_digest == hashlib.sha256(b"first").hexdigest()
        registry.update(second)
        await async_wait_for(
            _async(lambda: slot.current is not held), timeout=20, what="a rebuild for the new key"
        )
        assert slot.current is not None
        assert slot.current.record.revision == second.revision
        assert slot.current.secret_digest == hashlib.sha256(b"second").hexdigest()
    finally:
        await slots.aclose()
