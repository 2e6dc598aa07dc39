"""Rendering helpers shared by the reports: secret-free config, JSON, and a rich console.

Config values are shown, but never credentials: a ``secretRef`` is shown by its Secret's name
only, and a URL that carries a password inline (``redis://:pw@host``) is masked, as is any key
that looks like a credential. The model does not forbid an inline password, so the tool must
not be the thing that prints it.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "console", "dump_json", "redact"]

MASK = "****"
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|credential|private_key)", re.I)


def _redact_url(value: str) -> str:
    if "://" not in value or "@" not in value:
        return value
    try:
        parts = urlsplit(value)
        if parts.password is None:
            return value
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{hostport}"))
    except ValueError:
        return MASK


def redact(value: Any, key: str = "") -> Any:
    """``value`` with credentials masked (recursively)."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key):
            return MASK
        return _redact_url(value)
    return value


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
