"""Strategy locks: one writer at a time per strategy, as expiring leases (kind ``strategy_lock``).

A lease must be renewed before its TTL runs out; a holder that dies loses the lock by itself.
Only the holder of a lease's token can renew or release it.
"""

from .router import router

__all__ = ["router"]
