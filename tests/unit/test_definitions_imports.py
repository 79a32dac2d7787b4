"""What reads the status report stays light: no Dagster. (Loading the code location stays
light too: tests/defs/test_loading.py, which loads the dbt assets.)"""

from __future__ import annotations

import subprocess
import sys


def test_the_status_report_loads_without_dagster() -> None:
    # `churn status` (and anything else that reads the report) should not pay Dagster's
    # import: the report is the registry and two warehouse queries.
    code = "import sys, churn_assets.app.status; print('dagster' in sys.modules)"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False", (
        "churn_assets.app.status imported dagster"
    )
