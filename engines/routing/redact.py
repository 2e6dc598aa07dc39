"""Settings as humans may see them: every place that could hold a credential masked.

The model refuses a credential in settings (§2), so a valid record carries none. This is the
second lock, for what reaches a human anyway — ``/routing``, ``routingctl`` reports, an entry
written by an older operator, a document edited by hand: a URL loses its userinfo and its
credential-looking query parameters, and a value under a credential-looking key is masked whole.
One helper, used wherever settings are rendered, so there is one rule to review.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["MASK", "redact", "redact_url"]

MASK = "****"
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|credential|private_key|username)", re.I)


def redact_url(value: str) -> str:
    """``value`` with userinfo and credential query parameters masked; a non-URL unchanged.

    ``redis://app:pw@h:6379/0?password=x&db=1`` → ``redis://****@h:6379/0?password=****&db=1``.
    A string that looks like a URL but cannot be parsed is masked whole.
    """
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
        query = parts.query
        names = [part.partition("=")[0] for part in query.split("&")]
        if any("%" in name for name in names):  # an encoded name may spell "password"
            query = MASK
        elif any(_SECRET_KEY.search(name) for name in names):
            pairs = parse_qsl(query, keep_blank_values=True)
            masked = [(k, MASK if _SECRET_KEY.search(k) else v) for k, v in pairs]
            query = urlencode(masked, safe="*")
        if (netloc, query) == (parts.netloc, parts.query):
            return value  # nothing to mask: keep it byte for byte (urlunsplit normalises)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return MASK


def redact(value: Any, key: str = "") -> Any:
    """``value`` with credentials masked, recursively (dicts, lists, strings)."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key):
            return MASK
        return redact_url(value)
    return value
