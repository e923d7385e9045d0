# Haggle: one command to install, one to run the demo, one to test.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Bytecode caches stay on for test runs: with PYTHONDONTWRITEBYTECODE set, every process a test starts would compile
# the project again and pytest would rewrite every test module again.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest
# uv installs exactly what uv.lock says. It comes from PyPI at a pinned version, in a venv of its own.
UV_VERSION := 0.13.9
UV := .tools/uv-$(UV_VERSION)/bin/uv
export UV_PYTHON_DOWNLOADS := never
# --compile-bytecode: every process a test starts (workers, services, stand-ins) imports from .pyc instead of
# compiling the venv's sources again, which matters where PYTHONDONTWRITEBYTECODE is set.
SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --compile-bytecode --extra test

.PHONY: install lock freeze demo up test test-cluster test-fast lint fmt asyncapi eval bench bench-beep clean browsers

install: $(STAMP)

$(UV):
	$(PY) -m venv .tools/uv-$(UV_VERSION)
	.tools/uv-$(UV_VERSION)/bin/pip install -q uv==$(UV_VERSION)

# The venv gets the project (editable) and exactly the locked versions; --locked fails (rather than re-resolve) when pyproject.toml changed without `make lock`.
$(STAMP): pyproject.toml uv.lock | $(UV)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(SYNC)
	touch $(STAMP)

# Re-resolve uv.lock on purpose: newest versions within pyproject's ranges, one lock for 3.11 and 3.13 alike.
# `make lock KEEP=1` keeps every pin it can and only follows an edited pyproject.toml (smallest diff).
lock: $(UV)
	$(UV) lock $(if $(KEEP),,--upgrade)
	rm -f $(STAMP)

freeze: install ## the venv's packages, without the project's own editable line (it names this clone's path)
	$(BIN)/python -m pip freeze --exclude-editable

demo: install ## a job for three simulated providers through the real services, ending in a table
	$(BIN)/haggle demo

up: install ## everything in one process on one port (embedded NATS unless NATS_URL is set)
	$(BIN)/haggle up

browsers: ## Debian's Chromium for the browser tests (browsers cannot be downloaded here)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Ten workers on two cores: most tests wait on simulated calls in real time, not on the CPU (two workers left it
# 60% idle; twelve starved the real-time tests once another process took a core). The `slow` tests are collected
# first and `--maxschedchunk 1` hands tests out one at a time, so the long ones start at once and no short one
# waits queued behind them.
test: install browsers
	$(BIN)/ruff check .
	$(PYTEST) -q -n 10 --dist load --maxschedchunk 1

test-cluster: install ## only the scale-out test on a 3-node NATS cluster (make test runs it too)
	$(PYTEST) -q -m cluster

test-fast: install
	$(PYTEST) -q -x -m "not browser and not cluster"

lint: install
	$(BIN)/ruff check .

fmt: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

asyncapi: install ## regenerate the checked-in AsyncAPI document from the contracts
	$(BIN)/haggle contracts asyncapi > contracts/asyncapi.json

eval: install ## score the offline price extractor on ../shared/eval
	$(BIN)/python scripts/eval_extractor.py

.PHONY: eval-negotiation
eval-negotiation: install ## the offer policy and market rounds against seeded simulated markets (docs/negotiation.md)
	$(BIN)/python scripts/eval_negotiation.py

bench: install ## gateway, the pre-issue-18 gateway and a bare relay at 25-400 calls, then haggle up whole vs. the relay (~15 min): benchmarks/results/, docs/bench.png
	$(SYNC) --extra bench
	$(BIN)/python -m benchmarks.gateway_bench
	$(BIN)/python -m benchmarks.beep_cost

bench-beep: install ## the voicemail-beep detector per 20 ms frame vs. its per-sample Python purity test (seconds): benchmarks/results/beep.json
	$(BIN)/python -m benchmarks.beep_cost

clean:
	rm -rf $(VENV) .tools .haggle .pytest_cache
