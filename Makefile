# gitquorum: one entry point per job. Every target starts from nothing (make setup is idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup venv binaries check lint typecheck test test-unit test-integration test-testbed \
        bench demo testbed-up testbed-down clean

setup: venv binaries ## virtualenv, package with test extras, cached Kubernetes binaries

venv: $(STAMP)
$(STAMP): pyproject.toml
	@echo "==> virtualenv $(VENV) and the package with its test extras"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet --progress-bar off -e '.[test]'
	@touch $(STAMP)

binaries:
	@echo "==> Kubernetes, etcd and helm binaries (built once from the Go module proxy, cached)"
	@hack/build-binaries.sh >/dev/null

lint: venv
	$(BIN)/ruff check operator testbed tests bench
	$(BIN)/ruff format --check operator testbed tests bench

typecheck: venv
	$(BIN)/mypy operator/gitquorum testbed/gitquorum_testbed

check: lint typecheck ## linters and the fast tests
	$(BIN)/pytest -m unit -q

# The linters and the type checker run first, so CI (.ci/run: make test) fails on them too.
test: setup lint typecheck ## linters, types, then every test: unit, integration, testbed, e2e
	$(BIN)/pytest -q -ra

test-unit: venv
	$(BIN)/pytest -m unit -q

test-integration: venv
	$(BIN)/pytest -m integration -q

test-testbed: setup
	$(BIN)/pytest -m testbed -q -ra

bench: setup ## benchmarks against their references, ratios on the last line
	$(BIN)/python -m bench

demo: setup ## the main job on the local testbed
	@$(BIN)/python -m gitquorum_testbed.demo

testbed-up: setup
	$(BIN)/gitquorum-testbed up

testbed-down: venv
	$(BIN)/gitquorum-testbed down

clean:
	-$(BIN)/gitquorum-testbed down 2>/dev/null
	rm -rf $(VENV) .testbed .pytest_cache .mypy_cache .ruff_cache
