# syntax=docker/dockerfile:1
# agenttask-operator: the wheel is built in the first stage and installed into a virtualenv;
# only that virtualenv reaches the final image (no sources, no wheel, no pip, no build tools).
#
# Base: Python 3.11 on Debian 12 "bookworm", pinned by tag. To pin its digest as well, run
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# and use FROM python:3.11-slim-bookworm@sha256:<digest> in both stages.
#
# tests/test_packaging.py runs this builder stage's RUN step itself (with VENV and WHEELS in a
# temporary directory), so keep that step a plain shell command that uses only those variables.

FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VENV=/opt/venv \
    WHEELS=/wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Build our wheel, then install it with its dependencies into a venv that has no pip of its own.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir "$WHEELS" . \
    && python -m venv --without-pip "$VENV" \
    && python -m pip --python "$VENV/bin/python" install --no-cache-dir "$WHEELS"/agenttask_operator-*.whl

FROM python:3.11-slim-bookworm
# No pip, setuptools or wheel in the final image: nothing installs anything at run time.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --gid 65532 agenttask \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin agenttask \
    && mkdir /workspace \
    && chown 65532:65532 /workspace
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTTASK_WORKSPACE=/workspace
WORKDIR /workspace
USER 65532:65532
# kopf's liveness endpoint, when started with --liveness http://0.0.0.0:8080/healthz
EXPOSE 8080
ENTRYPOINT ["agenttask-operator"]
