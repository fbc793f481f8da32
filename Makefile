# agenttask-operator — every target installs what it needs (venv, pip, Go build) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CLUSTER_DIR := .cache/cluster
export KUBECONFIG_LOCAL := $(CLUSTER_DIR)/kubeconfig

.PHONY: help venv lint fmt test test-unit binaries helm krew image manifests cluster cluster-down demo bench chaos clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv and install the package with dev tools

binaries: ## build etcd, kube-apiserver, kube-controller-manager, kubectl (cached)
	@bash hack/control-plane/build.sh >/dev/null

helm: ## build helm from its Go module (cached) and print its path
	@bash hack/helm/build.sh

krew: ## build krew from its Go module (cached; tests install the kubectl plugin with it) and print its path
	@bash hack/krew/build.sh

image: ## build the Dockerfile with buildah on a Debian-made base (both cached; needs root)
	@bash hack/image/build.sh >/dev/null

manifests: $(STAMP) ## generate CRDs (hack/gen_crds.py), copy crds/ into the chart, regenerate deploy/
	@bash hack/render-deploy.sh

lint: $(STAMP) ## ruff, ruff format --check, mypy --strict, import-linter, hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint --config .hadolint.yaml Dockerfile

fmt: $(STAMP) ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(STAMP) lint binaries helm krew mcp-servers image prometheus ## lint, then all tests (starts its own control plane)
	$(PY) -m pytest

# MCP servers the tests start: server-everything (npm, every package pinned by the lockfile in
# hack/mcp-servers, installed with `npm ci`) and mcp-proxy (PyPI). mcp-proxy needs mcp<2 while
# the operator needs mcp>=2.3, so it gets a virtualenv of its own. The stamp names the versions
# and the lockfile's hash, so a change reinstalls and an unchanged one costs nothing.
MCP_DIR := .cache/mcp
MCP_LOCK := hack/mcp-servers/package-lock.json
MCP_PROXY := mcp-proxy==0.13.0 mcp==1.30.0
MCP_STAMP := $(MCP_DIR)/.installed-$(shell sha256sum $(MCP_LOCK) | cut -c1-12)-proxy-0.13.0

.PHONY: mcp-servers
mcp-servers: $(MCP_STAMP) ## install the MCP servers the tests use into .cache/mcp (pinned)

$(MCP_STAMP): $(MCP_LOCK) hack/mcp-servers/package.json
	mkdir -p $(MCP_DIR)
	rm -f $(MCP_DIR)/.installed-*
	cp hack/mcp-servers/package.json $(MCP_LOCK) $(MCP_DIR)/
	npm ci --prefix $(MCP_DIR) --no-audit --no-fund --loglevel=error
	rm -rf $(MCP_DIR)/proxy
	$(PYTHON) -m venv $(MCP_DIR)/proxy
	$(MCP_DIR)/proxy/bin/python -m pip install -q $(MCP_PROXY)
	touch $@

# Prometheus, from Debian (the tests scrape the operator with it: tests/test_metrics_prometheus.py).
# Pinned to the version bookworm gives; nothing to do when that version is installed.
PROMETHEUS_VERSION := 2.42.0+ds-5+deb12u1

.PHONY: prometheus
prometheus: ## install Debian's prometheus package (pinned; apt-get, needs root)
	@if [ "$$(dpkg-query -W -f='$${Version}' prometheus 2>/dev/null)" != "$(PROMETHEUS_VERSION)" ]; then \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus=$(PROMETHEUS_VERSION) >/dev/null \
	  || { echo "prometheus $(PROMETHEUS_VERSION) is gone from apt (a Debian update replaced it):" \
	         "installing $$(apt-cache policy prometheus | awk '/Candidate/{print $$2}'); bump PROMETHEUS_VERSION" >&2; \
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; \
	fi

test-unit: $(STAMP) mcp-servers prometheus ## tests that need no cluster and no image
	$(PY) -m pytest -m 'not cluster and not image'

cluster: $(STAMP) ## start a local control plane in the background (.cache/cluster/kubeconfig)
	@$(PY) hack/localcluster.py up

cluster-down: $(STAMP) ## stop the local control plane and remove its data
	@$(PY) hack/localcluster.py down

demo: $(STAMP) ## the disk-space scenario end to end (starts a local control plane if KUBECONFIG is unset)
	@$(PY) hack/demo.py

# Not part of `make test`: it takes minutes and needs the machine to itself. Sizes and figures
# through BENCH_ARGS, e.g. make bench BENCH_ARGS="--tasks 200" or BENCH_ARGS="--quick".
BENCH_ARGS ?=
bench: $(STAMP) binaries ## benchmark with its own control plane; writes benchmarks/RESULTS.md (minutes)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# 200 tasks (CHAOS_TASKS), 3 replicas, 30 SIGKILLs, an 8 s API-server freeze, a replica scaled
# away and back, a fault-injecting model; figures printed and written to .cache/chaos.json.
chaos: $(STAMP) binaries ## the full chaos run on several replicas (minutes; not in make test)
	$(PY) -m pytest tests/test_chaos.py -m chaos -s

clean: cluster-down ## remove the venv and caches inside the repo
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
