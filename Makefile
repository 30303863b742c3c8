# The mesh: one entry point for running, testing and checking.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_FILES := $(shell find protos -name '*.proto' -not -path '*/google/*')

.PHONY: run test check protos protos-check validate bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

## run: start the backing services and all five processes in the foreground (Ctrl-C stops)
run: $(STAMP)
	@$(BIN)/mesh up

## test: the whole suite (unit, integration, e2e), installing what it needs first
test: $(STAMP) protos-check
	$(BIN)/pytest

## check: lint, format check and strict typing
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## protos: regenerate the Python code from protos/ (the output is committed)
protos: $(STAMP)
	$(BIN)/python -m mesh.protogen

## protos-check: fail when the committed generated code is not what protos/ generates
protos-check: $(STAMP)
	$(BIN)/python -m mesh.protogen --check

## bench: run the benchmark scenarios (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python -m bench.startup --runs 3
	$(BIN)/python -m bench.auth --seconds 10

## validate: deployment and contract validations
validate: $(STAMP) protos-check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
