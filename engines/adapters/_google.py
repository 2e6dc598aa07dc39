"""Google credentials from a ``secretRef`` value, shared by the Firestore and GCS adapters."""

from __future__ import annotations

import json
from typing import Any

from engines.routing.errors import InvalidRouting

__all__ = ["service_account_credentials"]


def service_account_credentials(secret: str) -> tuple[Any, str | None]:
    """(credentials, project_id) from a service-account JSON key; ``InvalidRouting`` otherwise."""
    from google.oauth2 import service_account

    try:
        info = json.loads(secret)
        credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
        return credentials, info.get("project_id")
    except (ValueError, KeyError, AttributeError) as exc:
        raise InvalidRouting(
            "the secret must hold a service-account JSON key", field="secretRef"
        ) from exc
