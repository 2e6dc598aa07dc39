"""Realtime presence: which clients are connected right now (kind ``realtime_registry``).

Clients heartbeat with ``PUT``; a member that stops heartbeating expires after its TTL. The
registry lives in Redis or Firestore so every pod sees every member — an in-process registry
would only ever see the pod's own connections.
"""

from .router import router

__all__ = ["router"]
