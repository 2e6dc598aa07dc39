"""The app's OpenAPI document tells the truth: schemathesis, with every check, finds nothing.

schemathesis (its CLI, ``st run --checks all``) reads ``/openapi.json`` from a
``uvicorn --factory`` process and sends thousands of generated requests, valid and invalid:
every status and content type the app answers must be documented with a body that matches its
schema, schema-valid input must be accepted and invalid input rejected, 405 must carry
``Allow``, a missing required header must be refused, and nothing may answer 5xx. The pod
serves two tenants, so ``X-Tenant`` is required and limited to them. The seed is fixed: a
failure reproduces with the ``curl`` line schemathesis prints.

Routing (``/readyz``, the files registry) is real; the backends are the test-only ones
(``ENGINES_ALLOW_TEST_BACKENDS=1``): the contract is the HTTP layer's, and every adapter passes
the same port conformance suite. Left out, with why:

- ``GET /chat/{topic}/events``: an event stream never ends, so a request/response fuzzer cannot
  finish one; ``test_http_limits`` covers its statuses and headers.
- schemathesis' ``filter_too_much`` health check: it measures how many generated blob names its
  generator throws away against their pattern and length bound, not anything the API does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from devstack import free_port
from devstack.testing import served_app, wait_for


def test_schemathesis_with_every_check_finds_no_failure(tmp_path: Path) -> None:
    with served_app(tmp_path / "app", port=free_port(), tenants="acme,globex") as app:
        wait_for(
            lambda: httpx.get(f"{app.url}/readyz").status_code == 200,
            timeout=60,
            what=lambda: f"/readyz 200; log:\n{app.output()}",
        )
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{app.url}/openapi.json",
                "--checks",
                "all",
                "--exclude-path-regex",
                "/events$",
                "--suppress-health-check",
                "filter_too_much",
                "--max-examples",
                "10",
                "--seed",
                "1",
                "--request-timeout",
                "10",
            ],
            cwd=tmp_path,  # schemathesis and hypothesis keep their caches in the cwd
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    print(summary)  # the figures: operations, phases, cases generated and passed
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-2000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert cases is not None, summary
    assert cases.group(1) == cases.group(2) and int(cases.group(1)) > 1000, summary
    assert re.search(r"Tested: (\d+)", summary) is not None, summary
