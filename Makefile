# Build, check and benchmark runstate. `make help` lists the targets.
#
# Everything runs from .venv, installed from the locks in requirements/ (exact pins and hashes,
# made by `make lock`). Each install leaves a stamp named after a hash of what it installed, so
# a target whose lock is unchanged installs nothing and a changed lock reinstalls once.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# uv only produces the locks (`make lock`); installs use plain pip, which every machine has.
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
LOCK_PYTHON := 3.11

TEST_LOCK := requirements/test.txt
BENCH_LOCK := requirements/bench.txt

# Arguments passed through: `make serve ARGS="--port 8080"`, `make test PYTEST_ARGS="-k ttl"`,
# `make bench BENCH_ARGS="--seconds 1" BENCH_HTTP_ARGS="--quick"`, `make lock UPGRADE=1` (move
# every pin to the newest).
ARGS ?=
PYTEST_ARGS ?=
# The suite runs in parallel worker processes (pytest-xdist): most of its time is spent waiting
# on servers, PostgreSQL and fsync, not on the CPU. Tests marked `serial` (they restart
# PostgreSQL or check time bounds) run afterwards, alone.
TEST_WORKERS ?= 3
BENCH_ARGS ?=
BENCH_HTTP_ARGS ?=
UPGRADE ?=

hash_of = $(shell cat $(1) 2>/dev/null | sha256sum | cut -c1-16)
TEST_STAMP := $(VENV)/.stamp-test-$(call hash_of,$(TEST_LOCK))
BENCH_STAMP := $(VENV)/.stamp-bench-$(call hash_of,$(BENCH_LOCK))
EDITABLE_STAMP := $(VENV)/.stamp-editable-$(call hash_of,pyproject.toml)

.PHONY: help venv serve test lint bench bench-http bench-deps bench-quick lock clean browser-deps

help:
	@echo "make venv         create .venv and install the test lock + runstate (editable)"
	@echo "make test         ruff check, mypy (strict), make audit and pytest: what CI runs"
	@echo "make audit        bandit over src/ and pip-audit over the test lock"
	@echo "make soak         the reliability tests (docs/reliability.md) at soak size (10-30 min)"
	@echo "make lint         ruff check (src, tests, bench) and mypy (src, bench)"
	@echo "make serve        run 'runstate serve' from .venv (ARGS=... passed on)"
	@echo "make bench        library, HTTP and scale benchmarks against their peers (< 10 min)"
	@echo "make bench-http   HTTP benchmark only: runstate serve vs webdis, etcd, bare ASGI (wrk)"
	@echo "make bench-deps   install wrk, webdis, etcd-server, redis-server (Debian), if possible"
	@echo "make browser-deps install Debian's chromium for the dashboard's browser tests, if possible"
	@echo "make bench-quick  reduced benchmark (< 2 min), fails if a ratio falls below its floor"
	@echo "make lock         regenerate requirements/*.txt from pyproject.toml (UPGRADE=1 to bump)"
	@echo "make clean        remove .venv and tool caches"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(TEST_STAMP): | $(TEST_LOCK) $(PY)
	$(PIP) install --require-hashes -r $(TEST_LOCK)
	rm -f $(VENV)/.stamp-test-*
	touch $@

$(BENCH_STAMP): | $(BENCH_LOCK) $(PY)
	$(PIP) install --require-hashes -r $(BENCH_LOCK)
	rm -f $(VENV)/.stamp-bench-*
	touch $@

# The project itself, editable and without dependencies (the locks bring those); redone when
# pyproject.toml changes (entry points, package layout).
$(EDITABLE_STAMP): | pyproject.toml $(TEST_STAMP)
	$(PIP) install --no-deps --editable .
	rm -f $(VENV)/.stamp-editable-*
	touch $@

venv: $(TEST_STAMP) $(EDITABLE_STAMP)

# On sqlite:///runstate.db in the working directory unless ARGS (--db ...) or RUNSTATE_DB say
# otherwise; the first start prints the admin token.
serve: venv
	$(VENV)/bin/runstate serve $(ARGS)

test: venv browser-deps
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy
	@$(MAKE) --no-print-directory audit
	$(VENV)/bin/pytest -n $(TEST_WORKERS) -m "not serial" $(PYTEST_ARGS)
	$(VENV)/bin/pytest -m serial $(PYTEST_ARGS) || test $$? -eq 5  # 5: none selected

.PHONY: audit soak

# Security checks of QUALITY: bandit (accepted findings, each with its reason, in pyproject's
# [tool.bandit]) and pip-audit over the test lock, which fails on a known vulnerability only: an
# unreachable vulnerability service is a warning (scripts/audit_dependencies.py).
audit: venv
	$(VENV)/bin/bandit -q -c pyproject.toml -r src
	$(PY) scripts/audit_dependencies.py $(TEST_LOCK)

# The reliability suite of docs/reliability.md at soak size (RUNSTATE_SOAK=1 and the model and
# schemathesis example counts scale it up): 10-30 minutes. PYTEST_ARGS are passed on.
SOAK_TESTS := tests/test_crash.py tests/test_linearizability.py tests/test_fuzz.py \
	tests/test_quota_ttl_concurrency.py tests/test_disk_full.py tests/test_concurrency_http.py \
	tests/test_multiprocess.py tests/test_model.py tests/test_schemathesis.py \
	tests/test_security_routes.py tests/test_postgres_servers.py tests/test_postgres_faults.py
soak: venv
	RUNSTATE_SOAK=1 RUNSTATE_MODEL_EXAMPLES=$${RUNSTATE_MODEL_EXAMPLES:-100} \
	RUNSTATE_SCHEMATHESIS_EXAMPLES=$${RUNSTATE_SCHEMATHESIS_EXAMPLES:-100} \
		$(VENV)/bin/pytest -p no:cacheprovider --durations=15 $(SOAK_TESTS) $(PYTEST_ARGS)

lint: venv $(BENCH_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench

bench: venv $(BENCH_STAMP) bench-deps
	$(PY) -m bench.library $(BENCH_ARGS)
	$(PY) -m bench.http $(BENCH_HTTP_ARGS)
	$(PY) -m bench.scale

bench-http: venv $(BENCH_STAMP) bench-deps
	$(PY) -m bench.http $(BENCH_HTTP_ARGS)

# The HTTP benchmark's load generator and peers, from Debian's packages. Where they cannot be
# installed (no root, no apt-get, no network) this says so and the benchmark skips what is missing.
BENCH_DEBS := wrk webdis etcd-server redis-server
bench-deps:
	@if command -v wrk >/dev/null && command -v webdis >/dev/null && command -v etcd >/dev/null \
		&& command -v redis-server >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "make bench-deps: cannot install $(BENCH_DEBS) here (needs root and apt-get);" \
			"the HTTP benchmark skips what is missing"; exit 0; fi; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		$(BENCH_DEBS) >/dev/null; } || echo "make bench-deps: apt-get could not install" \
		"$(BENCH_DEBS); the HTTP benchmark skips what is missing"

# The dashboard's browser tests drive Debian's chromium through Playwright (never a downloaded
# browser). Where it cannot be installed this says so; the tests then skip, except under CI=true,
# where they fail.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "make browser-deps: cannot install chromium here (needs root and apt-get);" \
			"the dashboard's browser tests skip"; exit 0; fi; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		chromium >/dev/null; } || echo "make browser-deps: apt-get could not install chromium;" \
		"the dashboard's browser tests skip"

# Not run by CI (shared machines make timings noisy); run it before a performance-sensitive change.
bench-quick: venv $(BENCH_STAMP) bench-deps
	$(PY) -m bench.library --quick --check --peers runstate,diskcache,redis $(BENCH_ARGS)
	$(PY) -m bench.http --quick --check $(BENCH_HTTP_ARGS)

$(UV): | $(PY)
	$(PIP) install uv==$(UV_VERSION)

# The bench lock is resolved under the test lock as a constraint, so the packages both install
# (orjson, ...) get the same pin and the two locks can share one venv.
UV_COMPILE = $(UV) pip compile pyproject.toml --quiet --universal --python-version $(LOCK_PYTHON) \
	--generate-hashes --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

lock: | $(UV)
	mkdir -p requirements
	$(UV_COMPILE) --extra test -o $(TEST_LOCK)
	$(UV_COMPILE) --extra bench -c $(TEST_LOCK) -o $(BENCH_LOCK)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
