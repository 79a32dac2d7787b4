"""Features and labels per period on a tiny dataset, against values worked out by hand.

Runs the real ingest asset (which registers the data's periods as partitions) and the real
dbt build (through dagster-dbt: staging, every period in one single-run backfill, then the
newest period's features) on a fresh database.

Dates: month periods, 90-day label window. The first order is 2024-04-01 and the last
2025-06-29, so the periods are the month ends 2024-04-30 .. 2025-05-31 (June is not over
in the data). A period p is labelled when p + 90 <= 2025-06-29, i.e. p <= 2025-03-31:
2025-03-31's label window is (2025-03-31, 2025-06-29]; 2025-04-30 and 2025-05-31 have
features but no labels yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from dagster_dbt import DbtCliResource

from churn_assets.defs.dbt.assets import churn_dbt_models, current_dbt_models, period_dbt_models
from churn_assets.defs.ingest.assets import raw_tables
from churn_assets.defs.partitions import registered_periods
from churn_assets.defs.resources import ChurnPolicy, ExternalPostgresWarehouse, labels_resource
from churn_assets.infra import warehouse
from churn_assets.lib.dbt import churn_dbt_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # several dbt builds of every period

CUSTOMERS = pd.DataFrame(
    [
        ("a", "2024-12-01", "ann@gmail.com"),
        ("b", None, "bob@acme.io"),  # no signup date: the first order date is used
        ("c", "2025-01-01", "cy@uni.edu"),
        ("d", "2025-03-01", None),  # first order in April: in no period before 2025-04-30
        ("e", "2024-01-01", "eve@gmail.com"),  # never ordered: in no population
    ],
    columns=["customer_id", "signup_at", "email"],
)
ORDERS = pd.DataFrame(
    [
        ("a1", "a", "2025-01-15 10:00:00", 100.00, 1, "books"),
        ("a2", "a", "2025-03-10 12:00:00", 50.00, 2, "toys"),
        # on the period end 2025-03-31: a feature of that period, not a label; and exactly
        # on 2025-04-30 - 30, so outside April's 30-day revenue window
        ("a3", "a", "2025-03-31 23:59:00", 20.00, None, "books"),
        # 2025-03-31 + 90: the last day of March's label window (active); the last order
        ("a4", "a", "2025-06-29 09:00:00", 5.00, 1, "books"),
        ("b1", "b", "2024-04-01 08:00:00", 40.00, 1, None),  # the first order
        ("b2", "b", "2024-12-15 00:00:00", 60.00, 3, "home"),
        ("c1", "c", "2025-02-20 15:00:00", 30.00, 1, "books"),
        ("c2", "c", "2025-04-01 00:00:00", 999.00, 9, "electronics"),  # a day after 03-31
        ("d1", "d", "2025-04-15 10:00:00", 10.00, 1, "toys"),
    ],
    columns=["order_id", "customer_id", "ordered_at", "amount", "item_count", "category"],
)
MONTH_ENDS = [
    "2024-04-30",
    "2024-05-31",
    "2024-06-30",
    "2024-07-31",
    "2024-08-31",
    "2024-09-30",
    "2024-10-31",
    "2024-11-30",
    "2024-12-31",
    "2025-01-31",
    "2025-02-28",
    "2025-03-31",
    "2025-04-30",
    "2025-05-31",
]
LABELLED = MONTH_ENDS[: MONTH_ENDS.index("2025-03-31") + 1]
UNLABELLED = ["2025-04-30", "2025-05-31"]
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
# Worked out by hand, per period end (see the module docstring for the dates).
EXPECTED_FEATURES: dict[str, dict[str, tuple[Any, ...]]] = {
    "2025-03-31": {
        # last order a3 on as_of; 30d = a2+a3; 90d, 365d = a1+a2+a3; lifetime from signup
        # 2024-12-01 = 120 days; 3 orders * 30 / 120; categories books, toys
        "a": (0, 70, 170, 170, 0.75, 2, "free", 120),
        # last order 2024-12-15 (106 days); nothing in 30/90d; 365d = b1+b2 (2024-04-01 is
        # inside (2024-03-31, 2025-03-31]); lifetime from the first order 2024-04-01 = 364;
        # a null category is not a category
        "b": (106, 0, 0, 100, 2 * 30 / 364, 1, "business", 364),
        # only c1 counts (c2 is the day after as_of); lifetime from signup 2025-01-01 = 89
        "c": (39, 0, 30, 30, 30 / 89, 1, "education", 89),
    },
    "2025-04-30": {
        # a3 (2025-03-31) is exactly as_of - 30: out of the 30-day window, in the 90-day
        # one; a1 (2025-01-15) left the 90-day window (2025-01-30, 2025-04-30]
        "a": (30, 0, 70, 170, 3 * 30 / 150, 2, "free", 150),
        # b1 left the 365-day window (2024-04-30, 2025-04-30]
        "b": (136, 0, 0, 60, 2 * 30 / 394, 1, "business", 394),
        # c2 now counts: recency 29 days, a new category
        "c": (29, 999, 1029, 1029, 2 * 30 / 119, 2, "education", 119),
        # d joins: signup 2025-03-01 (60 days), one order; no email
        "d": (15, 10, 10, 10, 0.5, 1, "unknown", 60),
    },
}
# (orders_in_window, churned) per labelled period; a customer is in a period's population
# from the period of their first order on.
EXPECTED_LABELS: dict[str, dict[str, tuple[int, int]]] = {
    # b2 (2024-12-15) is in the windows of the periods in [2024-09-16, 2024-12-15)
    **{p: {"b": (0, 1)} for p in LABELLED[:5]},  # 2024-04-30 .. 2024-08-31
    **{p: {"b": (1, 0)} for p in ("2024-09-30", "2024-10-31", "2024-11-30")},
    "2024-12-31": {"b": (0, 1)},
    # a2, a3 are in (2025-01-31, 2025-05-01] and (2025-02-28, 2025-05-29]; a4 is not
    "2025-01-31": {"a": (2, 0), "b": (0, 1)},
    "2025-02-28": {"a": (2, 0), "b": (0, 1), "c": (1, 0)},
    # (2025-03-31, 2025-06-29]: a3 on as_of is not in it, a4 on as_of + 90 is; c2 the day
    # after as_of is
    "2025-03-31": {"a": (1, 0), "b": (0, 1), "c": (1, 0)},
}


@dataclass(frozen=True)
class Built:
    url: str
    instance: dg.DagsterInstance


def _resources(url: str) -> dict[str, Any]:
    return {
        "warehouse": ExternalPostgresWarehouse(connection_url=url),
        "dbt": DbtCliResource(project_dir=churn_dbt_project()),
        "policy": ChurnPolicy(),
        "labels": labels_resource(),
    }


@contextmanager
def _default_calendar() -> Iterator[None]:
    """Month periods and a 90-day window, whatever the caller's environment says."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("CHURN_PERIOD", "CHURN_WINDOW_DAYS", "CHURN_AS_OF", "CHURN_WAREHOUSE_URL"):
            mp.delenv(name, raising=False)
        yield


def _build(
    url: str,
    raw_dir: Path,
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    current: bool = True,
) -> Built:
    """Ingest (registers the periods), staging, every period in one run, and (``current``)
    the current features."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    customers.to_csv(raw_dir / "customers.csv", index=False)
    orders.to_csv(raw_dir / "orders.csv", index=False)
    instance = dg.DagsterInstance.ephemeral()
    with _default_calendar():
        result = dg.materialize(
            [raw_tables, churn_dbt_models],
            instance=instance,
            resources=_resources(url),
            run_config={"ops": {"raw_tables": {"config": {"raw_dir": str(raw_dir)}}}},
        )
        assert result.success
        keys = registered_periods(instance)
        result = dg.materialize(
            [period_dbt_models],
            instance=instance,
            resources=_resources(url),
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            },
        )
        assert result.success
        if current:
            result = dg.materialize(
                [current_dbt_models], instance=instance, resources=_resources(url)
            )
            assert result.success
    return Built(url, instance)


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def _features(url: str, where: str = "true") -> dict[tuple[str, str], tuple[Any, ...]]:
    """{(as_of, customer_id): features} of the periods matching ``where``."""
    rows = _rows(
        url,
        f"select as_of::text, customer_id, {', '.join(FEATURES)} from marts.customer_features "
        f"where {where} order by as_of, customer_id",
    )
    return {(row[0], row[1]): tuple(row[2:]) for row in rows}


def _labels(url: str) -> dict[str, dict[str, tuple[int, int]]]:
    labels: dict[str, dict[str, tuple[int, int]]] = {}
    rows = _rows(
        url, "select as_of::text, customer_id, orders_in_window, churned from marts.churn_labels"
    )
    for as_of, customer, orders_in_window, churned in rows:
        labels.setdefault(as_of, {})[customer] = (orders_in_window, churned)
    return labels


def _assert_features(got: tuple[Any, ...], expected: tuple[Any, ...], where: object) -> None:
    for name, value, want in zip(FEATURES, got, expected, strict=True):
        if isinstance(want, float):
            assert value == pytest.approx(want, rel=1e-12), (where, name)
        elif isinstance(value, Decimal):
            assert value == Decimal(want), (where, name)
        else:
            assert value == want, (where, name)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str]) -> Built:
    """One fresh database holding the hand-made dataset, built once for the module."""
    return _build(new_database(), tmp_path_factory.mktemp("hand"), CUSTOMERS, ORDERS)


def test_the_periods_are_the_month_ends_the_data_covers(built: Built) -> None:
    assert registered_periods(built.instance) == MONTH_ENDS
    as_ofs = _rows(built.url, "select distinct as_of::text from marts.customer_features order by 1")
    assert [row[0] for row in as_ofs] == MONTH_ENDS
    labelled = _rows(built.url, "select distinct as_of::text from marts.churn_labels order by 1")
    assert [row[0] for row in labelled] == LABELLED


def test_features_match_values_worked_out_by_hand(built: Built) -> None:
    for as_of, expected in EXPECTED_FEATURES.items():
        features = _features(built.url, f"as_of = date '{as_of}'")
        assert {customer for _, customer in features} == set(expected), as_of
        for customer, want in expected.items():
            _assert_features(features[(as_of, customer)], want, (as_of, customer))


def test_labels_follow_the_window_boundaries(built: Built) -> None:
    labels = _labels(built.url)
    assert labels == EXPECTED_LABELS
    assert {row[0] for row in _rows(built.url, "select window_days from marts.churn_labels")} == {
        90
    }


def test_the_population_of_a_later_period_includes_customers_who_started_after(
    built: Built,
) -> None:
    rows = _rows(
        built.url,
        "select as_of::text, string_agg(customer_id, '' order by customer_id) "
        "from marts.customer_features group by as_of order by as_of",
    )
    # b from April 2024 (b1), a from January 2025, c from February, d from April; e never
    assert dict(rows) == {
        **{p: "b" for p in MONTH_ENDS[:9]},
        "2025-01-31": "ab",
        "2025-02-28": "abc",
        "2025-03-31": "abc",
        "2025-04-30": "abcd",
        "2025-05-31": "abcd",
    }
    # current_features = the newest period: a last ordered on 2025-03-31 (a4 is after
    # 2025-05-31), b on 2024-12-15, c on 2025-04-01, d on 2025-04-15
    current = _rows(
        built.url,
        "select as_of::text, customer_id, days_since_last_order "
        "from marts.current_features order by customer_id",
    )
    assert current == [
        ("2025-05-31", "a", 61),
        ("2025-05-31", "b", 167),
        ("2025-05-31", "c", 60),
        ("2025-05-31", "d", 46),
    ]


def test_training_snapshot_joins_features_and_labels(built: Built) -> None:
    rows = _rows(
        built.url,
        "select customer_id, days_since_last_order, churned from marts.training_snapshot "
        "where as_of = date '2025-03-31' order by 1",
    )
    assert rows == [("a", 0, 0), ("b", 106, 1), ("c", 39, 0)]
    # Every labelled period, every column: exactly the features joined to the labels.
    columns = ", ".join(["as_of", "customer_id", *FEATURES])
    snapshot = _rows(
        built.url, f"select {columns}, churned from marts.training_snapshot order by 1, 2"
    )
    joined = _rows(
        built.url,
        f"select {', '.join(f'f.{c}' for c in ['as_of', 'customer_id', *FEATURES])}, l.churned "
        "from marts.customer_features as f inner join marts.churn_labels as l "
        "using (as_of, customer_id) order by 1, 2",
    )
    assert snapshot == joined
    assert len(snapshot) == sum(len(customers) for customers in EXPECTED_LABELS.values())


def test_an_order_after_as_of_changes_no_feature(
    built: Built, fresh_database_url: str, tmp_path: Path
) -> None:
    # Regression guard for label leakage: a big order for b on 2025-05-01, in a new
    # category, must move b's labels but no feature of any period before May.
    late = pd.DataFrame(
        [("b3", "b", "2025-05-01 12:00:00", 5000.0, 4, "garden")], columns=ORDERS.columns
    )
    # The periods' marts only (one dbt build fewer): current_features is not compared.
    rebuilt = _build(
        fresh_database_url, tmp_path, CUSTOMERS, pd.concat([ORDERS, late]), current=False
    )
    before_may = "as_of < date '2025-05-01'"
    assert _features(rebuilt.url, before_may) == _features(built.url, before_may)
    # May's features see it: 30 days old, so exactly as_of - 30 and out of the 30-day
    # window; in the 90- and 365-day ones (with b2; b1 left); a second category
    may = _features(rebuilt.url, "as_of = date '2025-05-31' and customer_id = 'b'")
    _assert_features(
        may[("2025-05-31", "b")],
        (30, 0, 5000, 5060, 3 * 30 / 425, 2, "business", 425),
        "b at 2025-05-31",
    )
    # 2025-05-01 is in the windows (p, p + 90] of 2025-01-31 (exactly its last day),
    # 2025-02-28 and 2025-03-31, not of 2024-12-31 (its window ends 2025-03-31)
    labels = _labels(rebuilt.url)
    expected = {p: dict(customers) for p, customers in EXPECTED_LABELS.items()}
    for period in ("2025-01-31", "2025-02-28", "2025-03-31"):
        expected[period]["b"] = (1, 0)
    assert labels == expected


def test_a_period_without_a_closed_label_window_has_features_but_no_labels(
    built: Built,
) -> None:
    for period in UNLABELLED:
        for table, present in (
            ("customer_features", True),
            ("churn_labels", False),
            ("training_snapshot", False),
        ):
            (count,) = _rows(
                built.url, f"select count(*) from marts.{table} where as_of = date '{period}'"
            )[0]
            assert (count > 0) is present, (period, table, count)

    # Materialising that one partition again succeeds, says it has no closed labels, and
    # changes no row (labelled periods and features included).
    def everything() -> list[list[tuple[Any, ...]]]:
        return [
            _rows(built.url, f"select * from marts.{table} order by as_of, customer_id")
            for table in ("customer_features", "churn_labels", "training_snapshot")
        ]

    before = everything()
    with _default_calendar():
        result = dg.materialize(
            [period_dbt_models],
            instance=built.instance,
            resources=_resources(built.url),
            partition_key="2025-04-30",
        )
    assert result.success
    metadata = {
        m.asset_key.path[-1]: m.metadata
        for m in result.asset_materializations_for_node("period_dbt_models")
    }
    assert metadata["customer_features"]["dagster/row_count"].value == 4
    for table in ("churn_labels", "training_snapshot"):
        assert metadata[table]["dagster/row_count"].value == 0
        assert metadata[table]["periods_without_closed_labels"].value == "2025-04-30"
    assert everything() == before
