# Research-to-production toolkit. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL := desk-toolkit
# test processes in parallel (pytest-xdist, whole files per worker): one per core, at most 2 by default
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 2 ] && n=2; echo $$n)
export PYTHONHASHSEED := 0

.DEFAULT_GOAL := help
.PHONY: help install demo test test-slow lint typecheck lab bench clean registry-up registry-down

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Desk toolkit (.venv)" >/dev/null
	@echo "compiling the sweep kernels once (numba's on-disk cache; later runs load them)"
	$(PY) -c "from toolkit.backtest.fused_path import warm; warm()"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned environment and its Jupyter kernel

demo: $(STAMP) ## Run the main job on the bundled data with the local sqlite MLflow
	$(VENV)/bin/toolkit demo

test: $(STAMP) ## Run the test suite (everything but the slow marker), one worker per core
	$(PY) -m pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP) ## Run everything, the slow marker too (full-size computations, soak)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP) ## ruff on the code
	$(VENV)/bin/ruff check toolkit runner tests bench

typecheck: $(STAMP) ## mypy on toolkit/ and runner/
	$(VENV)/bin/mypy toolkit runner

registry-up: $(STAMP) ## Start PostgreSQL + mlflow server on loopback (AUTH=1: basic-auth); print MLFLOW_TRACKING_URI=...
	@$(VENV)/bin/toolkit registry up $(if $(AUTH),--auth)

registry-down: $(STAMP) ## Stop what registry-up started (checks that no process or port is left)
	@$(VENV)/bin/toolkit registry down

lab: $(STAMP) ## Start JupyterLab on the project's environment
	$(VENV)/bin/jupyter lab --notebook-dir=. --MultiKernelManager.default_kernel_name=$(KERNEL)

bench: $(STAMP) ## Run the benchmarks under bench/ (results in bench/results/, quoted in the README)
	$(PY) bench/bench_sweep.py
	$(PY) bench/bench_gates.py
	$(PY) bench/bench_emulator.py
	$(PY) bench/bench_data.py
	$(PY) bench/bench_template.py
	$(PY) bench/bench_cluster.py
	$(PY) bench/bench_runner.py
	$(PY) bench/bench_crash.py

clean: ## Remove generated reports and the local MLflow store (keeps .venv)
	rm -rf reports mlflow/server mlflow/mlflow.db mlflow/artifacts mlflow/trials.db mlflow/audit.db mlflow/audit.db.lock
