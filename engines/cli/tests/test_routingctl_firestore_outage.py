"""``routingctl`` while Firestore is down: the routing collection's gateway reports the outage as
one error, and the CLI prints it as one line naming the collection and the emulator, with exit
code 2 (not a traceback, not an empty report).

A real outage: the session's Firestore emulator is stopped, then started again.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest

from devstack.testing import wait_for
from engines.cli.routingctl import main
from engines.routing import BackendUnavailable, RoutingKey
from engines.routing.collection import RoutingCollection

pytestmark = pytest.mark.firestore


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_explain_and_matrix_over_a_stopped_emulator_say_so_in_one_line(
    firestore_emulator: Any,
) -> None:
    if firestore_emulator.stack is None:
        pytest.skip("the emulator comes from FIRESTORE_EMULATOR_HOST: cannot stop/start it")
    collection = f"routing_{uuid.uuid4().hex[:8]}"
    where = f"emulator at {firestore_emulator.host}, project {firestore_emulator.project}"
    source = ("--source", "firestore", "--collection", collection)
    firestore_emulator.stop()
    try:
        code, out, err = run(
            "explain", "--env", "prod", "--kind", "seo", "--tenant", "acme", *source
        )
        assert (code, out) == (2, "")
        assert err.startswith(
            f"routingctl explain: error: cannot list {collection} (env prod): Firestore "
            f"collection {collection} unavailable ({where}): "
        ), err
        assert err.count("\n") == 1

        code, out, err = run("matrix", "--env", "prod", *source)
        assert (code, out) == (2, "")
        assert err.startswith(f"routingctl matrix: error: cannot list {collection} (env prod)"), err
    finally:
        firestore_emulator.start()
    gateway = RoutingCollection(name=collection)
    wait_for(lambda: _answers(gateway), timeout=60, what="the restarted emulator")


def _answers(gateway: RoutingCollection) -> bool:
    try:
        gateway.get(RoutingKey("prod", "acme", "*", "seo"))
    except BackendUnavailable:
        return False
    return True
