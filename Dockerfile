# syntax=docker/dockerfile:1
# One image, two entry points (DESIGN §9):
#   routing-operator --namespace NS | --all-namespaces      the kopf operator
#   uvicorn --factory engines.chat.service.server:create_app  the engines app
# The Helm chart (helm/routing-registry) sets the command of each Deployment.
#
# Reproducible: a pinned base, every Python package pinned by requirements.lock (pip constraints
# generated from the tested venv) and the build backend pinned below; no compiler in the final
# image; runs as an unprivileged user with a read-only root filesystem in the chart.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The build backend, pinned, so the project's wheel is built the same way every time.
RUN pip install setuptools==80.9.0 wheel==0.45.1
COPY requirements.lock ./
COPY pyproject.toml README.md ./
COPY engines ./engines
COPY operator ./operator
# The project and its runtime dependencies at exactly the locked versions (-c: constraints);
# pip fails if a dependency cannot be satisfied by the lock.
# devstack/ (the local stack and test fixtures) is dev tooling and never enters the build context,
# so the wheel has no such package: its console script would only fail, so it goes too.
RUN pip install --no-build-isolation -c requirements.lock . \
    && rm /opt/venv/bin/routing-dev \
    && pip check \
    && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="routing-registry" \
      org.opencontainers.image.description="RoutingEntry operator and engines app" \
      org.opencontainers.image.source="https://github.com/engines/routing-registry" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 engines \
    && useradd --system --uid 10001 --gid engines --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin engines \
    && mkdir -p /etc/engines/routing /etc/engines/secrets
# jemalloc under the Python heap: after a burst of thousands of new RoutingEntries it gives freed
# memory back to the kernel, where CPython's own allocator keeps every 1 MiB arena that still
# holds one live object (benchmarks/bench_operator.py --allocator compares the two).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2=5.3.0-1 \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /usr/local/lib/libjemalloc.so.2
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    PYTHONMALLOC=malloc \
    MALLOC_CONF=background_thread:true,narenas:1,tcache:false,dirty_decay_ms:500,muzzy_decay_ms:0
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080 8081
# Both entry points are on PATH; the default prints the operator's usage.
CMD ["routing-operator", "--help"]
