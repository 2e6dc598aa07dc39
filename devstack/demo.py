"""``routing-dev demo``: the whole system on one machine, narrated, in one command.

Starts the local stack, the operator and the engines app (serving tenants ``acme`` and
``globex`` in env ``prod``), then walks through what the project is for:

1. the app starts **not ready**: ``/readyz`` lists every kind that has no RoutingEntry;
2. ``examples/acme-prod.yaml`` is applied: acme's kinds resolve, globex's are still missing;
3. ``examples/prod-defaults.yaml`` (``tenant: "*"``) is applied: globex resolves through the
   env-wide defaults and the app turns **ready**; ``kubectl get rte`` shows the truth;
4. acme's ``rate_limit`` entry is switched from Redis to Firestore with ``kubectl patch``: the
   running app serves the new backend within a second, no restart;
5. acme's ``seo`` entry is deleted: acme falls back to the env-wide default (§3).

The manifests are applied as committed except for endpoints: the Redis URL and GCS buckets are
pointed at the local Redis and GCS emulator (the buckets are created there). Every process the
demo starts carries the stack's marker, so Ctrl-C, an error, or the end of the demo stops
everything (``routing-dev down`` does the same for a demo killed with SIGKILL). A demo that
starts the control plane starts it empty, so it runs again in the same state dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from rich.console import Console

from devstack._binaries import repo_root
from devstack._components import Etcd
from devstack._procs import spawn
from devstack.stack import LocalStack, free_port

__all__ = ["run_demo"]

T = TypeVar("T")
NAMESPACE = "engines"
TENANTS = ("acme", "globex")
console = Console(highlight=False, soft_wrap=True)


def _wait(what: str, fn: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def _step(n: int, title: str) -> None:
    console.print(f"\n[bold cyan]── step {n}: {title}[/]")


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _localize(path: Path, redis_url: str) -> tuple[str, set[str]]:
    """The manifest with in-cluster endpoints pointed at the local stack; and its buckets."""
    local = re.match(r"redis://([^/]+)", redis_url)
    assert local is not None
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    buckets: set[str] = set()
    for doc in docs:
        spec = doc.get("spec", {})
        if "redis" in spec:
            spec["redis"]["url"] = re.sub(
                r"redis://[^/]+", f"redis://{local.group(1)}", spec["redis"]["url"]
            )
        if "gcs" in spec:
            buckets.add(spec["gcs"]["bucket"])
    return yaml.safe_dump_all(docs, sort_keys=False), buckets


def _create_buckets(buckets: set[str], project: str) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined]

    client = storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    for name in sorted(buckets):
        if client.lookup_bucket(name) is None:
            client.create_bucket(name)


def _wait_entries_ready(kubeconfig: Path) -> None:
    """``kubectl wait`` until every entry of the demo namespace is Ready."""
    ready = ("--for=condition=Ready", "rte", "--all", "--timeout=60s")
    _kubectl(kubeconfig, "wait", "-n", NAMESPACE, *ready)


def _readyz(http: httpx.Client) -> tuple[int, dict[str, Any]]:
    r = http.get("/readyz")
    return r.status_code, r.json()


def _show_readyz(http: httpx.Client) -> dict[str, Any]:
    code, body = _readyz(http)
    if code == 200:
        console.print(f"  GET /readyz → [green]{code}[/] {json.dumps(body)}")
        return body
    missing = body.get("missing", [])
    by_tenant: dict[str, list[str]] = {}
    for m in missing:
        by_tenant.setdefault(m["tenant"], []).append(m["resource_kind"])
    console.print(f"  GET /readyz → [red]{code}[/] not_ready: {len(missing)} missing")
    for tenant, kinds in sorted(by_tenant.items()):
        console.print(f"    {tenant}: {', '.join(sorted(kinds))}")
    for k in ("invalid", "unavailable"):
        if body.get(k):
            console.print(f"    {k}: {body[k]}")
    return body


def _serving(http: httpx.Client, tenant: str, kind: str) -> dict[str, Any]:
    """What serves (tenant, kind) right now, from ``/routing`` ({} when nothing does)."""
    for row in http.get("/routing").json()["entries"]:
        if row.get("tenant") == tenant and row.get("resource_kind") == kind:
            serving: dict[str, Any] = row.get("serving") or {}
            return serving
    return {}


def run_demo(state_dir: Path | None = None, *, interactive: bool | None = None) -> int:
    root = repo_root()
    if root is None:
        console.print("[bold red]routing-dev demo needs a checkout (it applies examples/)[/]")
        return 2
    examples = root / "examples"
    stack = LocalStack(state_dir)
    interactive = sys.stdin.isatty() if interactive is None else interactive
    try:
        _step(1, "start the local stack (etcd, kube-apiserver, Firestore, Redis, GCS)")
        started = time.monotonic()
        if "etcd" not in stack.pids():
            # The story starts from an empty registry. etcd keeps its data across a stop, so an
            # earlier demo's entries (already switched and deleted) would still be there.
            shutil.rmtree(Etcd.data_dir(stack.state_dir), ignore_errors=True)
        for status in stack.up().values():
            verb = "reused" if status.reused else "started"
            console.print(f"  {status.name:<15} {verb} (pid {status.pid})")
        env = stack.env()
        os.environ.update(env)
        kubeconfig = stack.kubeconfig
        console.print(f"  ready in {time.monotonic() - started:.1f}s; exports in {stack.env_file}")
        _kubectl(kubeconfig, "apply", "-f", str(examples / "00-namespace.yaml"))

        _step(2, "start the operator and the engines app (tenants acme, globex; env prod)")
        logs = stack.state_dir / "logs"
        op_metrics, op_live, app_port = free_port(), free_port(), free_port()
        bin_dir = Path(sys.executable).parent
        spawn(
            [
                str(bin_dir / "routing-operator"),
                "--namespace",
                NAMESPACE,
                "--standalone",
                "--metrics-port",
                str(op_metrics),
                "--liveness-port",
                str(op_live),
                "--drift-period",
                "15",
            ],
            log_path=logs / "operator.log",
            owner=stack.state_dir,
            component="operator",
        )
        spawn(
            [
                str(bin_dir / "uvicorn"),
                "--factory",
                "engines.chat.service.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(app_port),
            ],
            log_path=logs / "engines.log",
            owner=stack.state_dir,
            component="engines",
            env={
                "ENGINES_ENV": "prod",
                "ENGINES_TENANTS": ",".join(TENANTS),
                "ENGINES_ROUTING_SOURCE": "firestore",
            },
        )
        http = httpx.Client(base_url=f"http://127.0.0.1:{app_port}", timeout=10)

        def alive() -> bool:
            try:
                return http.get("/livez").status_code == 200
            except httpx.TransportError:
                return False

        _wait("the engines app to answer /livez", alive, 60)
        console.print(f"  operator logs: {logs / 'operator.log'}")
        console.print(f"  engines app:  http://127.0.0.1:{app_port} (logs {logs / 'engines.log'})")
        console.print("  no RoutingEntry exists yet, so the app must refuse readiness:")
        _show_readyz(http)

        _step(3, "kubectl apply examples/acme-prod.yaml (one entry per kind for acme)")
        acme, buckets = _localize(examples / "acme-prod.yaml", env["REDIS_URL"])
        defaults, more = _localize(examples / "prod-defaults.yaml", env["REDIS_URL"])
        _create_buckets(buckets | more, env["GOOGLE_CLOUD_PROJECT"])
        _kubectl(kubeconfig, "apply", "-f", "-", stdin=acme)
        _wait_entries_ready(kubeconfig)

        def only_globex_missing() -> bool:
            code, body = _readyz(http)
            return code == 503 and {m["tenant"] for m in body.get("missing", [])} == {"globex"}

        _wait("acme's kinds to resolve", only_globex_missing, 30)
        console.print("  acme resolves every kind; globex is still missing all of them:")
        _show_readyz(http)

        _step(4, 'kubectl apply examples/prod-defaults.yaml (tenant "*": env-wide defaults)')
        _kubectl(kubeconfig, "apply", "-f", "-", stdin=defaults)
        _wait_entries_ready(kubeconfig)
        _wait("/readyz to turn 200", lambda: _readyz(http)[0] == 200, 30)
        _show_readyz(http)
        console.print("  kubectl get rte -n engines (first lines):")
        table = _kubectl(kubeconfig, "get", "rte", "-n", NAMESPACE, "--sort-by=.metadata.name")
        for line in table.splitlines()[:8]:
            console.print(f"    {line}")
        console.print(f"    … {len(table.splitlines()) - 1} entries")

        _step(5, "live switch: acme rate_limit redis → firestore, no restart")
        before = _serving(http, "acme", "rate_limit")
        console.print(
            f"  serving now: {before.get('backend')} (revision {str(before.get('revision'))[:12]})"
        )
        t0 = time.monotonic()
        _kubectl(
            kubeconfig,
            "patch",
            "rte",
            "acme-prod-rate-limit",
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            json.dumps(
                {
                    "spec": {
                        "backend": "firestore",
                        "redis": None,
                        "firestore": {"collection": "rate_limits"},
                    }
                }
            ),
        )

        def switched() -> dict[str, Any] | None:
            now = _serving(http, "acme", "rate_limit")
            return now if now.get("backend") == "firestore" else None

        after = _wait("the app to serve firestore for acme rate_limit", switched, 30)
        console.print(
            f"  serving firestore after {time.monotonic() - t0:.2f}s "
            f"(revision {str(after.get('revision'))[:12]}); the app was not restarted"
        )
        r = http.post(
            "/nexus/hardening/rate-limit/login", json={"limit": 5}, headers={"X-Tenant": "acme"}
        )
        console.print(
            f"  POST /nexus/hardening/rate-limit/login as acme → {r.status_code} {r.text[:120]}"
        )

        _step(
            6,
            "annotate allow-delete, kubectl delete rte acme-prod-seo: acme falls back to "
            "the env-wide default",
        )
        # The chart's admission policy refuses deleting a prod entry without this annotation.
        _kubectl(
            kubeconfig,
            "annotate",
            "rte",
            "acme-prod-seo",
            "-n",
            NAMESPACE,
            "routing.engines.io/allow-delete=true",
        )
        _kubectl(kubeconfig, "delete", "rte", "acme-prod-seo", "-n", NAMESPACE)

        def fell_back() -> dict[str, Any] | None:
            now = _serving(http, "acme", "seo")
            return now if now and now["entry"]["tenant"] == "*" else None

        fallback = _wait("acme seo to resolve to the default entry", fell_back, 30)
        console.print(
            f"  acme seo now served by the entry {fallback['entry']} "
            f"from {fallback['source']['name']} (revision {fallback['revision'][:12]})"
        )
        _show_readyz(http)

        console.print("\n[bold green]demo complete.[/]")
        if interactive:
            console.print(
                f"The stack keeps running (exports: {stack.env_file}). "
                "Press Ctrl-C to stop everything."
            )
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        console.print("\ninterrupted")
        return 130
    except Exception as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return 1
    finally:
        console.print("stopping everything the demo started …")
        stack.down()
        console.print("stopped; no process left behind.")
