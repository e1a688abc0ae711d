# Two entry points: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# The release matrix: every older Hermes minor release on the package index, newest patch
# of each, installed apart from the venv (no dependencies: 0.19.0's serve them all).
HERMES_RELEASES := 0.18.2 0.17.0 0.16.0 0.15.2 0.14.0 0.13.0
RELEASES        := $(VENV)/hermes-releases

.PHONY: demo test lint typecheck unit matrix bench bench-torn clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/watchers demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check watchers tests bench
	$(BIN)/ruff format --check watchers tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/pytest

$(RELEASES)/%/.installed: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-deps --target $(RELEASES)/$* hermes-agent==$*
	touch $@

# The compatibility subset (tests/compat) on a board made by each release's own code.
matrix: $(VENV)/.installed-test $(HERMES_RELEASES:%=$(RELEASES)/%/.installed)
	@for r in $(HERMES_RELEASES); do \
		echo "== hermes-agent $$r"; \
		HERMES_RELEASE=$$r PYTHONPATH=$(RELEASES)/$$r $(BIN)/pytest -q -p no:cacheprovider tests/compat || exit 1; \
	done

test: lint typecheck unit matrix

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

# Hermes 0.19's "torn-extend detected" with and without the daemon, side by side (~4 min).
bench-torn: $(VENV)/.installed-test
	$(BIN)/python bench/torn_extend.py --seconds 30 --seed-tasks 20000 --rounds 2

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
