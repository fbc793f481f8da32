# syntax=docker/dockerfile:1
# Minimal image for now; hardened multi-stage build comes with the "ship it" issue.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir .
USER 65532:65532
ENTRYPOINT ["agenttask-operator"]
