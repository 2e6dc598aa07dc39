"""Firestore adapters: DocumentStore, RateLimiter, PresenceRegistry and LockManager.

Everything of a tenant lives under ``{collection}/{tenant}/...`` (``collection`` from the
routing entry), so tenants never share a document. Read-modify-write operations run in
Firestore transactions, retried with backoff when they lose a race. Expiry (rate windows,
presence, leases) uses the pods' clock; keep pods NTP-synced. Presence and lock documents carry
an ``expires_at`` timestamp, so a Firestore TTL policy on it can reap them in production.
The Google SDK is imported only by :mod:`.adapters`.
"""
