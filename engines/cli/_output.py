"""Rendering helpers shared by the reports: secret-free config, JSON, and a rich console.

Config values are shown, but never credentials: a ``secretRef`` is shown by its Secret's name
only, and settings go through :func:`engines.routing.redact.redact` (userinfo and credential
query parameters of a URL masked, as is any key that looks like a credential). The model refuses
an inline credential, but a report may show what a cluster or Firestore holds, whoever wrote it.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from engines.routing.redact import MASK, redact

__all__ = ["MASK", "console", "dump_json", "redact"]


def dump_json(data: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def console(out: TextIO | None = None, *, color: bool | None = None) -> Any:
    """A rich Console: colour on a TTY (``NO_COLOR`` honoured), no wrapping when piped."""
    from rich.console import Console

    stream = out or sys.stdout
    tty = stream.isatty()
    if color is False:
        return Console(file=stream, no_color=True, highlight=False, width=None if tty else 10_000)
    return Console(
        file=stream,
        force_terminal=True if color else None,
        highlight=False,
        width=None if tty else 10_000,
    )
