"""`churn profile`'s numbers, worked by hand on small order histories."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn_assets.data.contract import RawTables
from churn_assets.data.profile import label_counts, profile_raw_tables, suggest_window
from churn_assets.policy import Policy


def _tables(orders: list[tuple[str, str]], customers: int | None = None) -> RawTables:
    frame = pd.DataFrame(orders, columns=["customer_id", "ordered_at"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], format="ISO8601")
    ids = sorted(set(frame["customer_id"]))
    people = pd.DataFrame({"customer_id": ids[: customers or len(ids)]})
    return RawTables(people, frame, Path("customers.csv"), Path("orders.csv"))


# a: orders on days 0, 10, 40 (gaps 10, 30); b: once on day 5; c: days 100 and 400 (gap 300)
ORDERS = [
    ("a", "2025-01-01"),
    ("a", "2025-01-11 12:00"),
    ("a", "2025-02-10"),
    ("b", "2025-01-06"),
    ("c", "2025-04-11"),
    ("c", "2026-02-05"),
]


def test_profile_counts_dates_repeat_share_and_median_gap() -> None:
    report = profile_raw_tables(_tables(ORDERS), Policy())
    assert (report.customers, report.orders) == (3, 6)
    assert (report.first_order_at, report.last_order_at) == ("2025-01-01", "2026-02-05")
    assert report.repeat_customer_share == pytest.approx(2 / 3, abs=1e-4)
    # gaps: 10.5, 29.5 (a) and 300 (c): median 29.5
    assert report.median_days_between_orders == 29.5


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


def test_profile_warns_about_one_off_buyers_and_too_little_data() -> None:
    one_off = [(f"c{i}", "2025-01-01") for i in range(10)] + [("c0", "2025-12-31")]
    report = profile_raw_tables(_tables(one_off), Policy())
    text = " ".join(report.warnings)
    assert "most customers ordered once (90%)" in text
    assert "only 10 labelled customers" in text and "CHURN_MIN_LABELLED_CUSTOMERS" in text
    assert "CHURN_MIN_CHURNERS" in text


def test_profile_json_keys_are_the_documented_ones() -> None:
    keys = set(profile_raw_tables(_tables(ORDERS), Policy()).as_dict())
    assert keys >= {
        "customers", "orders", "first_order_at", "last_order_at", "repeat_customer_share",
        "median_days_between_orders", "suggested_window_days", "suggested_as_of",
        "label_rate_at_suggested_as_of", "warnings",
    }  # fmt: skip
