"""Bring-your-own data that is not the demo: a one-off retailer runs with the defaults.

Regression (issue 11): a real retail history (most customers buy once, 70%+ churn) stopped
at the GX label-rate bound [0.02, 0.60], a literal fitted to the demo.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from churn_assets.app.cli import main
from churn_assets.data.contract import read_raw_tables
from churn_assets.data.profile import label_counts
from churn_assets.infra import warehouse

pytestmark = pytest.mark.integration

PROFILE_KEYS = {
    "customers",
    "orders",
    "first_order_at",
    "last_order_at",
    "repeat_customer_share",
    "median_days_between_orders",
    "suggested_window_days",
    "suggested_as_of",
    "label_rate_at_suggested_as_of",
    "warnings",
}


def _profile(raw_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("CHURN_RAW_DIR", str(raw_dir))
    result = CliRunner().invoke(main, ["profile", "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.output)
    return report


def test_profile_on_the_demo_data_prints_the_documented_keys(
    demo: tuple[Result, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = _profile(demo[1], monkeypatch)
    assert set(report) >= PROFILE_KEYS
    assert report["customers"] == 1000
    assert not any("ordered once" in str(w) for w in report["warnings"])  # type: ignore[attr-defined]


def test_profile_labels_agree_with_the_dbt_labels_on_the_demo(
    demo: tuple[Result, Path], embedded_url: str
) -> None:
    # The profile re-implements the label rule in pandas; it must match dbt's exactly.
    with warehouse.connect(embedded_url) as conn, conn.cursor() as cur:
        cur.execute(
            "select as_of, count(*), sum(churned) from marts.training_snapshot "
            "where as_of = (select max(as_of) from marts.training_snapshot) group by as_of"
        )
        as_of, labelled, churned = cur.fetchone()
    orders = read_raw_tables(demo[1]).orders
    assert isinstance(as_of, date)
    assert label_counts(orders, as_of, 90) == (labelled, churned)


@pytest.mark.slow
def test_a_retail_history_runs_end_to_end_with_the_default_policy(
    tmp_path: Path, fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw_dir = tmp_path / "retail"
    generated = CliRunner().invoke(main, ["generate", "--profile", "retail", "--out", str(raw_dir)])
    assert generated.exit_code == 0, generated.output
    report = _profile(raw_dir, monkeypatch)
    assert any("most customers ordered once" in str(w) for w in report["warnings"])  # type: ignore[attr-defined]

    # Its own warehouse database and MLflow store: the session's demo champion stays put.
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", fresh_database_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = CliRunner().invoke(main, ["run"])  # no other setting

    assert result.exit_code == 0, result.output[-3000:]
    # ~70%+ churn over the training periods, which the old bound (0.60) refused
    rate = re.search(r"training: .*\(label rate (\d+\.\d)%\)", result.output)
    assert rate is not None and float(rate.group(1)) > 60, result.output[-2000:]
    status = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    latest = status["latest_model"]
    assert latest is not None and latest["version"] == "1"
    assert all(gate["passed"] for gate in latest["gates"].values())
    assert isinstance(latest["metrics"]["reference_auc"], float)
