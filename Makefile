# The two entry points of the README. Both set up what they need first (idempotent, cached).
.PHONY: setup demo test lint crd

setup:
	bash hack/setup.sh

demo: setup
	.venv/bin/routing-dev demo

test: setup
	.venv/bin/python -m pytest

# Not part of `make test`: the two-replica kopf-peering test is flaky here (its replicas at
# times never see each other's peering records; cause not found). Run it on its own.
test-peering: setup
	.venv/bin/python -m pytest -m peering

lint: setup
	.venv/bin/ruff check engines operator tests benchmarks
	.venv/bin/mypy

crd: setup
	.venv/bin/python -m engines.routing.crd
