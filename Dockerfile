# syntax=docker/dockerfile:1
# agenttask-operator: the wheel is built in the first stage and installed into a virtualenv;
# only that virtualenv reaches the final image (no sources, no wheel, no pip, no build tools).
#
# Base: the official python:3.11-slim-bookworm (Python 3.11 on Debian 12 "bookworm"), pinned by
# tag. Any base with Python 3.11 as `python`, its venv module (with ensurepip) and
# groupadd/useradd works:
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
# pins the digest too (docker buildx imagetools inspect python:3.11-slim-bookworm prints it);
# `make image` builds on a base made from Debian's packages (hack/image/base.sh) with buildah.
# BUILDER_IMAGE, the builder stage's base, defaults to BASE_IMAGE; set it to that same base plus
# build-time settings that must not ship, e.g. a pip.conf trusting a proxy's CA (make image does
# that where this machine's pip does). The virtualenv links to the builder's interpreter, so
# both must have Python at the same path.
#
# tests/test_packaging.py runs this builder stage's RUN step itself (with the ENV paths in a
# temporary directory), so keep that step a plain shell command that uses only those variables.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BUILDER_IMAGE=${BASE_IMAGE}

FROM ${BUILDER_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOOLS=/opt/tools \
    VENV=/opt/venv \
    WHEELS=/wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# pip comes from a throwaway venv (ensurepip's, so the base needs no pip of its own): it builds
# our wheel, then installs it with its dependencies into a venv that has no pip of its own.
RUN python -m venv "$TOOLS" \
    && "$TOOLS/bin/python" -m pip wheel --no-cache-dir --no-deps --wheel-dir "$WHEELS" . \
    && python -m venv --without-pip "$VENV" \
    && "$TOOLS/bin/python" -m pip --python "$VENV/bin/python" install --no-cache-dir "$WHEELS"/agenttask_operator-*.whl

FROM ${BASE_IMAGE}
# No pip, setuptools or wheel in the final image (the official base has them, a base without pip
# has nothing to remove): nothing installs anything at run time.
RUN if python -m pip --version >/dev/null 2>&1; then python -m pip uninstall --yes --quiet pip setuptools wheel; fi \
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
