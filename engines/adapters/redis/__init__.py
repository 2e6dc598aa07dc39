"""Redis adapters: RateLimiter, MessageBus, PresenceRegistry, LockManager and DocumentStore.

Every key is ``{key_prefix}{tenant}:{area}:...`` so tenants never share a key, and every
multi-step operation is one Lua script or one WATCH/MULTI transaction. Times that matter to
correctness (presence expiry) come from the Redis server clock (``TIME``), not from the pods'.
The ``redis`` package is imported only by this package's modules (:mod:`._client`,
:mod:`.documents`, :mod:`.adapters`), which the adapter factory loads on first use.
"""
