# nightshift: `make run` starts a local control plane, PostgreSQL, the operator and the example jobs;
# `make test` runs every test (lint, types, unit, integration on the real control plane); `make e2e`
# the real lane (the image, a real kubelet, helm install).
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
export NIGHTSHIFT_CACHE ?= $(HOME)/.cache/nightshift
# Test sessions side by side (pytest-xdist, one test file per session at a time): each has its own
# control plane, PostgreSQL and operator. The suite mostly waits on timers and controllers: three fit 2 cores
# (8 min 45 s for the whole `make test`, against 14 min 30 s with two).
TEST_WORKERS ?= 3

.PHONY: run test tools unit fuzz chaos integration lint crds crds-check cluster cluster-down binaries bench bench-memory e2e clean

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

test: $(STAMP) tools binaries lint  ## everything: lint, types, unit and integration tests (TEST_WORKERS sessions side by side)
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) $(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -q -m "not cluster and not postgres and not tools and not e2e"

fuzz: $(STAMP)  ## the generated-input tests at four times the cases of make test (14,000; .ci/run runs it)
	NIGHTSHIFT_FUZZ_SCALE=4 $(BIN)/pytest -q -p no:cacheprovider tests/unit/test_fuzz.py

cluster: $(STAMP) binaries  ## a control plane in the background; kubeconfig at .cluster/kubeconfig
	bash hack/cluster-up.sh

cluster-down: $(STAMP)
	$(BIN)/python -m tests.support.cluster down --dir .cluster

run: $(STAMP) tools binaries  ## control plane + local node + PostgreSQL + operator + example jobs; Ctrl-C stops all
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) $(BIN)/python -m tests.support.demo

chaos: $(STAMP) tools binaries  ## 500+ runs under 50 operator kills (5 of kube-controller-manager), then failover with 10 leader kills; each ends on the invariant checker
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) $(BIN)/python -m tests.reliability.churn $(CHAOS_ARGS)

bench: $(STAMP) binaries  ## ratios at two sizes, apply against direct writes, the gate, the status lag (docs/benchmarks.md)
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) $(BIN)/python -m tests.bench $(BENCH_ARGS)

bench-memory: $(STAMP) binaries  ## RSS at rest with 10,000 BackgroundJobs and 50,000 finished Jobs with pods
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) $(BIN)/python -m tests.bench.memory $(BENCH_MEMORY_ARGS)

e2e: $(STAMP) tools binaries  ## the real lane: image, containerd + kubelet, helm install, catalogues (root)
	bash hack/e2e/lane.sh check || bash hack/e2e/lane.sh install
	NIGHTSHIFT_BIN_DIR=$$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) \
	NIGHTSHIFT_NODE_BIN_DIR=$$(bash hack/build-node-binaries.sh | tail -n1) \
	  $(BIN)/pytest -q -p no:cacheprovider -m e2e tests/e2e $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cluster .mypy_cache .ruff_cache
