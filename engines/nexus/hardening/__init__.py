"""Nexus hardening: per-key rate limiting of gateway calls (kind ``rate_limit``).

Counting is done by the backend (Redis or Firestore) so every pod of a tenant shares one budget
per key and window; a pod's memory never decides alone.
"""

from .router import router

__all__ = ["router"]
