"""``routing-dev demo`` runs to the end on this machine and leaves no process behind.

The demo is the newcomer's first contact with the project, so it is run for real: its own
stack in a temporary state dir, the operator and the engines app as subprocesses, the committed
examples. Its narration is checked for each claim it makes (not ready → ready → switch →
fallback), then /proc is searched for anything still carrying the state dir's marker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devstack._procs import marked_pids


def test_demo_runs_to_the_end_and_stops_everything_twice_in_one_state_dir(tmp_path: Path) -> None:
    """Run twice: the second run is a newcomer's ``make demo`` again in the same checkout, on
    the control-plane data the first one left (its entries switched and deleted)."""
    state = tmp_path / "demo"
    for run in ("first", "second"):
        result = subprocess.run(
            [sys.executable, "-m", "devstack.cli", "demo", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=400,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        out = result.stdout
        assert result.returncode == 0, run + ": " + out[-3000:] + result.stderr[-2000:]
        assert "GET /readyz → 503 not_ready: 34 missing" in out
        assert "GET /readyz → 503 not_ready: 17 missing" in out
        assert 'GET /readyz → 200 {"status": "ready"}' in out
        assert "serving firestore after" in out and "the app was not restarted" in out
        assert "acme seo now served by the entry {'tenant': '*'" in out
        assert "demo complete." in out
        assert marked_pids(state) == [], f"processes of the {run} demo are still running"
