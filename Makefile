# mvcstore: two commands do everything on a fresh machine:
#   make demo   installs into .venv and runs the fork-and-compare demo on real training
#   make test   installs into .venv and runs lint, types and the whole test suite

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
EXTRAS ?= test,demo,remote

.PHONY: all install system-deps demo test lint types pytest bench bench-scale crash-test clean

include mk/services.mk

all: test

$(STAMP): pyproject.toml setup.py mvcstore/_kernels.c
	test -x $(PY) || bash scripts/check_space.sh . 10
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo_digits.py --dir demo-run

lint: $(STAMP)
	$(VENV)/bin/ruff check mvcstore tests benchmarks examples
	$(VENV)/bin/ruff format --check mvcstore tests benchmarks examples

types: $(STAMP)
	$(VENV)/bin/mypy mvcstore

# the backend tests need real servers: start them unless they are up, and
# stop afterwards only what this run started
pytest: $(STAMP)
	@started=0; \
	bash $(SERVICES_SH) status >/dev/null 2>&1 || started=1; \
	bash $(SERVICES_SH) up || exit 1; \
	. ./$(SERVICES_ENV); \
	$(VENV)/bin/pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$started = 1 ]; then bash $(SERVICES_SH) down; fi; \
	exit $$rc

# the web UI test drives a real headless Chromium (Debian's package)
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
		else \
			echo "error: chromium is missing; install Debian's 'chromium' package" >&2; exit 1; \
		fi; }

test: system-deps lint types pytest

bench: $(STAMP)
	bash benchmarks/setup_peers.sh
	$(PY) benchmarks/bench_recipe.py

bench-scale: $(STAMP)
	$(PY) benchmarks/bench_scale.py

crash-test: $(STAMP)
	$(PY) tests/crash/harness.py --kills 200

clean:
	rm -rf demo-run checkout .pytest_cache .mypy_cache .ruff_cache
