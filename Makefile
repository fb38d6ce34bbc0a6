# The README's two commands: `make demo` and `make test`. Both create/refresh the venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv demo test lint typecheck pytest bench mermaid clean

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

# The whole suite runs on PYTEST_WORKERS pytest-xdist processes (most tests wait on timers, leases and
# subprocesses, so more workers than cores pays). The coverage gate is on dwarf.workflow, the pure types,
# measured from their own tests (tests/workflow, in one process; they cover 96% of it); coverage starts
# before pytest so that the dwarf.testing plugin's early import of dwarf is measured too.
PYTEST_WORKERS ?= 4
pytest: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) tests
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run -m pytest -q -p no:cacheprovider -p no:xdist tests/workflow
	$(BIN)/python -m coverage report --fail-under=95 --include='src/dwarf/workflow/*' || \
		{ echo "coverage of dwarf.workflow is under 95%"; exit 1; }

test: lint typecheck pytest

# Our workloads at a small size on SQLite, and on PostgreSQL when 127.0.0.1:5432 answers (or DWARF_BENCH_DSN).
# The comparison with DBOS and LangGraph needs the bench extra: `python -m bench report` (docs/benchmarks.md).
bench: venv
	$(BIN)/python -m bench suite

# Re-pack the dashboard's vendored Mermaid from a directory laid out like its dist/ (see
# src/dwarf/dashboard/mermaid/README.md): make mermaid MERMAID_DIR=/tmp/mermaid-dist
MERMAID_DIR ?= mermaid-dist
mermaid: venv
	$(BIN)/python -c 'import sys, pathlib; from dwarf.dashboard.bundle import pack; pack(*map(pathlib.Path, sys.argv[1:]))' \
		$(MERMAID_DIR) src/dwarf/dashboard/mermaid/mermaid.tar.xz

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
