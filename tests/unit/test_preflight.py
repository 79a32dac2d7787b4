"""What is refused before anything starts: one line, no warehouse started, nothing written.

Regressions (issue 24): a bad policy value ended after 32-37 s and 105-243 lines of Dagster
loading tracebacks; ``CHURN_AS_OF=2025-03-15`` reloaded and rebuilt everything, then failed
after 110 s; ``CHURN_WINDOW_DAYS=100000`` trained on stale labels and promoted the result;
a one-day delivery retired the whole history; a delivery missing half its customers loaded
silently; an in-time AUC was printed as "out of time".
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from churn_assets import periods
from churn_assets.app.cli import main
from churn_assets.app.status import describe_model
from churn_assets.data.delivery import DeliveryRefused, check_customer_count
from churn_assets.lib.report import auc_line
from churn_assets.periods import Period, PeriodError
from churn_assets.policy import Policy, PolicyError
from churn_assets.settings import SettingsError, load_settings
from tests.raw_files import write_csv_delivery


@pytest.fixture
def empty_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A CHURN_HOME nothing has used: a refusal must leave it without a warehouse."""
    home = tmp_path / "home"
    monkeypatch.setenv("CHURN_HOME", str(home))
    return home


def _two_months_of_orders(raw_dir: Path) -> None:
    write_csv_delivery(
        raw_dir,
        ["c1,2025-01-01,a@b.io"],
        ["o1,c1,2025-01-05,12.5,1,books", "o2,c1,2025-03-02,3,2,toys"],
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CHURN_MIN_AUC", "2", "CHURN_MIN_AUC=2.0: min_auc must be between 0.0 and 1.0"),
        ("CHURN_MIN_AUC", "abc", "CHURN_MIN_AUC='abc' is not a number"),
        ("CHURN_MIN_AUC", "nan", "CHURN_MIN_AUC=nan: min_auc must be between"),
        ("CHURN_TRAINING_PERIODS", "0", "CHURN_TRAINING_PERIODS=0: training_periods must be"),
        ("CHURN_AS_OF", "2025-03-15", "CHURN_AS_OF=2025-03-15 is not a month end"),
    ],
)
def test_churn_run_refuses_a_bad_setting_in_one_line_before_starting_anything(
    empty_home: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert says in result.output
    assert not empty_home.exists()


def test_a_window_that_labels_no_period_stops_churn_run_before_the_warehouse_starts(
    empty_home: Path, churn_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_months_of_orders(churn_env)
    monkeypatch.setenv("CHURN_WINDOW_DAYS", "100000")
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert "no period is labelled with a 100000-day window (CHURN_WINDOW_DAYS)" in result.output
    assert "the first period (2025-01-31) needs a window of at most 30 days" in result.output
    assert not (empty_home / "pg").exists()


def test_as_of_must_be_a_period_end_of_the_configured_period() -> None:
    with pytest.raises(SettingsError, match="nearest are 2025-03-09 and 2025-03-16"):
        load_settings({"CHURN_AS_OF": "2025-03-15", "CHURN_PERIOD": "week"})
    assert load_settings({"CHURN_AS_OF": "2025-03-16", "CHURN_PERIOD": "week"}).as_of == date(
        2025, 3, 16
    )
    assert load_settings({"CHURN_AS_OF": "2025-02-28"}).as_of == date(2025, 2, 28)


def test_a_history_without_a_whole_period_is_refused() -> None:
    day = date(2025, 6, 15)
    with pytest.raises(PeriodError, match="2025-06-15 to 2025-06-15: not one whole month"):
        periods.whole_periods(day, day, Period.MONTH)
    assert periods.whole_periods(day, date(2025, 7, 1), Period.MONTH) == [date(2025, 6, 30)]


def test_a_pinned_holdout_must_be_labelled_with_this_window() -> None:
    first, last = date(2025, 1, 3), date(2025, 12, 29)
    with pytest.raises(PeriodError, match="CHURN_AS_OF=2025-11-30 is not a labelled period"):
        periods.trainable_periods(first, last, Period.MONTH, 90, date(2025, 11, 30))
    labelled = periods.trainable_periods(first, last, Period.MONTH, 90, date(2025, 9, 30))
    assert labelled[-1] == date(2025, 9, 30)


def test_customer_count_drop_refuses_above_the_policy_share_and_warns_above_the_other() -> None:
    policy = Policy()  # warns above 5%, refuses above 20%
    with pytest.raises(DeliveryRefused, match=r"has 500 customers, 50\.0% fewer than the 1,000"):
        check_customer_count(1000, 500, policy)
    warned = check_customer_count(1000, 900, policy)
    assert warned.warns and warned.drop_share == pytest.approx(0.1)
    assert not check_customer_count(1000, 990, policy).warns
    assert not check_customer_count(1000, 2000, policy).warns  # growth is no drop
    assert not check_customer_count(None, 10, policy).warns  # a first load
    check_customer_count(1000, 1, Policy(max_customer_drop=1.0))  # 1 never refuses


def test_the_customer_drop_warning_cannot_be_above_the_refusal() -> None:
    with pytest.raises(PolicyError, match="CHURN_WARN_CUSTOMER_DROP"):
        Policy(warn_customer_drop=0.5, max_customer_drop=0.2)


def test_an_in_time_auc_is_never_called_out_of_time() -> None:
    in_time = {"roc_auc": 0.776, "in_time_auc": 0.776, "evaluation": "in time"}
    assert "out of time" not in auc_line(in_time).replace("out-of-time holdout", "")
    assert auc_line(in_time).startswith("0.776 in time only")
    out_of_time = {
        "roc_auc": 0.785,
        "in_time_auc": 0.757,
        "holdout_as_of": "2025-09-30",
        "evaluation": "out of time",
    }
    assert auc_line(out_of_time) == "0.785 out of time (holdout 2025-09-30), 0.757 in time"
    model = {
        "version": "3",
        "metrics": {"auc": 0.776, "pr_auc": None, "brier": None},
        "oracle_auc": None,
        "holdout_as_of": None,
        "onnx_parity_max_abs_diff": None,
        "data_as_of": "2025-06-30",
        "trained_at": "2026-01-01",
    }
    assert "AUC 0.776, in time," in describe_model(model)
