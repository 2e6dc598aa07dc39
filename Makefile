# The two entry points of the README. Both set up what they need first (idempotent, cached).
.PHONY: setup demo test lint crd lock image image-test e2e

# The image `make image` builds and `make image-test` runs (podman names it localhost/$(IMAGE));
# IMAGE_BUILD_FLAGS go to the build (e.g. --no-cache).
IMAGE ?= routing-registry:dev
IMAGE_BUILD_FLAGS ?=

setup:
	bash hack/setup.sh

demo: setup
	.venv/bin/routing-dev demo

test: setup
	.venv/bin/python -m pytest


lint: setup
	.venv/bin/ruff check engines operator devstack tests benchmarks
	.venv/bin/mypy
	.venv/bin/mypy benchmarks
	.venv/bin/lint-imports

crd: setup
	.venv/bin/python -m engines.routing.crd

# Re-resolve every dependency (runtime and test) to its newest allowed release and rewrite
# requirements.lock; then `make setup` installs exactly that. Only on purpose: review the diff.
lock:
	bash hack/lock.sh

image:
	bash hack/image.sh build $(IMAGE) $(IMAGE_BUILD_FLAGS)

# Both entry points from the built image, as the chart runs them, against the local stack.
# Skips when no container engine can run here, unless ROUTING_IMAGE_REQUIRED=1 (CI).
image-test: setup image
	ROUTING_IMAGE=$(IMAGE) .venv/bin/python -m pytest tests/image -m image -v

# The kind scenarios on a real node of our own (kubelet + containerd beside the local control
# plane; needs root): see README "End-to-end on a real node". A skip is a failure here.
e2e: setup image
	ROUTING_E2E_SKIP_IMAGE=1 ROUTING_E2E_IMAGE=localhost/$(IMAGE) bash hack/e2e.sh
