# mvcstore: two commands do everything on a fresh machine:
#   make demo   installs into .venv and runs the fork-and-compare demo on real training
#   make test   installs into .venv and runs lint, types and the whole test suite

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
EXTRAS ?= test,demo

.PHONY: all install demo test lint types pytest bench crash-test clean

include mk/services.mk

all: test

$(STAMP): pyproject.toml
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
	if ! bash $(SERVICES_SH) status >/dev/null 2>&1; then \
		bash $(SERVICES_SH) up || exit 1; started=1; \
	fi; \
	. ./$(SERVICES_ENV); \
	$(VENV)/bin/pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$started = 1 ]; then bash $(SERVICES_SH) down; fi; \
	exit $$rc

test: lint types pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_recipe.py

clean:
	rm -rf demo-run checkout .pytest_cache .mypy_cache .ruff_cache
