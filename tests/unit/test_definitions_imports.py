"""Loading the code location stays light: the ML libraries load in the bodies that use them."""

from __future__ import annotations

import ast
import subprocess
import sys

# Seconds of imports between them (torch and mlflow about a second each, sklearn, scipy and
# matplotlib through the promotion and evaluation code).
HEAVY = (
    "great_expectations",
    "matplotlib",
    "mlflow",
    "onnx",
    "onnxruntime",
    "scipy",
    "sklearn",
    "torch",
)


def test_loading_the_definitions_imports_no_ml_library() -> None:
    code = (
        "import sys, churn_assets.definitions as d; d.defs(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert run.returncode == 0, run.stderr
    loaded = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert loaded == [], (
        f"`import churn_assets.definitions; defs()` imported {loaded}: every Dagster run is a "
        "new process that loads the code location (an ingest or dbt run too), so each of these "
        "costs seconds per run. Import them inside the asset/check/sensor body that uses them "
        "(and under `if TYPE_CHECKING:` for annotations)."
    )


def test_the_status_report_loads_without_dagster() -> None:
    # `churn status` (and anything else that reads the report) should not pay Dagster's
    # import: the report is the registry and two warehouse queries.
    code = "import sys, churn_assets.status; print('dagster' in sys.modules)"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False", "churn_assets.status imported dagster"
