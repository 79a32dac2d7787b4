"""Features and labels on a tiny dataset, against values worked out by hand.

Runs the real ingest asset and the real dbt build (through dagster-dbt) on a fresh database.
Dates: the last order is 2025-06-29, so with the 90-day window the training as_of is
2025-03-31 and the label window is (2025-03-31, 2025-06-29].
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from dagster_dbt import DbtCliResource

from churn_assets import warehouse
from churn_assets.defs.dbt.assets import churn_dbt_models
from churn_assets.defs.ingest.assets import raw_tables
from churn_assets.defs.resources import ExternalPostgresWarehouse
from churn_assets.lib.dbt import churn_dbt_project

pytestmark = pytest.mark.integration

CUSTOMERS = pd.DataFrame(
    [
        ("a", "2024-12-01", "ann@gmail.com"),
        ("b", None, "bob@acme.io"),  # no signup date: the first order date is used
        ("c", "2025-01-01", "cy@uni.edu"),
        ("d", "2025-03-01", None),  # first order after as_of: not in the training population
        ("e", "2024-01-01", "eve@gmail.com"),  # never ordered: in no population
    ],
    columns=["customer_id", "signup_at", "email"],
)
ORDERS = pd.DataFrame(
    [
        ("a1", "a", "2025-01-15 10:00:00", 100.00, 1, "books"),
        ("a2", "a", "2025-03-10 12:00:00", 50.00, 2, "toys"),
        ("a3", "a", "2025-03-31 23:59:00", 20.00, None, "books"),  # on as_of: a feature
        ("a4", "a", "2025-06-29 09:00:00", 5.00, 1, "books"),  # last day of the window: active
        ("b1", "b", "2024-04-01 08:00:00", 40.00, 1, None),
        ("b2", "b", "2024-12-15 00:00:00", 60.00, 3, "home"),
        ("c1", "c", "2025-02-20 15:00:00", 30.00, 1, "books"),
        ("c2", "c", "2025-04-01 00:00:00", 999.00, 9, "electronics"),  # a day after as_of
        ("d1", "d", "2025-04-15 10:00:00", 10.00, 1, "toys"),
    ],
    columns=["order_id", "customer_id", "ordered_at", "amount", "item_count", "category"],
)
FEATURES = [
    "days_since_last_order",
    "total_revenue_30d",
    "total_revenue_90d",
    "total_revenue_365d",
    "order_frequency",
    "cart_diversity",
    "email_domain_class",
    "customer_lifetime_days",
]
# Worked out by hand at as_of 2025-03-31 (see the module docstring for the windows).
EXPECTED_TRAINING = {
    # last order a3 on as_of; 30d = a2+a3; 90d, 365d = a1+a2+a3; lifetime from signup
    # 2024-12-01 = 120 days; 3 orders * 30 / 120; categories books, toys
    "a": (0, 70, 170, 170, 0.75, 2, "free", 120),
    # last order 2024-12-15 (106 days); nothing in 30/90d; 365d = b1+b2 (2024-04-01 is inside
    # (2024-03-31, 2025-03-31]); lifetime from first order 2024-04-01 = 364; null category
    # is not a category
    "b": (106, 0, 0, 100, 2 * 30 / 364, 1, "business", 364),
    # only c1 counts (c2 is after as_of); lifetime from signup 2025-01-01 = 89 days
    "c": (39, 0, 30, 30, 30 / 89, 1, "education", 89),
}
EXPECTED_LABELS = {"a": (1, 0), "b": (0, 1), "c": (1, 0)}  # (orders_in_window, churned)


def _build(url: str, raw_dir: Path, customers: pd.DataFrame, orders: pd.DataFrame) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    customers.to_csv(raw_dir / "customers.csv", index=False)
    orders.to_csv(raw_dir / "orders.csv", index=False)
    result = dg.materialize(
        [raw_tables, churn_dbt_models],
        resources={
            "warehouse": ExternalPostgresWarehouse(connection_url=url),
            "dbt": DbtCliResource(project_dir=churn_dbt_project()),
        },
        run_config={"ops": {"raw_tables": {"config": {"raw_dir": str(raw_dir)}}}},
    )
    assert result.success


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def _training_features(url: str) -> dict[str, tuple[Any, ...]]:
    rows = _rows(
        url,
        f"select customer_id, {', '.join(FEATURES)} from marts.customer_features "
        "where purpose = 'training' order by customer_id",
    )
    return {row[0]: tuple(row[1:]) for row in rows}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str]) -> str:
    """One fresh database holding the hand-made dataset, built once for the module."""
    url = new_database()
    _build(url, tmp_path_factory.mktemp("hand"), CUSTOMERS, ORDERS)
    return url


def test_as_of_dates_default_to_the_latest_complete_label_window(built: str) -> None:
    assert dict(_rows(built, "select purpose, as_of from marts.as_of_dates")) == {
        "training": date(2025, 3, 31),
        "scoring": date(2025, 6, 29),
    }


def test_training_features_match_values_worked_out_by_hand(built: str) -> None:
    features = _training_features(built)
    assert set(features) == set(EXPECTED_TRAINING)  # d ordered only after as_of, e never
    for customer, expected in EXPECTED_TRAINING.items():
        got = features[customer]
        for name, value, want in zip(FEATURES, got, expected, strict=True):
            if isinstance(want, float):
                assert value == pytest.approx(want, rel=1e-12), (customer, name)
            elif isinstance(value, Decimal):
                assert value == Decimal(want), (customer, name)
            else:
                assert value == want, (customer, name)


def test_labels_follow_the_window_boundaries(built: str) -> None:
    rows = _rows(built, "select customer_id, orders_in_window, churned from marts.churn_labels")
    assert {row[0]: tuple(row[1:]) for row in rows} == EXPECTED_LABELS


def test_scoring_population_includes_customers_who_started_after_the_training_as_of(
    built: str,
) -> None:
    rows = _rows(
        built,
        "select customer_id, days_since_last_order from marts.customer_features "
        "where purpose = 'scoring' order by 1",
    )
    # scoring as_of 2025-06-29: a ordered that day, b last on 2024-12-15, c on 2025-04-01,
    # d on 2025-04-15
    assert rows == [("a", 0), ("b", 196), ("c", 89), ("d", 75)]


def test_training_snapshot_joins_features_and_labels(built: str) -> None:
    rows = _rows(
        built,
        "select customer_id, days_since_last_order, churned "
        "from marts.training_snapshot order by 1",
    )
    assert rows == [("a", 0, 0), ("b", 106, 1), ("c", 39, 0)]


def test_an_order_after_as_of_changes_no_feature(
    built: str, fresh_database_url: str, tmp_path: Path
) -> None:
    # Regression guard for label leakage: a big order for b after as_of, in a new category,
    # must move b's label but none of its training features.
    late = pd.DataFrame(
        [("b3", "b", "2025-05-01 12:00:00", 5000.0, 4, "garden")], columns=ORDERS.columns
    )
    _build(fresh_database_url, tmp_path, CUSTOMERS, pd.concat([ORDERS, late]))
    assert _training_features(fresh_database_url) == _training_features(built)
    labels = dict(_rows(fresh_database_url, "select customer_id, churned from marts.churn_labels"))
    assert labels["b"] == 0


def test_an_as_of_without_a_complete_label_window_fails_and_keeps_the_snapshot(
    built: str, tmp_path: Path
) -> None:
    before = _rows(built, "select * from marts.training_snapshot order by customer_id")
    result = dg.materialize(
        [churn_dbt_models],
        resources={
            "warehouse": ExternalPostgresWarehouse(connection_url=built),
            "dbt": DbtCliResource(project_dir=churn_dbt_project()),
        },
        run_config={"ops": {"churn_dbt_models": {"config": {"as_of": "2025-05-01"}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert "label window incomplete: training as_of 2025-05-01 + 90 days" in message
    assert "pick as_of <= 2025-03-31" in message
    assert _rows(built, "select * from marts.training_snapshot order by customer_id") == before
