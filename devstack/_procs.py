"""Process groups for the local stack: start, identify, wait for, and stop them.

Every component runs in its own session (``start_new_session=True``), so a component and all of
its children (``gcloud`` spawns a shell that spawns ``java``) share one process group that can be
signalled as a whole. Each child also carries ``ROUTING_DEV_OWNER=<state dir>`` in its
environment: that marker, read back from ``/proc``, is how a recorded pid is recognised as ours
after a restart (pids get recycled) and how ``down`` finds a process that escaped its group.
Nothing here ever selects a process by its name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from devstack._errors import StackError

__all__ = [
    "COMPONENT_ENV",
    "OWNER_ENV",
    "group_members",
    "is_alive",
    "marked_pids",
    "marker_of",
    "spawn",
    "stop_group",
    "tail",
    "wait_until",
]

OWNER_ENV = "ROUTING_DEV_OWNER"
"""Environment variable set in every child: the resolved state directory that owns it."""

COMPONENT_ENV = "ROUTING_DEV_COMPONENT"
"""Environment variable set in every child: the component name."""

# Children started by this interpreter, kept so they can be reaped (no zombies in long pytest runs).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    owner: Path,
    component: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in a new session, output appended to ``log_path``; return its pid (= pgid)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {}), OWNER_ENV: str(owner), COMPONENT_ENV: component}
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=child_env,
            cwd=cwd,
        )
    _children[proc.pid] = proc
    return proc.pid


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of ``pid``, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: fields restart after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def is_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    _reap()
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    _reap()
    members = []
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
            members.append(pid)
    return members


def marker_of(pid: int) -> tuple[str, str] | None:
    """(owner state dir, component) from the environment of ``pid``, if it carries our marker."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    owner = env.get(OWNER_ENV.encode())
    if owner is None:
        return None
    return owner.decode(), env.get(COMPONENT_ENV.encode(), b"").decode()


def marked_pids(owner: Path) -> list[int]:
    """Live processes started for the stack whose state directory is ``owner``."""
    me = os.getpid()
    found = []
    for pid in _pids():
        if pid == me or not is_alive(pid):
            continue
        mark = marker_of(pid)
        if mark is not None and mark[0] == str(owner):
            found.append(pid)
    return found


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, *, what: str, grace: float = 15.0) -> None:
    """SIGTERM the group, SIGKILL it after ``grace`` seconds; raise if anything survives."""
    if not group_members(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    if _wait_gone(pgid, grace):
        return
    _signal_group(pgid, signal.SIGKILL)
    if not _wait_gone(pgid, 10.0):
        raise StackError(f"{what}: process group {pgid} survived SIGKILL: {group_members(pgid)}")


def _wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def tail(path: Path, lines: int = 15) -> str:
    """Last lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log_path: Path,
    pid: int | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it holds; fail fast if ``pid`` dies, fail clearly at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if pid is not None and not is_alive(pid):
            raise StackError(
                f"{what} exited before becoming healthy; log {log_path}:\n{tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{what} not healthy after {timeout:.0f}s; log {log_path}:\n{tail(log_path)}"
            )
        time.sleep(interval)
