"""The warehouse interface's operations on a real Postgres (its implementation,
:class:`PostgresWarehouse`), each on an empty database of its own, for the operations no
other test reaches without a whole demo run: the raw load's record, retiring periods, the
feature reads, the dbt metadata reads, scores and realized performance, one state for many
reads, the scorer's log writer, the write lock, and the one error type callers catch.

The marts are made by hand here (the columns dbt gives them), so nothing runs dbt.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg2
import pytest

from churn_assets.data.contract import read_raw_tables
from churn_assets.infra import warehouse
from churn_assets.infra.warehouse import WarehouseBusy, WarehouseError
from churn_assets.schema import (
    CHURN_LABELS_TABLE,
    CURRENT_FEATURES_TABLE,
    CUSTOMER_FEATURES_TABLE,
    ONLINE_PREDICTIONS_TABLE,
    SNAPSHOT_DTYPES,
    TRAINING_SNAPSHOT_TABLE,
)
from churn_assets.tables.online_predictions import SHADOW_FIELDS
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.scores import MATURED_SCORE_COLUMNS, REALIZED_COLUMNS, SCORE_COLUMNS
from churn_assets.tables.snapshot import LabelDefinitionError
from churn_assets.tables.warehouse import Warehouse

pytestmark = pytest.mark.integration

JAN, FEB = date(2025, 1, 31), date(2025, 2, 28)
CUSTOMERS = [f"c{i:02d}" for i in range(20)]
_FEATURES_DDL = """
    customer_id text not null, as_of date not null, days_since_last_order integer,
    total_revenue_30d numeric, total_revenue_90d numeric, total_revenue_365d numeric,
    order_frequency double precision, cart_diversity integer,
    email_domain_class text, customer_lifetime_days integer
"""


@pytest.fixture
def url(fresh_database_url: str) -> str:
    return fresh_database_url


@pytest.fixture
def wh(url: str) -> Warehouse:
    return PostgresWarehouse(url)


def _execute(url: str, *statements: str) -> None:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _feature_values(customer: str, as_of: date) -> str:
    i = int(customer[1:])
    return (
        f"('{customer}', date '{as_of}', {i}, {i}.5, {i * 2}.25, {i * 3}, {i / 7}, {i % 4}, "
        f"'free', {100 + i})"
    )


@pytest.fixture
def marts(url: str) -> str:
    """Two periods of features, labels (90-day window) and training rows; the current
    features are February's."""
    rows = [(c, p) for p in (JAN, FEB) for c in CUSTOMERS]
    features = ", ".join(_feature_values(c, p) for c, p in rows)
    labelled = ", ".join(
        f"{_feature_values(c, p)[:-1]}, {int(c[1:]) % 2})" for c, p in rows
    )  # churned: odd customers
    labels = ", ".join(f"('{c}', date '{p}', {int(c[1:]) % 2}, 90)" for c, p in rows)
    _execute(
        url,
        "create schema marts",
        f"create table {CUSTOMER_FEATURES_TABLE} ({_FEATURES_DDL})",
        f"insert into {CUSTOMER_FEATURES_TABLE} values {features}",
        f"create table {CURRENT_FEATURES_TABLE} as select * from {CUSTOMER_FEATURES_TABLE} "
        f"where as_of = date '{FEB}'",
        f"create table {CHURN_LABELS_TABLE} (customer_id text, as_of date, churned integer, "
        "window_days integer)",
        f"insert into {CHURN_LABELS_TABLE} values {labels}",
        f"create table {TRAINING_SNAPSHOT_TABLE} ({_FEATURES_DDL}, churned integer)",
        f"insert into {TRAINING_SNAPSHOT_TABLE} values {labelled}",
    )
    return url


def _count(url: str, table: str) -> int:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"select count(*) from {table}")
        return int(cur.fetchone()[0])


# --- raw data ---------------------------------------------------------------------------


def test_a_raw_load_is_what_latest_load_and_last_order_date_then_read(
    wh: Warehouse, tmp_path: Path
) -> None:
    assert wh.latest_load() is None  # never loaded: nothing, and nothing created
    assert wh.last_order_date() is None
    pd.DataFrame(
        {"customer_id": ["c1", "c2"], "signup_at": ["2024-01-01", None], "email": ["a@x.io", None]}
    ).to_csv(tmp_path / "customers.csv", index=False)
    pd.DataFrame(
        {
            "order_id": ["o1", "o2"],
            "customer_id": ["c1", "c2"],
            "ordered_at": ["2024-01-05 10:00:00", "2024-03-01 23:59:00"],
            "amount": [10.5, 2.0],
            "item_count": [1, 2],
            "category": ["books", "toys"],
        }
    ).to_csv(tmp_path / "orders.csv", index=False)
    result = wh.load_raw_tables(read_raw_tables(tmp_path), dagster_run_id="run-1")
    load = wh.latest_load()
    assert load is not None
    assert load["load_id"] == result.load_id
    assert (load["customers_rows"], load["orders_rows"]) == (2, 2)
    assert load["dagster_run_id"] == "run-1"
    assert load["orders_sha256"] == result.files_sha256["orders"]
    assert wh.last_order_date() == date(2024, 3, 1)


def test_retiring_periods_deletes_their_rows_from_every_built_mart_and_no_other(
    wh: Warehouse, marts: str
) -> None:
    _execute(marts, f"drop table {TRAINING_SNAPSHOT_TABLE}")  # a mart never built: skipped
    deleted = wh.retire_periods([JAN.isoformat()])
    assert deleted == 2 * len(CUSTOMERS)  # features and labels
    for table in (CUSTOMER_FEATURES_TABLE, CHURN_LABELS_TABLE):
        assert _count(marts, table) == len(CUSTOMERS)
    assert wh.retire_periods([]) == 0


# --- features ---------------------------------------------------------------------------


def test_the_training_snapshot_reads_typed_rows_in_order_and_samples_the_same_customers(
    wh: Warehouse, marts: str
) -> None:
    frame = wh.read_training_snapshot()
    assert len(frame) == 2 * len(CUSTOMERS)
    assert list(frame["as_of"]) == [JAN] * len(CUSTOMERS) + [FEB] * len(CUSTOMERS)
    assert list(frame["customer_id"][: len(CUSTOMERS)]) == CUSTOMERS
    for column, dtype in SNAPSHOT_DTYPES.items():
        assert str(frame[column].dtype) == dtype, column
    assert frame["total_revenue_30d"].iloc[3] == 3.5  # numeric arrives as a float
    assert wh.count_training_rows([FEB]) == len(CUSTOMERS)
    assert wh.count_training_rows([]) == 0
    half = wh.read_training_snapshot([JAN, FEB], customer_share=0.5)
    by_period = half.groupby("as_of")["customer_id"].apply(list)
    assert 0 < len(by_period[JAN]) < len(CUSTOMERS)
    assert by_period[JAN] == by_period[FEB]  # the same customers in every period
    again = wh.read_training_snapshot([JAN, FEB], customer_share=0.5)
    pd.testing.assert_frame_equal(half, again)  # deterministic


def test_labelled_periods_are_the_snapshots_and_refuse_labels_of_another_window(
    wh: Warehouse, marts: str
) -> None:
    assert wh.labelled_periods(90) == [JAN, FEB]
    with pytest.raises(LabelDefinitionError, match=r"40 rows of 2 period\(s\).*90-day window"):
        wh.labelled_periods(120)


def test_the_feature_reads_name_the_newest_period_and_read_each_table(
    wh: Warehouse, marts: str
) -> None:
    assert wh.newest_feature_period() == FEB
    january = wh.read_period_features([JAN])
    assert set(january["as_of"]) == {JAN} and list(january["customer_id"]) == CUSTOMERS
    assert "churned" not in january.columns
    current = wh.read_current_features()
    assert set(current["as_of"]) == {FEB} and len(current) == len(CUSTOMERS)
    assert str(current["days_since_last_order"].dtype) == "int64"


def test_no_features_yet_has_no_newest_period(wh: Warehouse, url: str) -> None:
    _execute(url, "create schema marts", f"create table {CUSTOMER_FEATURES_TABLE} (as_of date)")
    assert wh.newest_feature_period() is None


# --- what a dbt step built --------------------------------------------------------------


def test_the_dbt_metadata_reads_count_summarise_preview_and_quote_failures(
    wh: Warehouse, marts: str
) -> None:
    assert wh.count_table_rows("marts", "customer_features") == 2 * len(CUSTOMERS)
    periods = [JAN.isoformat(), FEB.isoformat(), "2025-03-31"]  # March was never built
    labels = wh.rows_by_period(CHURN_LABELS_TABLE, periods)
    assert list(labels["as_of"]) == [JAN, FEB]
    assert list(labels["rows"]) == [len(CUSTOMERS)] * 2
    assert list(labels["label_rate"]) == [0.5, 0.5]
    features = wh.rows_by_period(CUSTOMER_FEATURES_TABLE, periods)
    assert features["label_rate"].isna().all()  # the features have no label
    with pytest.raises(ValueError, match="not a per-period table"):
        wh.rows_by_period(CURRENT_FEATURES_TABLE, periods)
    preview = wh.preview_period(TRAINING_SNAPSHOT_TABLE, FEB.isoformat(), 3)
    assert list(preview["customer_id"]) == CUSTOMERS[:3]
    assert set(preview["as_of"]) == {FEB}
    _execute(
        marts,
        "create schema test_failures",
        "create table test_failures.assert_something (failure text)",
        "insert into test_failures.assert_something values ('a broke'), ('b broke'), ('c')",
    )
    assert wh.read_test_failures("assert_something", limit=2) == [("a broke", 3), ("b broke", 3)]


def test_a_driver_error_leaves_as_a_warehouse_error_with_its_cause(wh: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="does not exist") as caught:
        wh.read_test_failures("never_ran", limit=3)
    assert isinstance(caught.value.__cause__, psycopg2.Error)
    with pytest.raises(WarehouseError):
        wh.count_table_rows("marts", "nothing")


def test_an_unreachable_warehouse_is_a_warehouse_error_naming_it_masked() -> None:
    nowhere = PostgresWarehouse("postgresql://someone:s3cret@127.0.0.1:1/none")
    with pytest.raises(WarehouseError, match="cannot connect") as caught:
        nowhere.latest_load()
    assert "s3cret" not in str(caught.value)


# --- scores and realized performance ----------------------------------------------------


def _scores(version: str, as_of: date, data_through: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": CUSTOMERS,
            "churn_probability": [i / 20 for i in range(20)],
            "risk_band": "low",
            "model_name": "churn-model",
            "model_version": version,
            "model_sha256": "0" * 64,
            "feature_as_of": as_of.isoformat(),
            "scored_at": datetime(2025, 3, 1, tzinfo=UTC).isoformat(),
            "dagster_run_id": "run",
            "model_data_through": data_through,
        }
    )


def test_matured_scores_are_the_scores_of_labelled_periods_by_models_that_had_not_seen_them(
    wh: Warehouse, marts: str
) -> None:
    assert wh.read_matured_scores().empty  # nothing scored yet
    wh.write_scores(_scores("1", JAN, data_through=JAN.isoformat()))
    wh.write_scores(_scores("2", JAN, data_through=FEB.isoformat()))  # trained after January
    assert _count(marts, "scoring.churn_scores") == len(CUSTOMERS)  # the newest write
    assert _count(marts, "scoring.churn_scores_history") == 2 * len(CUSTOMERS)
    matured = wh.read_matured_scores()
    assert tuple(matured.columns) == MATURED_SCORE_COLUMNS
    assert set(matured["model_version"]) == {"1"} and set(matured["as_of"]) == {JAN}
    assert sorted(matured["churned"]) == sorted(int(c[1:]) % 2 for c in CUSTOMERS)


def test_scores_without_a_column_are_refused_before_anything_is_written(
    wh: Warehouse, url: str
) -> None:
    with pytest.raises(ValueError, match="model_data_through"):
        wh.write_scores(_scores("1", JAN, "").drop(columns="model_data_through"))
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('scoring.churn_scores')")
        assert cur.fetchone()[0] is None
    assert SCORE_COLUMNS[-1] == "model_data_through"


def test_realized_performance_is_replaced_whole_and_read_back_by_period(wh: Warehouse) -> None:
    empty = wh.read_realized_performance()
    assert empty.empty and tuple(empty.columns) == REALIZED_COLUMNS
    first = pd.DataFrame(
        [
            ("1", FEB.isoformat(), 20, math.nan, 0.2, 0.4, 0.5, 0.8),  # one class: no AUC
            ("1", JAN.isoformat(), 20, 0.75, 0.1, 0.4, 0.5, None),
        ],
        columns=list(REALIZED_COLUMNS),
    )
    wh.write_realized_performance(first)
    wh.write_realized_performance(first.iloc[:1])  # replaces, never appends
    read = wh.read_realized_performance()
    assert len(read) == 1
    wh.write_realized_performance(first)
    read = wh.read_realized_performance()
    assert list(read["as_of"]) == [JAN, FEB]  # by period
    assert read["auc"].isna().tolist() == [False, True]
    assert read["holdout_auc"].isna().tolist() == [True, False]


# --- one state for many reads -----------------------------------------------------------


def test_consistent_reads_see_one_state_and_write_nothing(wh: Warehouse, marts: str) -> None:
    with wh.consistent_reads() as reads:
        before = reads.count_training_rows([JAN, FEB])
        _execute(marts, f"delete from {TRAINING_SNAPSHOT_TABLE} where as_of = date '{JAN}'")
        assert wh.count_training_rows([JAN, FEB]) == len(CUSTOMERS)  # others see the delete
        assert reads.count_training_rows([JAN, FEB]) == before == 2 * len(CUSTOMERS)
        assert len(reads.read_training_snapshot()) == before
        with pytest.raises(WarehouseError, match="read-only"):
            reads.retire_periods([FEB.isoformat()])


# --- the scorer's log writer ------------------------------------------------------------


def _line(request_id: str, scored_at: datetime) -> str:
    head = [request_id, scored_at.isoformat(), "c1", "0" * 64, "\\N", "churn-model", "1"]
    head += ["a" * 64, "0.5", "medium", "1.0", "champion", "\\N"]
    return "\t".join(head + ["\\N"] * len(SHADOW_FIELDS)) + "\n"


def test_the_log_writer_creates_the_log_appends_lines_and_prunes_in_batches(
    wh: Warehouse, url: str
) -> None:
    writer = wh.prediction_log_writer()
    now = datetime.now(UTC)
    try:
        writer.append([_line(f"old-{i}", now - timedelta(days=40)) for i in range(5)])
        writer.append([_line("new", now)])
        writer.append([])  # nothing to write: no round trip, no error
        assert _count(url, ONLINE_PREDICTIONS_TABLE) == 6
        cutoff = now - timedelta(days=30)
        assert writer.prune_before(cutoff, rows=3) == 3
        assert writer.prune_before(cutoff, rows=3) == 2  # fewer than asked: none left
        writer.close()
        writer.append([_line("after-close", now)])  # a closed session reconnects
    finally:
        writer.close()
    assert _count(url, ONLINE_PREDICTIONS_TABLE) == 2
    assert wh.prune_prediction_log(now + timedelta(seconds=1)) == 2


def test_the_log_writer_says_what_failed_as_a_warehouse_error(wh: Warehouse, url: str) -> None:
    writer = wh.prediction_log_writer()
    try:
        with pytest.raises(WarehouseError, match="invalid input syntax"):
            writer.append(["not-a-uuid\tnot a time" + "\t\\N" * 15 + "\n"])
        writer.append([_line("next", datetime.now(UTC))])  # the next batch starts over
    finally:
        writer.close()
    assert _count(url, ONLINE_PREDICTIONS_TABLE) == 1
    nowhere = PostgresWarehouse("postgresql://nobody@127.0.0.1:1/none").prediction_log_writer()
    with pytest.raises(WarehouseError, match="cannot connect"):
        nowhere.append([_line("lost", datetime.now(UTC))])


# --- one writer at a time ---------------------------------------------------------------


def test_the_write_lock_through_the_interface_names_its_holder_and_refuses_a_second(
    wh: Warehouse, url: str
) -> None:
    assert wh.lock_holder() is None
    with wh.write_lock("run first (churn_pipeline)", 0) as held:
        assert held.still_held()
        holder = wh.lock_holder()
        assert holder is not None and holder.name == "run first (churn_pipeline)"
        with (
            pytest.raises(WarehouseBusy, match="run first"),
            PostgresWarehouse(url).write_lock("run second", 0),
        ):
            pytest.fail("the lock was granted twice")
        held.ensure_held("nothing registered")  # still ours: no error
    assert wh.lock_holder() is None
