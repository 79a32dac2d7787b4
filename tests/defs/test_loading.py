"""Loading the code location: importing it reads no setting and no policy rule, and what it
loads stays light (the ML libraries load in the bodies that use them)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from churn_assets.policy import rules
from churn_assets.settings import SETTINGS

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

# Imports churn_assets.definitions and every module of churn_assets/defs (what loading the
# code location imports), without calling any definitions function.
_IMPORT_EVERY_DEFS_MODULE = """
import importlib, pkgutil
import churn_assets.defs, churn_assets.definitions
for module in pkgutil.walk_packages(churn_assets.defs.__path__, "churn_assets.defs."):
    importlib.import_module(module.name)
"""

# The variables load_settings can refuse (a free path, target or URI has no wrong value),
# each set to a value it refuses.
_BROKEN_SETTINGS = {
    "CHURN_PERIOD": "fortnight",
    "CHURN_AS_OF": "yesterday",
    "CHURN_WINDOW_DAYS": "ninety",
    "CHURN_SENSOR_INTERVAL_SECONDS": "abc",
    "CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS": "abc",
    "CHURN_ALERT_WEBHOOK_URL": "not a url",
    "CHURN_UI_URL": "not a url",
    "CHURN_CANARY_PERCENT": "abc",
}


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (a fresh import), with ``env``."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, **env},
    )


def test_importing_the_code_reads_no_setting_and_no_policy_rule() -> None:
    # Regression (issue 25 item 4): seven sensors read CHURN_SENSOR_INTERVAL_SECONDS and the
    # scores' freshness check CHURN_SCORES_FRESHNESS_GRACE_HOURS at import, so a bad value
    # failed every import of the package's Dagster modules, and a value could not change
    # within one process (nor per run, for the grace).
    assert set(_BROKEN_SETTINGS) <= {setting.env for setting in SETTINGS}
    broken = {**_BROKEN_SETTINGS, **{rule.env: "abc" for rule in rules()}}
    # then the values are read when the definitions are built, and refused by name
    code = _IMPORT_EVERY_DEFS_MODULE + (
        "print('imported', flush=True)\n"
        "try:\n"
        "    churn_assets.definitions.defs()\n"
        "except Exception as exc:\n"  # Dagster wraps it: the innermost cause
        "    while exc.__cause__ is not None:\n"
        "        exc = exc.__cause__\n"
        "    print(f'refused: {type(exc).__name__}: {exc}')\n"
    )
    run = _python(code, broken)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "imported"
    refused = run.stdout.splitlines()[-1]
    assert refused.startswith(("refused: SettingsError: CHURN_", "refused: PolicyError: CHURN_"))


def test_loading_the_definitions_imports_no_ml_library() -> None:
    code = (
        "import sys, churn_assets.definitions as d; d.defs(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    run = _python(code, {})
    assert run.returncode == 0, run.stderr
    loaded = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert loaded == [], (
        f"`import churn_assets.definitions; defs()` imported {loaded}: every Dagster run is a "
        "new process that loads the code location (an ingest or dbt run too), so each of these "
        "costs seconds per run. Import them inside the asset/check/sensor body that uses them "
        "(and under `if TYPE_CHECKING:` for annotations)."
    )
