# The two entry points of the README. Both set up what they need first (idempotent, cached).
.PHONY: setup demo test lint crd

setup:
	bash hack/setup.sh

demo: setup
	.venv/bin/routing-dev demo

test: setup
	.venv/bin/python -m pytest


lint: setup
	.venv/bin/ruff check engines operator tests benchmarks
	.venv/bin/mypy
	.venv/bin/mypy benchmarks

crd: setup
	.venv/bin/python -m engines.routing.crd
