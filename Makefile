# Quick start: `make demo`, `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install install-test system-deps test lint format demo bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.base

install-test: $(VENV)/.test

# Debian's prometheus (with promtool) for the telemetry tests; installed only when missing.
system-deps:
	bash scripts/system-deps.sh

lint: install-test
	$(VENV)/bin/ruff check epcsched tests benchmarks simulations
	$(VENV)/bin/ruff format --check epcsched tests benchmarks simulations
	$(VENV)/bin/mypy epcsched
	$(VENV)/bin/hadolint Dockerfile

format: install-test
	$(VENV)/bin/ruff format epcsched tests benchmarks simulations
	$(VENV)/bin/ruff check --fix epcsched tests benchmarks simulations

test: install-test system-deps lint
	$(VENV)/bin/pytest -q

demo: install
	$(PY) -m epcsched.demo

bench: install-test
	$(PY) benchmarks/extender.py
	$(PY) benchmarks/scheduling_loop.py
	$(PY) benchmarks/extender_logging.py
	$(PY) benchmarks/informer.py
	$(PY) benchmarks/simulation.py
	$(PY) benchmarks/autoscaler.py
	$(PY) benchmarks/metrics_api.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
