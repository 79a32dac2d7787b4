"""A failure's last line names its cause: a full disk is said in plain words.

Regression (issue 24): with the warehouse's disk full, `churn run` ended with "dbt build
failed; nothing downstream was rebuilt. / see the failed checks and the dbt log", the
"No space left on device" buried in dbt's output above.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from churn_assets.lib import report
from churn_assets.lib.dbt import dbt_failure_lines

# What dbt 1.11 wrote to run_results.json when Postgres ran out of disk (seen on a tmpfs).
_ENOSPC = (
    "Database Error in model churn_labels (models/marts/churn_labels.sql)\n"
    '  could not extend file "base/16384/16497": No space left on device\n'
    "  HINT:  Check free disk space.\n"
    "  compiled code at target/run/churn/models/marts/churn_labels.sql"
)


def _results(*results: dict[str, Any]) -> dict[str, Any]:
    return {"results": list(results)}


def test_each_errored_node_gives_one_line_with_the_databases_own_words() -> None:
    lines = dbt_failure_lines(
        _results(
            {"unique_id": "model.churn.customer_features", "status": "success", "message": ""},
            {"unique_id": "model.churn.churn_labels", "status": "error", "message": _ENOSPC},
            {"unique_id": "test.churn.not_null_x", "status": "fail", "message": "Got 3 results"},
            {"unique_id": "model.churn.training_snapshot", "status": "skipped", "message": None},
        ),
        "The dbt CLI process failed with exit code `1`.",
    )
    assert lines == [
        "churn_labels: Database Error in model churn_labels (models/marts/churn_labels.sql) "
        'could not extend file "base/16384/16497": No space left on device HINT:  Check free '
        "disk space. compiled code at target/run/churn/models/marts/churn_labels.sql"
    ]


def test_without_run_results_dbts_own_error_stands_in() -> None:
    error = "The dbt CLI process failed.\n\nErrors parsed:\n\n[Errno 28] No space left on device"
    assert dbt_failure_lines(None, error)[-1] == "[Errno 28] No space left on device"
    assert dbt_failure_lines(None, None) == []


def test_a_cause_saying_no_space_left_gets_the_disk_full_line() -> None:
    line = report.disk_full_line(f"dbt build failed\nchurn_labels: {_ENOSPC}", None)
    assert line is not None and line.startswith("the disk is full: free space where")


def test_a_nearly_full_home_is_named_with_its_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite (Dagster's own storage) says only "disk I/O error" when the disk is full."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(report.shutil, "disk_usage", lambda _: usage._replace(free=2**20))
    assert report.disk_full_line("disk I/O error", tmp_path) == (
        f"the disk is full ({tmp_path} has 1.0 MB free): free space where the warehouse "
        "keeps its data and under CHURN_HOME, then run again"
    )


def test_other_failures_with_room_on_disk_get_no_disk_line(tmp_path: Path) -> None:
    assert shutil.disk_usage(tmp_path).free > report.LOW_DISK_BYTES  # this machine's disk
    assert report.disk_full_line("dbt build failed\nsee the failed checks", tmp_path) is None
