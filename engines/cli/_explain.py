"""``routingctl explain``: which entry wins for one (kind, tenant, env, project), and why.

The steps shown are :func:`engines.routing.candidate_keys` (the §3 precedence) and the winner is
what the runtime's ``RoutingTable.resolve`` returns over the same entries; the report asserts the
two agree rather than re-deriving precedence. Entries that lost a conflict for a step's
identity are listed under it, since that is usually the surprise a user is chasing.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from engines.routing import ConfigMissing, candidate_keys

from ._output import dump_json, redact
from ._sources import Entry, Snapshot

__all__ = ["explain"]

MAX_INVALID_SHOWN = 5


def _shape(key: Any, tenant: str, project: str) -> str:
    t = "tenant" if key.tenant == tenant and tenant != "*" else "*"
    p = "project" if key.project == project and project != "*" else "*"
    return f"{t}, env, {p}"


def _entry_dict(entry: Entry) -> dict[str, Any]:
    record = entry.record
    return {
        "key": record.key.document_id,
        "origin": entry.origin,
        "entry": entry.name,
        "revision": record.revision,
        "generation": entry.generation if entry.generation is not None else record.generation,
        "backend": record.backend.value,
        "config": redact(record.config),
        "secret_ref": record.secret_ref.name if record.secret_ref else None,
        "ready": entry.ready,
        "paused": entry.paused,
    }


def explain(
    snapshot: Snapshot,
    *,
    kind: str,
    tenant: str,
    env: str,
    project: str,
    output: str,
    out: TextIO,
) -> int:
    """Print the chain; return 0 when the key resolves, 1 when it does not."""
    table, winners = snapshot.table()
    _, conflicts = snapshot.winners()
    keys = candidate_keys(kind, tenant, env, project)
    winner: Entry | None = None
    missing: ConfigMissing | None = None
    try:
        record = table.resolve(kind, tenant, env, project)
        winner = winners[record.key]
    except ConfigMissing as exc:
        missing = exc
    steps = []
    for i, key in enumerate(keys, 1):
        found = winners.get(key)
        state = "not found"
        if found is not None:
            state = "wins" if winner is not None and found is winner else "shadowed"
        steps.append(
            {
                "step": i,
                "key": key.document_id,
                "shape": _shape(key, tenant, project),
                "state": state,
                "origin": found.origin if found else None,
                "losers": [
                    loser.origin for loser, won in conflicts if won is found and found is not None
                ],
            }
        )
    if winner is not None:
        assert steps[[s["state"] for s in steps].index("wins")]["key"] == winner.key.document_id
    result: dict[str, Any] = {
        "query": {"resource_kind": kind, "tenant": tenant, "env": env, "project": project},
        "source": snapshot.source,
        "steps": steps,
        "winner": _entry_dict(winner) if winner else None,
        "error": missing.as_dict() if missing else None,
        "invalid": [{"origin": o, "reason": r} for o, r in snapshot.invalid],
    }
    if output == "json":
        dump_json(result, out)
    else:
        _render_text(result, out)
    return 0 if winner is not None else 1


def _render_text(result: dict[str, Any], out: TextIO) -> None:
    q = result["query"]
    w = out.write
    w(
        f"resource_kind={q['resource_kind']} tenant={q['tenant']} env={q['env']} "
        f"project={q['project']}  (source: {result['source']})\n"
    )
    width = max(len(s["key"]) for s in result["steps"])
    for step in result["steps"]:
        shape = f"({step['shape']})"
        line = f"  {step['step']}. {step['key']:<{width}}  {shape:<23} {step['state']}"
        if step["origin"]:
            line += f"  ← {step['origin']}"
        w(line.rstrip() + "\n")
        for loser in step["losers"]:
            w(f"       conflict: {loser} has the same identity and loses (§3: oldest wins)\n")
    winner = result["winner"]
    if winner is None:
        w(f"\nnot resolved: {result['error']['message']}\n")
    else:
        w(f"\nwinner:    {winner['key']}\n")
        w(f"  source:    {winner['origin']}")
        if winner["entry"] and winner["entry"] not in winner["origin"]:
            w(f" (RoutingEntry {winner['entry']})")
        w("\n")
        w(f"  revision:  {winner['revision']}\n")
        w(f"  backend:   {winner['backend']}\n")
        w(f"  config:    {json.dumps(winner['config'], sort_keys=True)}\n")
        w(f"  secretRef: {winner['secret_ref'] or '-'}\n")
        if winner["ready"] is not None:
            w(f"  ready:     {winner['ready']}{'  (paused)' if winner['paused'] else ''}\n")
    invalid = result["invalid"]
    if invalid:
        w(
            f"\n{len(invalid)} invalid entr{'y' if len(invalid) == 1 else 'ies'} "
            "in the source ignored"
        )
        if len(invalid) > MAX_INVALID_SHOWN:
            w(f" (first {MAX_INVALID_SHOWN}; all with --output json)")
        w(":\n")
        for item in invalid[:MAX_INVALID_SHOWN]:
            w(f"  {item['origin']}: {item['reason']}\n")
