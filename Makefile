# mvcstore: two commands do everything on a fresh machine:
#   make demo   installs into .venv and runs the fork-and-compare demo on real training
#   make test   installs into .venv and runs lint, types and the whole test suite

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
EXTRAS ?= test,demo

.PHONY: all install demo test lint types pytest bench clean

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

pytest: $(STAMP)
	$(VENV)/bin/pytest -q -p no:cacheprovider

test: lint types pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_recipe.py

clean:
	rm -rf demo-run checkout .pytest_cache .mypy_cache .ruff_cache
