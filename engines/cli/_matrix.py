"""``routingctl matrix``: tenants x kinds completeness for one environment.

Every cell is ``RoutingTable.resolve(kind, tenant, env, project)`` over the source's winners —
the same answer a pod would get — classified by where the winner came from: the tenant's own
entry, an env-wide default (``tenant: "*"``), or nothing (missing: that pod would not be
ready). Tenants are those that have an entry in the env, plus any named with ``--tenants``.
The ``*`` column shows the env-wide defaults themselves.

Rows are kinds and columns tenants on screen (17 kinds fit a terminal's height better than its
width); JSON lists cells and CSV has one row per tenant, one column per kind.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any, TextIO

from engines.routing import ConfigMissing

from ._output import console, dump_json
from ._sources import Snapshot

__all__ = ["matrix"]

WILDCARD = "*"


def _cells(
    snapshot: Snapshot, env: str, tenants: Sequence[str], kinds: Sequence[str], project: str
) -> list[dict[str, Any]]:
    table, winners = snapshot.table()
    cells = []
    for tenant in (*tenants, WILDCARD):
        for kind in kinds:
            cell: dict[str, Any] = {"tenant": tenant, "resource_kind": kind}
            try:
                record = table.resolve(kind, tenant, env, project)
            except ConfigMissing as exc:
                cell.update(state="missing", tried=[k.document_id for k in exc.tried])
            else:
                entry = winners[record.key]
                state = "default" if record.tenant == WILDCARD and tenant != WILDCARD else "own"
                cell.update(
                    state=state,
                    backend=record.backend.value,
                    key=record.key.document_id,
                    revision=record.revision,
                    origin=entry.origin,
                )
                if entry.ready is not None:
                    cell["ready"] = entry.ready
            cells.append(cell)
    return cells


def matrix(
    snapshot: Snapshot,
    *,
    env: str,
    tenants: Sequence[str] | None,
    kinds: Sequence[str],
    project: str,
    output: str,
    out: TextIO,
    color: bool | None = None,
) -> int:
    """Print the matrix; 0 when every tenant resolves every kind, 1 when a cell is missing."""
    found = sorted({e.record.tenant for e in snapshot.entries if e.record.env == env} - {WILDCARD})
    columns = list(tenants) if tenants else found
    cells = _cells(snapshot, env, columns, kinds, project)
    missing = [c for c in cells if c["state"] == "missing" and c["tenant"] != WILDCARD]
    if output == "json":
        dump_json(
            {
                "env": env,
                "project": project,
                "source": snapshot.source,
                "tenants": columns,
                "kinds": list(kinds),
                "cells": cells,
                "missing": len(missing),
                "invalid": [{"origin": o, "reason": r} for o, r in snapshot.invalid],
            },
            out,
        )
    elif output == "csv":
        _csv(cells, columns, kinds, out)
    else:
        _table(cells, env, project, columns, kinds, snapshot, missing, out, color)
    return 1 if missing else 0


def _label(cell: dict[str, Any]) -> str:
    if cell["state"] == "missing":
        return "MISSING"
    if cell["state"] == "default":
        return f"{cell['backend']} (*)"
    return str(cell["backend"])


def _csv(
    cells: list[dict[str, Any]], tenants: Sequence[str], kinds: Sequence[str], out: TextIO
) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["tenant", *kinds])
    by = {(c["tenant"], c["resource_kind"]): c for c in cells}
    for tenant in (*tenants, WILDCARD):
        writer.writerow([tenant, *(_label(by[tenant, k]) for k in kinds)])


def _table(
    cells: list[dict[str, Any]],
    env: str,
    project: str,
    tenants: Sequence[str],
    kinds: Sequence[str],
    snapshot: Snapshot,
    missing: list[dict[str, Any]],
    out: TextIO,
    color: bool | None,
) -> None:
    from rich.table import Table
    from rich.text import Text

    title = f"routing matrix: env {env}" + (f", project {project}" if project != WILDCARD else "")
    table = Table(title=title, title_justify="left", caption=f"source: {snapshot.source}")
    table.add_column("resource_kind", style="bold")
    for tenant in tenants:
        table.add_column(tenant)
    table.add_column("* (defaults)", style="dim")
    by = {(c["tenant"], c["resource_kind"]): c for c in cells}
    for kind in kinds:
        row: list[Any] = [kind]
        for tenant in (*tenants, WILDCARD):
            cell = by[tenant, kind]
            if cell["state"] == "missing":
                row.append(Text("MISSING", style="bold red") if tenant != WILDCARD else Text("-"))
            elif cell["state"] == "default":
                row.append(Text(_label(cell), style="cyan"))
            else:
                row.append(Text(_label(cell), style="green"))
        table.add_row(*row)
    con = console(out, color=color)
    con.print(table)
    con.print('(*) = inherited from the env-wide default (tenant "*"); MISSING = no entry resolves')
    if not tenants:
        con.print(f"no tenant has an entry in env {env}; name tenants with --tenants a,b")
    if missing:
        con.print(
            Text(
                f"{len(missing)} missing cell(s) across {len(tenants)} tenant(s)", style="bold red"
            )
        )
    for origin, reason in snapshot.invalid:
        con.print(Text(f"ignored invalid entry {origin}: {reason}", style="yellow"))
