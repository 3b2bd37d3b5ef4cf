# Flagport developer commands. Each target bootstraps itself on a fresh machine that has
# only Python >= 3.11 and make: uv is installed into .tools/ when it is not on PATH.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell $(PYTHON) -c "import sys; print(sys.executable)")
# Bytecode written once at install: the machines here set PYTHONDONTWRITEBYTECODE, so without it
# every test server and worker start compiled the dependencies from source again (seconds each).
SYNC = $(UV) sync --frozen --quiet --compile-bytecode
COMPILE_OWN = $(UV) run --frozen --no-sync python -m compileall -q sdk/src server/src cli/src >/dev/null
RUN = $(UV) run --frozen --no-sync

.PHONY: run test lint bench sync fmt

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet uv

sync: $(UV)
	$(SYNC)

## make run: the server on the embedded SQLite store with the portal's example flags
run: sync
	$(RUN) flags serve --seed examples/portal-flags.yaml $(ARGS)

## make test: every test (benchmarks run once for correctness), in TEST_WORKERS processes: most
## tests wait on the servers, Redis, PHP-FPM and browsers they start, so three share two cores
## well; a test file runs in one process (its module fixtures are shared). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 3
TEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile)
test: sync
	$(COMPILE_OWN)
	$(RUN) pytest --benchmark-disable $(TEST_PARALLEL) --durations=15 $(ARGS)

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports

fmt: sync
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

## make bench: the benchmarks for real (see benchmarks/RESULTS.md)
bench: sync
	$(COMPILE_OWN)
	$(RUN) pytest benchmarks -p no:randomly --benchmark-only $(ARGS)
