"""The operator's identity claims: who wins an identity (§3), and how the map stays current."""

from __future__ import annotations

from typing import Any

from routing_operator.claims import Claims


def meta(name: str, created: str, *, deleting: bool = False) -> dict[str, Any]:
    m = {"namespace": "ns", "name": name, "uid": f"uid-{name}", "creationTimestamp": created}
    if deleting:
        m["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    return m


def spec(tenant: str = "acme", kind: str = "kpi") -> dict[str, Any]:
    return {"env": "prod", "tenant": tenant, "project": "*", "resourceKind": kind}


DOC = "prod:acme:*:kpi"


def test_oldest_wins_then_name_breaks_a_tie_and_deleting_entries_never_win() -> None:
    claims = Claims()
    claims.observe(meta("young", "2026-01-01T00:00:09Z"), spec())
    claims.observe(meta("b-old", "2026-01-01T00:00:01Z"), spec())
    claims.observe(meta("a-old", "2026-01-01T00:00:01Z"), spec())
    assert claims.winner(DOC).name == "a-old"  # type: ignore[union-attr]
    claims.observe(meta("a-old", "2026-01-01T00:00:01Z", deleting=True), spec())
    assert claims.winner(DOC).name == "b-old"  # type: ignore[union-attr]
    assert sorted(c.name for c in claims.of(DOC)) == ["a-old", "b-old", "young"]


def test_an_identity_change_moves_the_claim_and_forget_empties_the_map() -> None:
    claims = Claims()
    claims.observe(meta("e", "2026-01-01T00:00:00Z"), spec())
    claims.observe(meta("e", "2026-01-01T00:00:00Z"), spec(tenant="globex"))
    assert claims.of(DOC) == []
    assert claims.winner("prod:globex:*:kpi").name == "e"  # type: ignore[union-attr]
    claims.observe(meta("e", "2026-01-01T00:00:00Z"), {"tenant": "no identity"})
    assert len(claims) == 0 and claims.winner("prod:globex:*:kpi") is None
    claims.observe(meta("e", "2026-01-01T00:00:00Z"), spec())
    claims.forget("uid-e")
    claims.forget("uid-never-seen")
    assert len(claims) == 0 and claims.of(DOC) == []


def test_prune_forgets_only_unlisted_entries_observed_before_the_list_began() -> None:
    claims = Claims()
    claims.load(
        [
            {"metadata": meta("listed", "2026-01-01T00:00:00Z"), "spec": spec()},
            {"metadata": meta("deleted", "2026-01-01T00:00:01Z"), "spec": spec()},
        ]
    )
    claims.begin_list()
    claims.observe(meta("created-during-list", "2026-01-01T00:00:02Z"), spec())
    gone = claims.prune({"uid-listed"})
    assert [c.name for c in gone] == ["deleted"]
    assert sorted(c.name for c in claims.of(DOC)) == ["created-during-list", "listed"]
