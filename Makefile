# The README's two commands: `make demo` and `make test`. Both create/refresh the venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/python -m examples.order_checkout

lint: venv
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov=dwarf --cov-report=term:skip-covered tests

test: lint typecheck pytest

bench: venv
	$(BIN)/python -m bench run --db sqlite --workload linear3 --flows 300 --concurrency 32

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
