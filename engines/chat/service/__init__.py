"""Chat service: publish to a topic, follow a topic as server-sent events (kind ``chat_bus``).

The bus is Redis (streams) in production: every pod's subscribers see every pod's messages.
``server.create_app`` builds the whole engines app (all services) and lives here for history.
"""

from .bus import router

__all__ = ["router"]
