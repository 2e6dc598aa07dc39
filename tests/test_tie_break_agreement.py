"""The §3 tie-break is one order: the operator's claims and ``routingctl``'s snapshots pick the
same winner among entries claiming one identity, the one the projection contract's
``claim_order`` puts first (including namespaces that sort differently as ``namespace/name``
strings, where the two used to disagree).
"""

from __future__ import annotations

import random

from routing_operator.claims import Contender

from engines.cli._sources import Entry, Snapshot, parse_object
from engines.routing.contract import claim_order

AT = "2026-01-02T03:04:05Z"
CLAIMS = [
    ("2026-01-02T03:04:06Z", "a", "a"),  # younger: loses to every other
    (AT, "a-b", "x"),  # as a "namespace/name" string, "a-b/x" < "a/x"
    (AT, "a", "y"),
    (AT, "a", "x"),
]


def objects() -> list[dict[str, object]]:
    return [
        {
            "metadata": {
                "namespace": ns,
                "name": name,
                "uid": f"uid-{ns}-{name}",
                "creationTimestamp": created,
                "generation": 1,
            },
            "spec": {
                "tenant": "acme",
                "env": "prod",
                "resourceKind": "seo",
                "backend": "firestore",
                "firestore": {"collection": f"seo_{ns}_{name}"},
            },
        }
        for created, ns, name in CLAIMS
    ]


def test_operator_and_routingctl_order_claimants_as_the_contract_does() -> None:
    expected = sorted(CLAIMS, key=lambda c: claim_order(*c))
    assert expected[0] == (AT, "a", "x")

    shuffled = objects()
    random.Random(3).shuffle(shuffled)
    contenders = sorted(Contender.of(o["metadata"]) for o in shuffled)  # type: ignore[arg-type]
    assert [(c.created, c.namespace, c.name) for c in contenders] == expected

    entries = [parse_object(o) for o in shuffled]
    assert [e.order() for e in sorted(entries, key=Entry.order)] == expected
    winners, conflicts = Snapshot("test", entries).winners()
    assert [w.name for w in winners.values()] == ["a/x"]
    assert sorted(loser.name or "" for loser, _ in conflicts) == ["a-b/x", "a/a", "a/y"]
