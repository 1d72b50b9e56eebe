# streamcast — `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

export TF_CPP_MIN_LOG_LEVEL ?= 3
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install run test lint format bench clean browser stack stop mlflow-ui

$(PY):
	$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

# pip's and the build backend's notices go to a log, shown only if the install fails.
$(STAMP): pyproject.toml | $(PY)
	@echo "installing streamcast and its dependencies into $(VENV) (a few minutes the first time)"
	@$(PY) -m pip install --quiet -e '.[all,dev]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# The pipeline flow once, end to end, on the bundled data (Prefect's local mode).
run: $(STAMP)
	@mkdir -p $${PREFECT_HOME:-$(CURDIR)/data/prefect}  # Prefect makes its home without parents: a removed data/ would stop it
	PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/data/prefect} PREFECT_LOGGING_LEVEL=$${PREFECT_LOGGING_LEVEL:-INFO} \
		$(PY) -m flows.pipeline_flow --source nyc-weather $(RUN_ARGS)

# Prefect server, MLflow UI and a process worker on 127.0.0.1 (scripts/stack.sh).
stack: $(STAMP)
	scripts/stack.sh start

stop:
	scripts/stack.sh stop

mlflow-ui: $(STAMP)
	@scripts/stack.sh free-port $${MLFLOW_PORT:-5000} "the MLflow UI" MLFLOW_PORT
	$(VENV)/bin/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/data/mlflow.db} \
		--host 127.0.0.1 --port $${MLFLOW_PORT:-5000}

# The dashboard test drives Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the dashboard test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser
	$(PY) -m pytest -n $${PYTEST_WORKERS:-2} --dist loadfile

# mypy names modules after their folders: a link lets it check pipeline/ as the package
# `streamcast` it is installed as (its editable install is an import hook mypy cannot follow).
lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline flows tests bench examples
	$(VENV)/bin/ruff format --check pipeline flows tests bench examples
	@mkdir -p $(VENV)/typecheck && ln -sfn $(CURDIR)/pipeline $(VENV)/typecheck/streamcast
	MYPYPATH=$(VENV)/typecheck $(VENV)/bin/mypy -p streamcast
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format pipeline flows tests bench examples
	$(VENV)/bin/ruff check --fix pipeline flows tests bench examples

# The quick benches (a few minutes each); `$(PY) bench/accuracy.py` takes about an hour.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[all,dev,bench]'
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	cd bench && ../$(PY) ingest.py && ../$(PY) serve.py && ../$(PY) stream.py && ../$(PY) memory.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
