"""The factory registry and ``build_backend``: matches the catalog, fails fast, never guesses.

Covers: registry pairs == catalog pairs exactly (both directions); every kind has a port and every
factory builds that port's class for the right backend; duplicate registration fails loudly;
test-only backends refused without ``allow_test_backends`` (naming ENGINES_ALLOW_TEST_BACKENDS=1);
missing required settings (``redis.url``, ``gcs.bucket``, ``firestore.collection``,
``local.path``) fail at build time naming the field, even with REDIS_URL & co. in the
environment; unknown settings, pairs outside the catalog and bad served tenants are refused;
importing the package pulls in no cloud SDK.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engines.adapters import KIND_PORTS, DuplicateFactory, FactoryRegistry, build_backend, port_for
from engines.adapters.factory import registry
from engines.ports import BlobStore, DocumentStore, Port, RateLimiter
from engines.routing.catalog import CATALOG, TEST_ONLY_BACKENDS, Backend, ResourceKind
from engines.routing.errors import InvalidRouting, RoutingError, TestBackendNotAllowed
from engines.routing.model import RoutingRecord

VALID_CONFIG: dict[Backend, dict[str, Any]] = {
    Backend.FIRESTORE: {"collection": "c", "project_id": "p"},
    Backend.REDIS: {"url": "redis://redis.invalid:6379/0"},
    Backend.GCS: {"bucket": "some-bucket"},
    Backend.MEMORY: {},
    Backend.NOOP: {},
}


def record(
    kind: str, backend: str, config: dict[str, Any], *, tenant: str = "*", validate: bool = True
) -> RoutingRecord:
    fields = dict(
        tenant=tenant,
        env="test",
        project="*",
        resource_kind=ResourceKind(kind),
        backend=Backend(backend),
        config=config,
        revision="r",
    )
    if validate:
        return RoutingRecord(**fields)
    # A record that skipped validation, as a hand-edited or corrupted document would arrive.
    return RoutingRecord.model_construct(**fields)


def test_registry_matches_catalog_exactly() -> None:
    catalog_pairs = {(k, b) for k, spec in CATALOG.items() for b in spec.allowed}
    registered = set(registry.pairs())
    assert registered - catalog_pairs == set(), "factories outside the catalog"
    assert catalog_pairs - registered == set(), "catalog pairs without a factory"


def test_every_kind_has_a_port() -> None:
    assert set(KIND_PORTS) == set(ResourceKind)
    assert port_for("seo") is DocumentStore
    assert port_for(ResourceKind.RATE_LIMIT) is RateLimiter
    assert port_for("raw_storage") is BlobStore
    with pytest.raises(InvalidRouting):
        port_for("no_such_kind")


@pytest.mark.parametrize(
    ("pair", "factory"), list(registry), ids=[f"{k}-{b}" for (k, b), _ in registry]
)
def test_every_factory_builds_its_port(pair: tuple[ResourceKind, Backend], factory: Any) -> None:
    kind, backend = pair
    cls = factory.load()
    assert issubclass(cls, port_for(kind)), f"{factory.target} is not a {port_for(kind)}"
    assert issubclass(cls, Port) and cls.backend is backend
    assert not getattr(cls, "__abstractmethods__", None), f"{cls} leaves methods abstract"


def test_duplicate_registration_fails_loudly() -> None:
    reg = FactoryRegistry()
    reg.register("seo", "firestore", "engines.adapters.firestore.adapters:FirestoreDocumentStore")
    with pytest.raises(DuplicateFactory, match=r"seo.*firestore.*already registered"):
        reg.register("seo", "firestore", "engines.adapters.memory.adapters:MemoryDocumentStore")


@pytest.mark.parametrize(
    ("kind", "backend"),
    [(k, b) for k, spec in CATALOG.items() for b in spec.allowed if b in TEST_ONLY_BACKENDS],
)
def test_test_only_backends_need_the_flag(
    kind: ResourceKind, backend: Backend, tmp_path: Path
) -> None:
    config = {"path": str(tmp_path)} if backend is Backend.LOCAL else {}
    rec = record(kind, backend, config)
    with pytest.raises(TestBackendNotAllowed, match="ENGINES_ALLOW_TEST_BACKENDS=1") as info:
        build_backend(rec, tenant="acme", allow_test_backends=False)
    assert info.value.field == "backend"
    assert isinstance(info.value, InvalidRouting)
    port = build_backend(rec, tenant="acme", allow_test_backends=True)
    assert isinstance(port, port_for(kind))


@pytest.mark.parametrize(
    ("kind", "backend", "config", "field"),
    [
        ("rate_limit", "redis", {}, "redis.url"),
        ("chat_bus", "redis", {"key_prefix": "x:"}, "redis.url"),
        ("raw_storage", "gcs", {}, "gcs.bucket"),
        ("media_v2_storage", "gcs", {"prefix": "p/"}, "gcs.bucket"),
        ("seo", "firestore", {}, "firestore.collection"),
        ("raw_storage", "local", {}, "local.path"),
        ("rate_limit", "redis", {"url": "http://not-redis"}, "redis.url"),
        ("raw_storage", "gcs", {"bucket": "Bad_Bucket!"}, "gcs.bucket"),
        ("rate_limit", "redis", {"url": "redis://h:1", "host": "x"}, "redis.host"),
    ],
)
def test_bad_settings_fail_at_build_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, kind: str, backend: str, config: dict[str, Any], field: str
) -> None:
    # Environment that an old-style service would have fallen back to: must change nothing.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("GCS_BUCKET", "fallback-bucket")
    monkeypatch.setenv("ENGINES_ALLOW_TEST_BACKENDS", "1")
    rec = record(kind, backend, config, validate=False)
    with pytest.raises(InvalidRouting) as info:
        build_backend(rec, tenant="acme", allow_test_backends=True)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_a_bad_url_is_not_echoed() -> None:
    rec = record("rate_limit", "redis", {"url": "http://user:s3cret@host"}, validate=False)
    with pytest.raises(InvalidRouting) as info:
        build_backend(rec, tenant="acme", allow_test_backends=False)
    assert "s3cret" not in str(info.value)


def test_public_names_are_exported() -> None:
    import engines.adapters
    import engines.ports

    for module in (engines.ports, engines.adapters):
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_local_path_must_be_an_existing_directory(tmp_path: Path) -> None:
    for path in (str(tmp_path / "missing"), "relative/dir"):
        with pytest.raises(InvalidRouting) as info:
            build_backend(
                record("raw_storage", "local", {"path": path}),
                tenant="acme",
                allow_test_backends=True,
            )
        assert info.value.field == "local.path"


def test_pair_outside_catalog_is_refused() -> None:
    rec = record("chat_bus", "firestore", {"collection": "c"}, validate=False)
    with pytest.raises(InvalidRouting, match="not allowed for resource_kind chat_bus") as info:
        build_backend(rec, tenant="acme", allow_test_backends=True)
    assert info.value.field == "backend"


@pytest.mark.parametrize("tenant", ["*", "", "Not_A_Label", "a/b"])
def test_served_tenant_must_be_concrete(tenant: str) -> None:
    rec = record("rate_limit", "redis", VALID_CONFIG[Backend.REDIS])
    with pytest.raises(InvalidRouting) as info:
        build_backend(rec, tenant=tenant, allow_test_backends=False)
    assert info.value.field == "tenant"


def test_record_for_another_tenant_is_refused() -> None:
    rec = record("rate_limit", "redis", VALID_CONFIG[Backend.REDIS], tenant="acme")
    build_backend(rec, tenant="acme", allow_test_backends=False)
    with pytest.raises(InvalidRouting, match="tenant acme, not the served tenant beta"):
        build_backend(rec, tenant="beta", allow_test_backends=False)


def test_build_does_no_io_and_errors_are_routing_errors() -> None:
    # redis.invalid does not resolve: building must still succeed (I/O happens on use/ping).
    port = build_backend(
        record("rate_limit", "redis", VALID_CONFIG[Backend.REDIS]),
        tenant="acme",
        allow_test_backends=False,
    )
    assert isinstance(port, RateLimiter)
    assert issubclass(DuplicateFactory, ValueError)
    assert issubclass(TestBackendNotAllowed, RoutingError)


def test_bad_secret_is_refused_naming_secret_ref() -> None:
    rec = record("seo", "firestore", VALID_CONFIG[Backend.FIRESTORE])
    with pytest.raises(InvalidRouting) as info:
        build_backend(rec, tenant="acme", allow_test_backends=False, secret_value="not json")
    assert info.value.field == "secretRef"


def test_importing_adapters_imports_no_cloud_sdk() -> None:
    code = (
        "import sys, engines.adapters, engines.ports; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'grpc') "
        "or m.startswith('google.cloud')); print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
