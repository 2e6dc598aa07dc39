"""How the slots build a backend: ``BackendFactory``, and the production one over the adapters.

The slots never import an adapter: they call a factory with the record that resolved and the
served tenant. The production factory (:func:`adapter_factory`) refuses what this pod must not
build before it reads any Secret, then hands the value to ``engines.adapters.build_backend``.
Tests pass their own factory (a recorder, a failing one) through the same seam.
"""

from __future__ import annotations

from collections.abc import Callable

from engines.ports import Port
from engines.routing.model import RoutingRecord

from .secrets import MountedSecrets, SecretResolver

__all__ = ["BackendFactory", "adapter_factory"]

BackendFactory = Callable[[RoutingRecord, str], Port]
"""``factory(record, tenant)`` builds the backend ``record`` routes to for the served tenant.

Raises ``InvalidRouting`` / ``TestBackendNotAllowed`` / ``BackendUnavailable``; does no I/O
(reachability is checked afterwards with ``await port.ping()``)."""


class _AdapterFactory:
    """``build_backend`` with the ``secretRef`` resolved after the checks that may refuse it."""

    def __init__(self, allow_test_backends: bool, secrets: SecretResolver) -> None:
        self.allow_test_backends = allow_test_backends
        self.secrets = secrets

    def __call__(self, record: RoutingRecord, tenant: str) -> Port:
        from engines.adapters import build_backend, check_buildable

        # A record this pod must not build (another tenant's, a test-only backend without the
        # flag) is refused before its Secret is read: the value never reaches an adapter.
        check_buildable(record, tenant=tenant, allow_test_backends=self.allow_test_backends)
        ref = record.secret_ref
        secret = self.secrets(ref) if ref is not None else None
        return build_backend(
            record,
            tenant=tenant,
            allow_test_backends=self.allow_test_backends,
            secret_value=secret,
        )


def adapter_factory(
    *, allow_test_backends: bool, secrets: SecretResolver | None = None
) -> BackendFactory:
    """The production factory: ``engines.adapters.build_backend`` with secrets resolved.

    Its ``secrets`` reader (the mounted Secrets by default) is what ``BackendSlots`` asks for
    digests to notice a rotated Secret.
    """
    return _AdapterFactory(allow_test_backends, secrets or MountedSecrets())
