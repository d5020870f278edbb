# adroi: every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
RUN_ARGS ?=
# Headless Chromium for the page's browser tests: Debian's package, driven by Playwright (which never
# downloads a browser of its own). CI runs as root; elsewhere apt-get goes through sudo.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run train serve schema test test-fast lint bench-train bench-serve bench-model bench-allocate bench-bigquery airflow-venvs clean

$(STAMP): requirements.txt requirements-train.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

## make run: train on the bundled sample into .local/, print the summary, then serve the model it published.
run: train serve

train: $(STAMP)
	$(BIN)/python -m training run $(RUN_ARGS); code=$$?; [ $$code -eq 0 ] || [ $$code -eq 3 ] || exit $$code

serve: $(STAMP)
	@echo "Serving .local/store on http://127.0.0.1:$(PORT)  (Ctrl-C to stop). Try:"
	@echo "  curl -s -X POST http://127.0.0.1:$(PORT)/predict -H 'Content-Type: application/json' \\"
	@echo "       -d '{\"SEARCH_ENGINE\": 80000, \"SOCIAL_MEDIA\": 230000, \"VIDEO\": 130000, \"EMAIL\": 95000}'"
	MODEL_STORE=.local/store PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py 'app:create_app()'

## make test: the whole suite (API, training, emulators, Airflow 2 and 3 DAG runs, infrastructure checks).
test: $(STAMP) $(CHROMIUM) airflow-venvs .venv-checkov/.installed
	$(BIN)/python -m pytest

test-fast: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -m "not airflow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench-train: $(STAMP)
	$(BIN)/python bench/bench_train.py

bench-serve: $(STAMP)
	$(BIN)/python bench/bench_serve.py

bench-model: $(STAMP)
	$(BIN)/python bench/bench_model.py

## make bench-allocate: budget allocation latency (p50/p99) and its gap to scipy's optimum on random curves.
bench-allocate: $(STAMP)
	$(BIN)/python bench/bench_allocate.py

## make bench-bigquery [BENCH_ROWS=10000000]: train from bqemulator and from the same rows as CSV, at N/10 and N.
BENCH_ROWS ?= 10000000
bench-bigquery: $(STAMP)
	$(BIN)/python bench/bench_bigquery.py --rows $(BENCH_ROWS)

airflow-venvs: .venv-airflow2/.installed .venv-airflow3/.installed

.venv-airflow%/.installed: requirements-airflow%.txt requirements-train.txt
	test -x .venv-airflow$*/bin/python || $(PYTHON) -m venv .venv-airflow$*
	.venv-airflow$*/bin/pip install --quiet --disable-pip-version-check -r requirements-airflow$*.txt
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

## checkov (Terraform scanner) has pins of its own: it lives in its own virtualenv.
.venv-checkov/.installed:
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --disable-pip-version-check checkov==3.3.30
	touch $@

schema: $(STAMP)
	$(BIN)/python -m training.metrics export-schema

clean:
	rm -rf .local .bench
