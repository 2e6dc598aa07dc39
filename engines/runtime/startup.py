"""Start-up of an engines pod: open the configured registry, then say plainly what is missing.

A pod without its routing entries is not healthy, however green its process looks. At start-up
every slot that cannot serve is logged one line each (tenant, kind, why); with
``ENGINES_STRICT_STARTUP=1`` the pod refuses to start instead (``StartupRefused``), so a
mis-seeded environment fails its rollout instead of idling at 503.
"""

from __future__ import annotations

import logging

from engines.config.runtime_config import RoutingSource, RuntimeConfig, RuntimeConfigError
from engines.routing.registry import FileRoutingRegistry, FirestoreRoutingRegistry, RoutingRegistry

from .manager import BackendSlots
from .reports import readiness

__all__ = ["StartupRefused", "check_startup", "open_routing_registry"]

log = logging.getLogger("engines.runtime")


class StartupRefused(RuntimeError):
    """``ENGINES_STRICT_STARTUP=1`` and some mounted kind cannot be served."""


def open_routing_registry(config: RuntimeConfig) -> RoutingRegistry:
    """The registry ``ENGINES_ROUTING_SOURCE`` names (not started yet)."""
    if config.routing_source is RoutingSource.FILES:
        return FileRoutingRegistry(config.routing_dir, env=config.env)
    try:
        return FirestoreRoutingRegistry(collection=config.routing_collection, env=config.env)
    except Exception as exc:  # google.auth: no project / credentials; say what to set
        raise RuntimeConfigError(
            f"cannot open the Firestore routing registry ({type(exc).__name__}: {exc}); set "
            "GOOGLE_CLOUD_PROJECT (and FIRESTORE_EMULATOR_HOST for the emulator) or use "
            "ENGINES_ROUTING_SOURCE=files"
        ) from exc


def problems(slots: BackendSlots, registry: RoutingRegistry) -> list[str]:
    """One human line per reason the pod is not ready (empty when ready)."""
    ready, body = readiness(slots, registry)
    if ready:
        return []
    lines = [
        f"routing registry unavailable ({item['reason']}): {item['message']}"
        for item in body["unavailable"]
        if item.get("source") == "registry"
    ]
    missing: dict[str, list[str]] = {}
    for item in body["missing"]:
        missing.setdefault(item["resource_kind"], []).append(item["tenant"])
    for kind, tenants in missing.items():
        lines.append(
            f"missing RoutingEntry: resource_kind={kind} env={slots.env} project={slots.project} "
            f"for tenant(s) {', '.join(tenants)}"
        )
    for item in body["invalid"]:
        where = item.get("source") or f"{item.get('tenant')}/{item.get('resource_kind')}"
        lines.append(f"invalid routing for {where}: {item.get('message')}")
    for item in body["unavailable"]:
        if item.get("source") == "registry":
            continue
        lines.append(
            f"backend unavailable: resource_kind={item['resource_kind']} "
            f"tenant={item['tenant']}: {item.get('message')}"
        )
    return lines


def check_startup(slots: BackendSlots, registry: RoutingRegistry, *, strict: bool) -> None:
    """Log every problem; raise ``StartupRefused`` when ``strict`` and there is any."""
    lines = problems(slots, registry)
    if not lines:
        log.info(
            "engines ready: env=%s project=%s, %d tenant(s) x %d kind(s) served",
            slots.env,
            slots.project,
            len(slots.tenants),
            len(slots.kinds),
        )
        return
    for line in lines:
        log.error("start-up routing check: %s", line)
    summary = (
        f"{len(lines)} routing problem(s) at start-up (env={slots.env}); /readyz answers 503 "
        "until they are fixed"
    )
    if strict:
        raise StartupRefused("ENGINES_STRICT_STARTUP=1: refusing to start: " + "; ".join(lines))
    log.error("%s", summary)
