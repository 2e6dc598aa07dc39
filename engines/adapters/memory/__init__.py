"""In-process adapters for every port: the reference the conformance suites measure others by.

Test-only (``ENGINES_ALLOW_TEST_BACKENDS=1``): state lives in the adapter instance and dies with
it. Each instance serves one tenant, so tenants are apart by construction.
"""
