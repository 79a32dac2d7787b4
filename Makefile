# The two commands the README starts with: `make demo` and `make test`.
# Both create or reuse .venv and install only when pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SPARK_STAMP := $(VENV)/.installed-spark-stamp
# Offline machines: no analytics pings from Great Expectations or dbt.
export GX_ANALYTICS_ENABLED := false
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: install demo test lint dev clean

install: $(STAMP)

# torch first, pinned: an unpinned torch (asked for by the project) pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Spark engine's extra (pyspark, dbt-spark: ~350 MB): the tests need it, the demo not.
$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(SPARK_STAMP)

demo: install
	$(BIN)/churn demo

# Two workers, one work unit each at a time: a test module (its module fixtures are built
# once), or every test on the session demo together (the demo runs once). The story under
# the daemon starts on one worker, the demo's unit on the other, the rest fills in (the
# units and their order: tests/conftest.py).
test: $(SPARK_STAMP)
	$(BIN)/pytest -n 2 --dist loadscope --no-loadscope-reorder

lint: install
	$(BIN)/ruff check churn_assets tests benchmarks
	$(BIN)/ruff format --check churn_assets tests benchmarks
	$(BIN)/mypy

dev: install
	$(BIN)/churn dev

clean:
	-$(BIN)/churn warehouse-stop
	rm -rf .churn dbt_project/target dbt_project/logs
