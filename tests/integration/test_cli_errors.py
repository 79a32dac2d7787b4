"""What `churn` prints when something is wrong: one readable ending, never a traceback.

Regressions (issue 10.7): the last line of a failed `churn run` was "step raw_tables
failed:" with the violations only in the log above; a corrupt `mlflow.db`, an unusable
CHURN_HOME and a busy warehouse each ended in a stack trace or said nothing useful.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from churn_assets.app.cli import main
from churn_assets.infra import warehouse
from tests.raw_files import write_csv_delivery
from tests.webhook import Receiver

pytestmark = pytest.mark.integration


def _write_bad_raw_files(raw_dir: Path) -> None:
    write_csv_delivery(
        raw_dir,
        ["c1,2024-01-01,a@b.io"],
        ["o1,c1,2024-01-05,-4.5,1,books", "o2,c9,2024-06-06,3,1,books"],
    )


def test_run_ends_with_every_contract_violation(
    churn_env: Path, embedded_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_bad_raw_files(churn_env)
    monkeypatch.setenv("CHURN_ALERT_WEBHOOK_URL", receiver.url)
    result = CliRunner().invoke(main, ["run"])
    # No daemon ticks the alert sensor: the command itself alerted before it exited.
    (alert,) = receiver.requests
    assert alert["kind"] == "run_failure" and alert["job"] == "churn_pipeline"
    assert alert["run_id"] in result.output
    assert result.exit_code == 1
    last = result.output.rstrip().splitlines()[-4:]
    assert last[0].startswith("Error: run ") and "failed at step raw_tables" in last[0]
    assert last[1] == "raw data breaks the contract (2 violation(s)); nothing was loaded:"
    assert last[2].startswith("  - orders.csv: column 'amount' breaks rule 'amount >= 0'")
    assert last[3].startswith("  - orders.csv: column 'customer_id' breaks rule 'exists in")
    assert "Traceback" not in result.output[result.output.rindex("Error: run ") :]


def test_run_while_another_run_writes_names_that_run(
    churn_env: Path, embedded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_bad_raw_files(churn_env)  # only the dates are read: the run stops before a step
    monkeypatch.setenv("CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS", "0")
    with warehouse.write_lock(embedded_url, "run 1234-abcd (churn_pipeline)", 0):
        result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 1
    ending = result.output[result.output.rindex("Error: run ") :]
    assert "is being written by run 1234-abcd (churn_pipeline)" in ending
    assert "Run again when it has finished" in ending


def test_a_corrupt_mlflow_store_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_HOME", str(tmp_path))
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").write_text("not a database")
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert "is not a readable SQLite database" in result.output
    assert "move it aside to start an empty registry" in result.output


def test_an_unusable_churn_home_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A regular file where CHURN_HOME's directory should be: the same OSError path as a
    # read-only home (which chmod cannot simulate when the tests run as root).
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "file" / "home"))
    result = CliRunner().invoke(main, ["warehouse-url"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert f"cannot write or read {tmp_path / 'file' / 'home'}: Not a directory" in result.output
    assert "CHURN_HOME must be a writable directory" in result.output


def test_a_delivery_outside_the_drift_story_stops_before_anything_starts(
    churn_home: Path,
) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--scenario", "drift", "--deliver", "2025-12-15"], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert "Invalid value for --deliver: 2025-12-15: not a month end of the story" in result.output
    assert "(2025-11-30 .. 2026-03-31)" in result.output
    assert not (churn_home / "scenario").exists()  # no feed written, no run launched
    baseline = CliRunner().invoke(main, ["demo", "--deliver", "2025-12-31"])
    assert baseline.exit_code == 2
    assert "--deliver applies to --scenario drift only" in baseline.output
