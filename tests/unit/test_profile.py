"""`churn profile`'s numbers, worked by hand on small order histories, and the command."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from churn_assets.app.cli import main
from churn_assets.data.contract import RawTables
from churn_assets.data.profile import label_counts, profile_raw_tables, suggest_window
from churn_assets.policy import Policy

DOCUMENTED_KEYS = {
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
EXTRA_KEYS = {"labelled_customers_at_suggested_as_of", "window_reasoning"}


def _tables(orders: list[tuple[str, str]], never_ordered: int = 0) -> RawTables:
    frame = pd.DataFrame(orders, columns=["customer_id", "ordered_at"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], format="ISO8601")
    ids = sorted(set(frame["customer_id"])) + [f"idle{i}" for i in range(never_ordered)]
    return RawTables(
        pd.DataFrame({"customer_id": ids}), frame, Path("customers.csv"), Path("orders.csv")
    )


# a: orders on days 0, 10.5, 40 (gaps 10.5, 29.5); b: once on day 5; c: days 100 and 400
# (gap 300). History 2025-01-01 .. 2026-02-05 = 400 days.
ORDERS = [
    ("a", "2025-01-01"),
    ("a", "2025-01-11 12:00"),
    ("a", "2025-02-10"),
    ("b", "2025-01-06"),
    ("c", "2025-04-11"),
    ("c", "2026-02-05"),
]
# Minimums small enough that ORDERS' three customers raise no data warning.
SMALL = Policy(min_labelled_customers=3, min_churners=2, min_non_churners=1)


def test_profile_counts_dates_repeat_share_and_median_gap() -> None:
    report = profile_raw_tables(_tables(ORDERS), Policy())
    assert (report.customers, report.orders) == (3, 6)
    assert (report.first_order_at, report.last_order_at) == ("2025-01-01", "2026-02-05")
    assert report.repeat_customer_share == pytest.approx(2 / 3, abs=1e-4)
    # gaps: 10.5, 29.5 (a) and 300 (c): median 29.5
    assert report.median_days_between_orders == 29.5


def test_repeat_share_counts_only_customers_who_ordered() -> None:
    report = profile_raw_tables(_tables(ORDERS, never_ordered=5), Policy())
    assert report.customers == 8
    assert report.repeat_customer_share == pytest.approx(2 / 3, abs=1e-4)


def test_profile_suggests_a_window_its_as_of_and_the_label_rate_there() -> None:
    report = profile_raw_tables(_tables(ORDERS), SMALL)
    # 90th percentile of (10.5, 29.5, 300): 29.5 + 0.8 * 270.5 = 245.9 -> 270 days, capped
    # at half the 400-day history rounded down to a month: 180 days.
    assert report.suggested_window_days == 180
    assert "246 days" in report.window_reasoning and "capped at 180" in report.window_reasoning
    # as_of = last order date - window, as dbt's as_of_dates picks it.
    assert report.suggested_as_of == "2025-08-09"
    # a, b, c ordered on or before 2025-08-09; only c orders in (as_of, 2026-02-05].
    assert report.labelled_customers_at_suggested_as_of == 3
    assert report.label_rate_at_suggested_as_of == pytest.approx(2 / 3, abs=1e-4)
    assert report.warnings == ()


def test_suggested_window_covers_ninety_percent_of_gaps_in_whole_months() -> None:
    gaps = np.array([5.0] * 9 + [100.0])  # 90th percentile: 5 + 0.1 * (100 - 5) = 14.5 -> 30
    assert suggest_window(gaps, history_days=730)[0] == 30
    gaps = np.arange(1.0, 101.0)  # 90th percentile 90.1 -> 120
    window, reasoning = suggest_window(gaps, history_days=730)
    assert window == 120 and "90% of repeat orders come within 90 days" in reasoning


def test_suggested_window_leaves_history_before_the_as_of() -> None:
    window, reasoning = suggest_window(np.array([400.0]), history_days=400)
    assert window == 180 and "capped at 180 days" in reasoning
    assert suggest_window(np.array([]), history_days=730)[0] == 90  # nobody ordered twice


def test_label_counts_follow_the_dbt_rule_on_calendar_dates() -> None:
    orders = _tables(ORDERS).orders
    # as_of 2025-01-11, window 30: population a, b (orders on or before); a orders on
    # 2025-02-10 (inside (as_of, as_of + 30]), b never again -> 2 labelled, 1 churned.
    # a's 12:00 order on the as_of day counts as "on or before", as dbt compares dates.
    assert label_counts(orders, date(2025, 1, 11), 30) == (2, 1)
    # a window ending the day before a's next order: both churned
    assert label_counts(orders, date(2025, 1, 11), 29) == (2, 2)
    # an order on as_of + 1 is inside the window; one on as_of itself is not
    assert label_counts(orders, date(2025, 1, 10), 1) == (2, 1)


def test_profile_warns_about_one_off_buyers_and_too_little_data() -> None:
    one_off = [(f"c{i}", "2025-01-01") for i in range(10)] + [("c0", "2025-12-31")]
    report = profile_raw_tables(_tables(one_off), Policy())
    text = " ".join(report.warnings)
    assert "most customers ordered once (90%)" in text
    assert "only 10 labelled customers" in text and "CHURN_MIN_LABELLED_CUSTOMERS" in text
    assert "9 churners and 1 non-churners" in text and "CHURN_MIN_CHURNERS" in text


def test_profile_warns_about_too_few_non_churners_alone() -> None:
    policy = Policy(min_labelled_customers=3, min_churners=2, min_non_churners=2)
    (warning,) = profile_raw_tables(_tables(ORDERS), policy).warnings
    assert "2 churners and 1 non-churners" in warning and "CHURN_MIN_NON_CHURNERS" in warning


def test_profile_warns_when_the_history_is_short_for_the_window() -> None:
    # history 50 days; gaps 20 and 30 -> 29 -> 30-day window; 2 x 30 > 50
    short = [("a", "2025-01-01"), ("a", "2025-01-21"), ("a", "2025-02-20"), ("b", "2025-01-01")]
    report = profile_raw_tables(_tables(short), SMALL)
    assert report.suggested_window_days == 30 and report.suggested_as_of == "2025-01-21"
    assert report.label_rate_at_suggested_as_of == 0.5  # b churned, a came back on 02-20
    assert any("shorter than twice the window" in w for w in report.warnings)


def test_profile_warns_when_the_window_is_longer_than_the_history() -> None:
    report = profile_raw_tables(_tables([("a", "2025-01-01"), ("a", "2025-01-21")]), SMALL)
    assert report.suggested_window_days == 30
    assert report.suggested_as_of == "2024-12-22"  # before the first order: nobody labelled
    assert report.labelled_customers_at_suggested_as_of == 0
    assert report.label_rate_at_suggested_as_of is None
    assert any("longer than the 20-day history" in w for w in report.warnings)


def test_profile_json_keys_are_the_documented_ones() -> None:
    assert set(profile_raw_tables(_tables(ORDERS), Policy()).as_dict()) == (
        DOCUMENTED_KEYS | EXTRA_KEYS
    )


# ----------------------------------------------------------------------------- the command


def _generate(raw_dir: Path, *args: str) -> None:
    result = CliRunner().invoke(main, ["generate", "--out", str(raw_dir), *args])
    assert result.exit_code == 0, result.output


def _profile_json() -> dict[str, object]:
    result = CliRunner().invoke(main, ["profile", "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.output)
    return report


def test_profile_command_on_the_demo_data_prints_the_documented_keys(churn_env: Path) -> None:
    _generate(churn_env)  # the demo profile: CHURN_RAW_DIR is churn_env
    report = _profile_json()
    assert set(report) == DOCUMENTED_KEYS | EXTRA_KEYS
    assert (report["customers"], report["orders"]) == (1000, 10_049)
    assert date.fromisoformat(str(report["first_order_at"])) < date(2025, 12, 29)
    assert report["last_order_at"] == "2025-12-29"
    # The demo's gaps suggest the default 90 days, so the profile's labels are the
    # generator's ground truth (868 customers, 172 churned), which dbt reproduces.
    assert (report["suggested_window_days"], report["suggested_as_of"]) == (90, "2025-09-30")
    assert report["labelled_customers_at_suggested_as_of"] == 868
    assert report["label_rate_at_suggested_as_of"] == round(172 / 868, 4)
    assert report["warnings"] == []


def test_profile_command_on_retail_data_warns_most_customers_ordered_once(
    churn_env: Path,
) -> None:
    _generate(churn_env, "--profile", "retail", "--customers", "2000")
    report = _profile_json()
    assert any("most customers ordered once" in str(w) for w in report["warnings"])  # type: ignore[attr-defined]
    assert float(report["repeat_customer_share"]) < 0.5  # type: ignore[arg-type]
    assert float(report["label_rate_at_suggested_as_of"]) > 0.6  # type: ignore[arg-type]


def test_profile_command_prints_the_reasoning_and_how_to_use_the_window(
    churn_env: Path,
) -> None:
    _generate(churn_env, "--customers", "300")
    result = CliRunner().invoke(main, ["profile"])
    assert result.exit_code == 0, result.output
    assert "contract OK" in result.output
    assert "of repeat orders come within" in result.output
    assert "CHURN_WINDOW_DAYS=" in result.output


def test_profile_command_reports_every_contract_violation_in_one_error(churn_env: Path) -> None:
    churn_env.mkdir(parents=True)
    (churn_env / "customers.csv").write_text("customer_id,signup_at,email\nc1,,\n")
    (churn_env / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount,item_count,category\n"
        "o1,c1,2025-01-01,-5,1,\n"
        "o2,ghost,2025-01-02,3,1,\n"
    )
    result = CliRunner().invoke(main, ["profile", "--json"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert result.output.startswith("Error: raw data breaks the contract (2 violation(s))")
    assert "column 'amount'" in result.output and "column 'customer_id'" in result.output


def test_profile_command_without_raw_files_says_what_is_missing(churn_env: Path) -> None:
    result = CliRunner().invoke(main, ["profile"])
    assert result.exit_code == 1
    assert "Error: raw data breaks the contract" in result.output
    assert "customers" in result.output and "orders" in result.output
