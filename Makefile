# nightshift: `make run` starts a local control plane, PostgreSQL, the operator and the example jobs;
# `make test` runs every test (lint, types, unit, integration on the real control plane).
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
export NIGHTSHIFT_CACHE ?= $(HOME)/.cache/nightshift

.PHONY: run test tools unit integration lint crds crds-check cluster cluster-down binaries bench e2e clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

binaries:  ## build the control plane's binaries into $(NIGHTSHIFT_CACHE) (only what is missing)
	bash hack/build-binaries.sh >/dev/null

lint: $(STAMP)
	$(BIN)/ruff check operator jobs tests
	$(BIN)/ruff format --check operator jobs tests
	$(BIN)/mypy

crds: $(STAMP)  ## regenerate crds/ and the chart's CRDs from the pydantic models
	$(BIN)/python -m nightshift.api.crd --write

tools:  ## PostgreSQL, Prometheus (promtool) and openssl from Debian when missing, or say what to install
	bash hack/ensure-tools.sh

test: $(STAMP) tools binaries lint  ## everything: lint, types, unit and integration tests
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -q -m "not cluster and not postgres and not tools"

cluster: $(STAMP) binaries  ## a control plane in the background; kubeconfig at .cluster/kubeconfig
	bash hack/cluster-up.sh

cluster-down: $(STAMP)
	$(BIN)/python -m tests.support.cluster down --dir .cluster

run: $(STAMP) tools binaries  ## control plane + local node + PostgreSQL + operator + example jobs; Ctrl-C stops all
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) $(BIN)/python -m tests.support.demo

bench: $(STAMP) binaries
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) $(BIN)/python -m tests.bench

e2e:  ## for users with Docker: kind cluster, image, helm install (not run in CI)
	bash hack/e2e-kind.sh

clean:
	rm -rf $(VENV) .cluster .mypy_cache .ruff_cache
