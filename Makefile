# Quick start: `make demo`, `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install install-test system-deps test lint format demo bench mutation clean

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

$(VENV)/.mutation: $(VENV)/.test
	$(PIP) install --quiet -e '.[test,mutation]'
	touch $@

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
	$(PY) benchmarks/extender_memory.py
	$(PY) benchmarks/informer.py
	$(PY) benchmarks/simulation.py
	$(PY) benchmarks/autoscaler.py
	$(PY) benchmarks/metrics_api.py

# Mutation testing of the core, the bound and the extender's wire/service code (slow; not part
# of `make test`): measures HEAD in /tmp/mut-work and writes benchmarks/mutation/REPORT.md.
# ONLY=score.py runs one file; SEEDS=10 (with SAMPLE=60) measures the property tests under ten
# hypothesis seeds; WORKERS=2 runs two mutants at a time; RESUME=1 goes on after an interruption.
mutation: $(VENV)/.mutation
	$(PY) benchmarks/mutation.py --workers $(or $(WORKERS),1) $(if $(ONLY),--only $(ONLY)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(SAMPLE),--sample $(SAMPLE)) $(if $(RESUME),--resume)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
