# Two commands for a fresh machine: `make run` trains the default scheme,
# `make test` runs the suite. Both create .venv and install the package first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/default
CONFIG ?= configs/default.py
PYTEST_WORKERS ?= 2

.PHONY: install run test smoke bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	@echo "installing alternating and its dependencies into $(VENV) (about a minute the first time)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m alternating.main --config=$(CONFIG) --workdir=$(WORKDIR)

smoke: install
	$(BIN)/python -m alternating.main --config=$(CONFIG):smoke --workdir=runs/smoke

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --durations=25 tests

bench: install
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf runs build *.egg-info .pytest_cache
