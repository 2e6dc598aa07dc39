"""Nexus: the request gateway's services (rate limiting, backend descriptors, raw storage)."""
