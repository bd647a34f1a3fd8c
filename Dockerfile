# One image for the operator and for job pods.
#   operator (default CMD): python -m nightshift (settings from NIGHTSHIFT_* env)
#   jobs:                   python -m nightshift_jobs <name> [--param k=v ...]
# Build: DOCKER_BUILDKIT=1 docker build -t ghcr.io/nightshift-dev/nightshift:0.1.0 .
# No `# syntax=` line: it makes BuildKit fetch its frontend from Docker Hub on every build, and the
# built-in frontend (Docker >= 20.10) already has RUN --mount.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: wheels of the project and all its dependencies -------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
COPY operator/ operator/
COPY jobs/ jobs/
# Behind a TLS-intercepting proxy pip needs the host's CA bundle: pass it as an optional build
# secret (`--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`); it is never stored in a layer.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && pip wheel --wheel-dir /wheels .

# --- final: the installed wheels, a non-root user, nothing else ----------------------------------
FROM ${PYTHON_IMAGE}
ARG UID=10001
LABEL org.opencontainers.image.title="nightshift" \
      org.opencontainers.image.description="Kubernetes operator for scheduled background jobs, and its job runtime" \
      org.opencontainers.image.source="https://github.com/nightshift-dev/nightshift"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The backup built-in runs pg_dump and pg_restore: PostgreSQL's client from the base's Debian release
# (a pg_dump dumps servers of its major version and older).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && pg_dump --version
RUN groupadd --system --gid ${UID} nightshift \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin nightshift
# pip compiles the installed modules at install time, so the read-only root filesystem the chart
# sets up does not matter to Python.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels nightshift \
 && python -c "import nightshift, nightshift_jobs, kopf"
WORKDIR /tmp
# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER ${UID}:${UID}
EXPOSE 8080 9090
CMD ["python", "-m", "nightshift"]
