# Two commands do all the set-up on a fresh machine with Python 3.11, make and git:
#   make demo   - environment, demo data, the whole asset graph through Dagster, a summary
#   make test   - environment and the whole test suite
# make demo DATA=taobao|ga-merch|online-retail|amazon-reviews runs a real public sample (../shared/datasets) instead, in its own
# home data/<DATA>; `make ui DATA=...` then opens that home.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# dbt and dagster run as subprocesses of each other: they must find the venv's executables
export PATH := $(abspath $(BIN)):$(PATH)
DATA ?= generated
# make demo ENGINE=spark builds the dbt project on a local Apache Spark session (the spark extra, installed then;
# docs/scale_out.md), in a home of its own: a home runs on one engine
ENGINE ?=
ifeq ($(DATA),generated)
export SHOPCAST_HOME ?= $(CURDIR)/data$(if $(filter spark,$(ENGINE)),/spark-demo)
else
export SHOPCAST_HOME ?= $(CURDIR)/data/$(DATA)$(if $(filter spark,$(ENGINE)),-spark)
endif
ifneq ($(ENGINE),)
export SHOPCAST_ENGINE := $(ENGINE)
endif
export DBT_SEND_ANONYMOUS_USAGE_STATS := False
export GX_ANALYTICS_ENABLED := False
export MLFLOW_DISABLE_TELEMETRY := true
EVENTS ?= 300000
PYTEST_ARGS ?=

.PHONY: install install-deep install-spark manifest demo test test-fast ui mlflow-ui validate lint bench bench-scale bench-recommendations-scale bench-sequences-scale bench-engines clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==0.13.8

$(VENV)/.installed: $(BIN)/uv requirements.lock pyproject.toml
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode --no-deps -e .
	touch $@

# The `deep` extra (PyTorch, for the sequence models), by `make demo DEEP=1` and always by the tests. A CPU build:
# from TORCH_WHEELS where a folder of wheels holds one (this machine's pip finds it in $PIP_FIND_LINKS), else PyPI's.
DEEP ?=
ifneq ($(DEEP),)
# the sequence family is opt-in (docs/sequences.md): DEEP=1 names it beside every other family
export SHOPCAST_MODEL_FAMILIES ?= logistic_regression,decision_tree,random_forest,linear_svm,neural_network,gradient_boosting,gru
endif
TORCH_WHEELS ?= $(PIP_FIND_LINKS)
$(VENV)/.installed-deep: $(VENV)/.installed requirements-deep.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -c requirements-deep.lock \
		$(if $(TORCH_WHEELS),--find-links $(TORCH_WHEELS)) -e '.[deep]'
	touch $@

# The `spark` extra (pyspark, dbt-spark): the dbt project on Apache Spark (docs/scale_out.md). Not in the default
# install; `make test` installs it (tests/test_spark.py; skipped, saying so, where Java is missing).
$(VENV)/.installed-spark: $(VENV)/.installed requirements-spark.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -c requirements-spark.lock -e '.[spark]'
	touch $@

install-spark: $(VENV)/.installed-spark

# Great Expectations' Data Docs load their scripts and styles from CDNs: the same files from the npm registry, once,
# so that the pages render offline (expectations/data_docs.py)
DATA_DOCS_ASSETS := expectations/vendor/.fetched
$(DATA_DOCS_ASSETS): $(VENV)/.installed expectations/data_docs.py
	$(BIN)/python -m expectations.data_docs
	touch $@

install: $(VENV)/.installed $(DATA_DOCS_ASSETS) $(if $(DEEP),$(VENV)/.installed-deep) \
	$(if $(filter spark,$(ENGINE)),$(VENV)/.installed-spark)

install-deep: $(VENV)/.installed-deep

# The dbt manifest Dagster loads its dbt assets from (never committed; rebuilt when models change).
manifest: install
	$(BIN)/dagster-dbt project prepare-and-package --file dagster_project/dbt_project.py > /dev/null

demo: manifest
ifeq ($(DATA),generated)
	$(BIN)/shopcast generate --events $(EVENTS)
	$(BIN)/shopcast ingest $(SHOPCAST_HOME)/landing/canonical
	$(BIN)/shopcast run
else
	$(BIN)/shopcast sample $(DATA)
endif
	$(BIN)/shopcast status

# Tests run on both cores (pytest-xdist), heaviest first (tests/conftest.py): loadgroup hands out one test at a time
# as a worker frees up, and a module marked with an xdist_group whole (its module fixture is then built once);
# --no-loadscope-reorder keeps that order instead of putting the groups first.
# The project's own modules are compiled first: where PYTHONDONTWRITEBYTECODE is set (as on CI machines), every
# process the tests start would compile them again (the venv's packages are compiled by the install).
TEST_WORKERS ?= 2
test: manifest install-deep install-spark
	$(BIN)/python -m compileall -q dagster_project ml expectations tests > /dev/null
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

# The base of the pyramid (a few minutes): Python unit tests, dbt unit tests on an empty warehouse, the CLI on small
# files; no whole-graph build (those are marked slow and run with `make test`).
test-fast: manifest install-deep install-spark
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

validate: manifest
	$(BIN)/dagster definitions validate -w workspace.yaml

# The UIs start through the CLI, which gives them the home's Dagster instance and MLflow store (shopcast config --env)
# PORT=... serves on another port than 3000 (ui) or the setting mlflow_ui_url's (mlflow-ui). No manifest step: under
# `dagster dev` the project parses dbt itself (dagster_project/dbt_project.py, prepare_if_dev), 20 s saved a start
ui: install
	$(BIN)/shopcast ui $(if $(PORT),--port $(PORT))

mlflow-ui: install
	$(BIN)/shopcast mlflow-ui $(if $(PORT),--port $(PORT))

lint: install
	$(BIN)/ruff check dagster_project ml expectations tests benchmarks

bench: manifest
	$(BIN)/python benchmarks/foundation.py

# The whole graph at 1M, 10M and 100M events against the DuckDB floor and a pandas peer (hours at 100M; state in
# SHOPCAST_BENCH_DIR, default /tmp/shopcast-bench): benchmarks/results/scale.md
bench-scale: manifest
	$(BIN)/python benchmarks/scale.py $(if $(SIZES),--sizes $(SIZES))

# The recommendations' training and top-10 for 1M users at 1M, 10M and 100M events (the same generated events):
# a section of benchmarks/results/scale.md
bench-recommendations-scale: manifest
	$(BIN)/python benchmarks/recommendations_scale.py $(if $(SIZES),--sizes $(SIZES))

# The GRU's training within the purchase target's budget and its scoring of 1M users' sequences at 10M events
# (needs the deep extra): a section of benchmarks/results/scale.md
bench-sequences-scale: manifest
	$(BIN)/python benchmarks/sequences_scale.py

# The marts on DuckDB and on a local Spark session (needs the spark extra) at 1M and 10M events:
# benchmarks/results/engines.md
bench-engines: manifest $(VENV)/.installed-spark
	$(BIN)/python benchmarks/engines.py $(if $(SIZES),--sizes $(SIZES))

clean:
	rm -rf $(SHOPCAST_HOME) dbt/target dbt/logs
