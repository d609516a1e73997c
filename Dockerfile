# syntax=docker/dockerfile:1
# payrelay: one image for every role. The role is the first argument:
#   docker run IMAGE receiver --host 0.0.0.0 --port 8080   (the default)
#   docker run IMAGE consumer | ops --host 0.0.0.0 --port 8081 | topology declare | dlq list ...
# Configuration comes from PAYRELAY_* variables and the TOML file named by PAYRELAY_CONFIG;
# nothing secret is baked in. Kubernetes probes /healthz and /readyz, so there is no HEALTHCHECK.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the project and its dependencies, installed from pyproject.toml into a venv ----------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest of the context out), and the
# hashed lock of its dependencies.
COPY pyproject.toml README.md ./
COPY requirements/runtime.lock ./requirements/
COPY service ./service
COPY consumers ./consumers
# The dependencies exactly as locked (pip refuses any file whose sha256 differs), then the project
# itself without dependencies: a regular (not editable) install, so /src is not needed later.
# Every dependency ships manylinux wheels, so no compiler is needed even here. The venv's own
# setuptools (bundled with Python 3.11's ensurepip, and unused at run time) goes.
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.lock \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/pip uninstall --yes setuptools \
    && /opt/venv/bin/payrelay --help > /dev/null

# --- runtime: the venv and a non-root user, nothing else --------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="payrelay" \
      org.opencontainers.image.description="Bank deposits and scanned checks, recorded as Chargebee payments, exactly once." \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 payrelay \
    && useradd --system --uid 10001 --gid payrelay --no-create-home \
       --home-dir /var/lib/payrelay --shell /usr/sbin/nologin payrelay \
    && install --directory --owner 10001 --group 10001 --mode 0750 /var/lib/payrelay

COPY --from=builder /opt/venv /opt/venv
# The base image's own pip, setuptools and wheel are not needed to run payrelay, and setuptools
# in particular brings advisories of its own: remove them from the system Python.
RUN python -m pip uninstall --yes pip setuptools wheel

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# The embedded SQLite ledger (the default PAYRELAY_LEDGER_URL, a relative path) lands here when the
# image runs on its own; on Kubernetes the ledger is PostgreSQL and the root filesystem read-only.
WORKDIR /var/lib/payrelay
USER 10001:10001

# receiver, ops, consumer metrics/health
EXPOSE 8080 8081 9102

ENTRYPOINT ["payrelay"]
CMD ["receiver", "--host", "0.0.0.0", "--port", "8080"]
