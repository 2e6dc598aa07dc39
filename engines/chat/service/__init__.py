"""Chat service: publish to a topic, follow a topic as server-sent events (kind ``chat_bus``).

The bus is Redis (streams) in production: every pod's subscribers see every pod's messages.
``server`` re-exports :func:`engines.app.create_app` at the serve path DESIGN §9 documents.
"""

from .bus import router

__all__ = ["router"]
