# gitquorum: one entry point per job. Every target starts from nothing (make setup is idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup venv binaries image check lint typecheck test test-unit test-integration \
        test-testbed test-image bench demo testbed-up testbed-down clean

setup: venv binaries ## virtualenv, package with test extras, cached Kubernetes binaries

# Setup prints one line per step: what it did, the time it took, and the log holding the step's
# whole output (pip's and setuptools' chatter, go's download lines); a failed step shows the
# log's last lines. hack/build-binaries.sh prints its components in the same columns.
LOGS := $(VENV)/logs
now = $$(( $${EPOCHREALTIME/[.,]/} / 100000 ))
# $(call step,NAME,WHAT,COMMAND): run COMMAND with its output in $(LOGS)/NAME.log.
step = start=$(now); \
	( $(3) ) >$(LOGS)/$(1).log 2>&1 || { \
	  echo "$(1): failed; the last lines of $(LOGS)/$(1).log:" >&2; \
	  tail -n 30 $(LOGS)/$(1).log | sed 's/^/    /' >&2; exit 1; }; \
	took=$$(( $(now) - start )); \
	printf '%-24s %-52s %4d.%d s  log: %s\n' '$(1)' "$(2)" $$((took / 10)) $$((took % 10)) \
	  $(LOGS)/$(1).log

# Installs again when pyproject.toml changed since the last complete install (the stamp).
venv:
	@if [[ -x $(BIN)/python && -e $(STAMP) && ! pyproject.toml -nt $(STAMP) ]]; then \
	  printf '%-24s %-52s %4d.%d s\n' venv "$(VENV) up to date with pyproject.toml" 0 0; \
	  exit 0; \
	fi; \
	mkdir -p $(LOGS); \
	$(call step,venv,$(VENV) with $$($(BIN)/python -V),test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)); \
	$(call step,pip,pip upgraded,$(BIN)/python -m pip install --upgrade pip); \
	$(call step,package,gitquorum and its test extras installed (editable),\
	  $(BIN)/python -m pip install --progress-bar off -e '.[test]'); \
	touch $(STAMP)

binaries:
	@hack/build-binaries.sh >/dev/null

lint: venv
	$(BIN)/ruff check operator testbed tests bench
	$(BIN)/ruff format --check operator testbed tests bench

typecheck: venv
	$(BIN)/mypy operator/gitquorum testbed/gitquorum_testbed

check: lint typecheck ## linters and the fast tests
	$(BIN)/pytest -m unit -q

# The linters and the type checker run first, so CI (.ci/run: make test) fails on them too.
test: setup image lint typecheck ## the image, linters, types, then every test
	$(BIN)/pytest -q -ra

# The Dockerfile built here without Docker (podman and runc from Debian, installed when
# missing), from an empty image store, saved as build/gitquorum-image.tar.
image: ## the container image, built here, as an OCI archive
	@hack/build-image.sh

test-image: venv image ## the image run as the chart runs it
	$(BIN)/pytest -m image -q

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
