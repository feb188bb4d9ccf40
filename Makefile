# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Airflow in a venv of its own (its pins clash with MLflow's): tests/test_recipes.py loads the DAG
# recipe into a real DagBag with it.
AIRFLOW := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW)/.installed

.PHONY: demo test lint install clean bench lab kernel

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

$(AIRFLOW_STAMP): $(STAMP)
	$(BIN)/uv venv --quiet --allow-existing --python $(PYTHON) $(AIRFLOW)
	VIRTUAL_ENV=$(AIRFLOW) $(BIN)/uv pip install --quiet 'apache-airflow>=2.10,<4'
	@touch $(AIRFLOW_STAMP)

demo: $(STAMP)
	$(BIN)/loopexp demo

# JupyterLab (from the dev extras, or `pip install 'loopexp[lab]'`) on the notebooks; its "Python 3"
# kernel is this venv's Python. Files the notebooks write go to notebooks/runs/ (ignored by git).
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Registers this venv as the kernel "Python 3.11 (loopexp)" for a JupyterLab installed elsewhere.
kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name loopexp --display-name "Python 3.11 (loopexp)"

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint $(AIRFLOW_STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_metrics.py

clean:
	rm -rf $(VENV) $(AIRFLOW) runs notebooks/runs mlflow.db mlartifacts .pytest_cache test-artifacts build dist
