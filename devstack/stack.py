"""``LocalStack``: start, reuse and stop the local control plane kept in one state directory.

The state directory is the whole truth about a stack, so ``up`` and ``down`` can run from
different processes (the CLI, a pytest session, ``routing-dev demo``):

    DIR/state.json        project id and the loopback ports chosen for each component
    DIR/run/<name>.json   pid (= process group) of each running component
    DIR/logs/<name>.log   its output
    DIR/kubeconfig        admin kubeconfig for the local kube-apiserver
    DIR/env.sh            exports for every running component (see DESIGN §9)
    DIR/pki, etcd, gcloud, redis   certificates and component data

``up`` reuses a component whose recorded pid is alive, carries this directory's marker and
answers its health probe; anything else is (re)started with the ports it had before when they
are free, so ``env.sh`` stays valid across restarts. Independent components start in parallel.
``down`` stops each recorded process group and then sweeps any process still marked with this
directory, so nothing is left behind even if a record was lost.

A second control plane can share the emulators of a first stack (``emulators_from``, recorded in
its ``state.json``): its own etcd + kube-apiserver, and the first stack's Firestore, Redis and GCS
in its ``env.sh``. That is the topology of several clusters sharing one Firestore collection.
Its ``up`` starts or reuses the first stack's emulators; its ``down`` stops only its own control
plane.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import time
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack._binaries import repo_root, resolve_binaries
from devstack._components import COMPONENTS as BASE_COMPONENTS
from devstack._components import LOOPBACK, Component, Context
from devstack._errors import StackError
from devstack._node import NODE_COMPONENTS
from devstack._procs import (
    group_members,
    is_alive,
    marked_pids,
    marker_of,
    spawn,
    stop_group,
    wait_until,
)

__all__ = [
    "DEFAULT_PROJECT",
    "ComponentStatus",
    "LocalStack",
    "default_crds_dir",
    "default_state_dir",
    "free_port",
]

DEFAULT_PROJECT = "routing-dev"
CONTROL_PLANE = ("etcd", "kube-apiserver")
"""The components a stack sharing another's emulators runs itself (with its node, if any)."""
COMPONENTS: dict[str, Component] = {**BASE_COMPONENTS, **NODE_COMPONENTS}
"""Every component ``up``/``down`` know; the node's start only when asked for (``node=True``)."""
_REUSE_PROBE_SECONDS = 10.0


def default_state_dir() -> Path:
    """``$ROUTING_DEV_STATE_DIR``, else ``.routing-dev/`` under the current directory."""
    return Path(os.environ.get("ROUTING_DEV_STATE_DIR") or Path.cwd() / ".routing-dev")


def default_crds_dir() -> Path | None:
    """``$ROUTING_DEV_CRDS_DIR``, else ``crds/`` of this checkout (None for an installed wheel)."""
    if override := os.environ.get("ROUTING_DEV_CRDS_DIR"):
        return Path(override)
    root = repo_root()
    return root / "crds" if root is not None else None


@dataclass(frozen=True)
class ComponentStatus:
    """Outcome of ``up`` for one component."""

    name: str
    pid: int
    reused: bool
    seconds: float


class LocalStack:
    """The local stack whose state lives in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        project: str | None = None,
        crds_dir: Path | str | None = None,
        emulators_from: Path | str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir or default_state_dir()).resolve()
        state = self._read_json(self._state_file)
        self.crds_dir = Path(crds_dir) if crds_dir is not None else default_crds_dir()
        recorded = state.get("emulators_from")
        wanted = Path(emulators_from).resolve() if emulators_from is not None else None
        if wanted is not None and recorded is not None and Path(recorded) != wanted:
            raise StackError(
                f"{self.state_dir} shares the emulators of {recorded}, not {wanted}: "
                f"`routing-dev down --purge --state-dir {self.state_dir}` first to change it"
            )
        source = wanted or (Path(recorded) if recorded else None)
        self.shared: LocalStack | None = None
        """The stack whose emulators this one uses (None: it runs its own)."""
        if source is not None:
            if source == self.state_dir:
                raise StackError(f"{self.state_dir} cannot share its own emulators")
            if not (source / "state.json").is_file():
                raise StackError(
                    f"{source} is not a routing-dev state directory: "
                    f"`routing-dev up --state-dir {source}` first"
                )
            if wanted is not None and recorded is None and self._own_emulators_running():
                raise StackError(
                    f"{self.state_dir} runs emulators of its own: `routing-dev down --state-dir "
                    f"{self.state_dir}` first, then share {source}'s"
                )
            self.shared = LocalStack(source, crds_dir=crds_dir)
        self.project: str = (
            self.shared.project if self.shared else project or state.get("project")
        ) or DEFAULT_PROJECT

    # ---- paths -------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env.sh"

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _record_file(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.json"

    # ---- public API --------------------------------------------------------------------------

    def up(
        self, components: Iterable[str] | None = None, *, node: bool = False
    ) -> dict[str, ComponentStatus]:
        """Start (or reuse) the named components and their dependencies; write ``env.sh``.

        ``components=None`` is the base stack; ``node`` adds the node's components to it (or to
        the named ones): containerd, kubelet, cluster-dns, the controller manager, the scheduler.
        Sharing another stack's emulators, those are started or reused there."""
        if node:
            components = [*(components or BASE_COMPONENTS), *NODE_COMPONENTS]
        names = _with_dependencies(components)
        statuses: dict[str, ComponentStatus] = {}
        if self.shared is not None:
            elsewhere = names - set(CONTROL_PLANE) - set(NODE_COMPONENTS)
            if elsewhere:
                statuses.update(self.shared.up(elsewhere))
            names -= elsewhere
        with self._locked():
            ctx = self._context(names, record=True)
            statuses.update(self._start_all(ctx, names))
            self._write_env(ctx)
        return statuses

    def down(self, components: Iterable[str] | None = None) -> None:
        """Stop the named components and whatever depends on them (all when None). A stack
        sharing another's emulators stops only its own control plane."""
        if self.shared is not None and components is not None:
            theirs = set(components) - set(CONTROL_PLANE)
            if theirs:
                raise StackError(
                    f"{', '.join(sorted(theirs))}: run by {self.shared.state_dir}, whose "
                    "emulators this stack shares; stop them there"
                )
        with self._locked():
            names = _with_dependents(components)
            for name in reversed(list(COMPONENTS)):
                if name in names:
                    self._stop(COMPONENTS[name])
            if components is None:
                self._sweep()
            self._write_env(self._context(set()))

    def pids(self) -> dict[str, int]:
        """Pid of each component this stack runs now (not those of a stack it shares)."""
        found = {}
        for name in COMPONENTS:
            pid = self._recorded_pid(name)
            if pid is not None and self._is_ours(pid, name):
                found[name] = pid
        return found

    def env(self) -> dict[str, str]:
        """The exports of every running component (what ``env.sh`` holds)."""
        return self._exports(self._context(set()))

    # ---- starting ----------------------------------------------------------------------------

    def _own_emulators_running(self) -> bool:
        return any(name not in CONTROL_PLANE for name in self.pids())

    def _context(self, starting: set[str], record: bool = False) -> Context:
        state = self._read_json(self._state_file)
        ports: dict[str, dict[str, int]] = state.get("ports", {})
        running = set(self.pids())
        taken = {p for name in running for p in ports.get(name, {}).values()}
        for name in starting - running:
            wanted = ports.get(name, {})
            chosen: dict[str, int] = {}
            for port_name in COMPONENTS[name].port_names:
                port = wanted.get(port_name)
                if port is None or port in taken or not _port_free(port):
                    port = free_port(taken)
                taken.add(port)
                chosen[port_name] = port
            ports[name] = chosen
        if starting or record:
            written: dict[str, Any] = {"project": self.project, "ports": ports}
            if self.shared is not None:
                written["emulators_from"] = str(self.shared.state_dir)
            self._write_json(self._state_file, written)
        return Context(self.state_dir, self.project, self.crds_dir, ports=ports)

    def _start_all(self, ctx: Context, names: set[str]) -> dict[str, ComponentStatus]:
        needed = {b for n in names if not self._reusable_now(n) for b in COMPONENTS[n].binaries}
        ctx.binaries = resolve_binaries(needed)
        ordered = [n for n in COMPONENTS if n in names]
        futures: dict[str, Future[ComponentStatus]] = {}
        with ThreadPoolExecutor(max_workers=len(ordered) or 1) as pool:
            for name in ordered:
                deps = [futures[d] for d in COMPONENTS[name].requires]
                futures[name] = pool.submit(self._ensure, COMPONENTS[name], ctx, deps)
        errors = [f.exception() for f in futures.values() if f.exception() is not None]
        if errors:
            raise StackError("\n".join(str(e) for e in errors)) from errors[0]
        return {name: f.result() for name, f in futures.items()}

    def _reusable_now(self, name: str) -> bool:
        pid = self._recorded_pid(name)
        return pid is not None and self._is_ours(pid, name)

    def _ensure(
        self, comp: Component, ctx: Context, deps: list[Future[ComponentStatus]]
    ) -> ComponentStatus:
        for dep in deps:
            if dep.exception() is not None:
                raise StackError(f"{comp.name}: not started because a dependency failed")
        started = time.monotonic()
        log = self.log_path(comp.name)
        pid = self._recorded_pid(comp.name)
        if pid is not None and self._is_ours(pid, comp.name):
            comp.prepare(ctx)
            try:
                wait_until(
                    lambda: comp.healthy(ctx),
                    what=comp.name,
                    timeout=min(comp.timeout, _REUSE_PROBE_SECONDS),
                    log_path=log,
                    pid=pid,
                )
            except StackError:
                self._stop(comp)  # alive but not answering: start it afresh
            else:
                comp.after_healthy(ctx)
                return ComponentStatus(comp.name, pid, True, time.monotonic() - started)
        elif pid is not None:
            self._stop(comp)  # leader gone; its children may not be
        comp.prepare(ctx)
        pid = spawn(
            comp.argv(ctx),
            log_path=log,
            owner=self.state_dir,
            component=comp.name,
            env=comp.child_env(ctx),
            cwd=self.state_dir,
        )
        self._write_json(self._record_file(comp.name), {"pid": pid, "started_at": time.time()})
        wait_until(
            lambda: comp.healthy(ctx), what=comp.name, timeout=comp.timeout, log_path=log, pid=pid
        )
        comp.after_healthy(ctx)
        return ComponentStatus(comp.name, pid, False, time.monotonic() - started)

    # ---- stopping ----------------------------------------------------------------------------

    def _stop(self, comp: Component) -> None:
        pid = self._recorded_pid(comp.name)
        ctx = self._context(set())
        if pid is not None and any(
            marker_of(p) == (str(self.state_dir), comp.name) for p in group_members(pid)
        ):
            comp.before_stop(ctx)
            stop_group(pid, what=comp.name, grace=comp.grace)
        self._record_file(comp.name).unlink(missing_ok=True)
        comp.after_stop(ctx)

    def _sweep(self) -> None:
        """Stop any process still marked with this state dir (a lost record, an escapee)."""
        for pid in marked_pids(self.state_dir):
            try:
                pgid = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if pgid != os.getpgrp():
                stop_group(pgid, what=f"leftover pid {pid}")

    # ---- records -----------------------------------------------------------------------------

    def _recorded_pid(self, name: str) -> int | None:
        pid = self._read_json(self._record_file(name)).get("pid")
        return int(pid) if pid is not None else None

    def _is_ours(self, pid: int, name: str) -> bool:
        return is_alive(pid) and marker_of(pid) == (str(self.state_dir), name)

    def _exports(self, ctx: Context) -> dict[str, str]:
        running = self.pids()
        exports: dict[str, str] = {}
        for name, comp in COMPONENTS.items():
            if name in running:
                exports.update(comp.exports(ctx))
        if self.shared is not None and running:
            theirs = self.shared.env()
            theirs.pop("KUBECONFIG", None)  # their control plane is not this one
            exports.update(theirs)
        return exports

    def _write_env(self, ctx: Context) -> None:
        exports = self._exports(ctx)
        if not exports:
            self.env_file.unlink(missing_ok=True)
            return
        lines = [
            "# Written by `routing-dev up`; load it with: . " + shlex.quote(str(self.env_file)),
            *(f"export {k}={shlex.quote(v)}" for k, v in exports.items()),
        ]
        tmp = self.env_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.env_file)

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _write_json(path: Path, data: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _validate(components: Iterable[str]) -> set[str]:
    names = set(components)
    unknown = names - set(COMPONENTS)
    if unknown:
        raise StackError(f"unknown component(s) {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
    return names


def _with_dependencies(components: Iterable[str] | None) -> set[str]:
    names = set(BASE_COMPONENTS) if components is None else _validate(components)
    pending = list(names)
    while pending:
        for dep in COMPONENTS[pending.pop()].requires:
            if dep not in names:
                names.add(dep)
                pending.append(dep)
    return names


def _with_dependents(components: Iterable[str] | None) -> set[str]:
    names = set(COMPONENTS) if components is None else _validate(components)
    changed = True
    while changed:
        changed = False
        for name, comp in COMPONENTS.items():
            if name not in names and names.intersection(comp.requires):
                names.add(name)
                changed = True
    return names


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(taken: Collection[int] = ()) -> int:
    """A loopback TCP port free right now (and not in ``taken``)."""
    while True:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port
