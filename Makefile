# The mesh: one entry point for running, testing and checking.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_FILES := $(shell find protos -name '*.proto' -not -path '*/google/*')

.PHONY: run test test-resilience check protos protos-check validate bench clean

$(STAMP): pyproject.toml web/package-lock.json
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]' --config-settings editable_mode=compat
	@if command -v npm >/dev/null; then npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error || echo "warning: npm ci --prefix web failed: /docs answers 503 until it succeeds"; else echo "note: npm not found: the API docs at /docs and the browser tests need Node.js 20+ and npm"; fi
	@touch $(STAMP)

## run: start the backing services and all five processes in the foreground (Ctrl-C stops)
run: $(STAMP)
	@$(BIN)/mesh up

## test: the whole suite (unit, integration, e2e), installing what it needs first
## (tests/deploy needs the deployment tools and runs in `make validate`)
test: $(STAMP) protos-check
	$(BIN)/pytest --ignore=tests/deploy

## test-resilience: just the resilience and security suite (faults injected, abuse tried;
## see tests/resilience/README.md); `make test` runs it too
test-resilience: $(STAMP) protos-check
	$(BIN)/pytest tests/resilience -m resilience

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

## bench: every scenario against its baselines; writes bench/results/<date>-<sha>.md/.json (see bench/README.md)
bench: $(STAMP)
	@for tool in wrk hey nginx taskset; do command -v $$tool >/dev/null || \
		echo "bench: $$tool is missing (apt-get install wrk hey nginx util-linux)"; done
	$(BIN)/python -m bench $(BENCH_ARGS)

## validate: deployment and contract validations (see deployments/validate.sh)
validate: $(STAMP) protos-check
	BIN=$(CURDIR)/$(BIN) bash deployments/validate.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
