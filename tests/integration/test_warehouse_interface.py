"""The warehouse interface's operations on a real Postgres (its implementation,
:class:`PostgresWarehouse`), each on an empty database of its own, for the operations no
other test reaches without a whole demo run: the raw load's record, retiring periods, the
feature reads, the dbt metadata reads, scores and realized performance, one state for many
reads, the scorer's log writer, the write lock, and the one error type callers catch (and
the scorer's Parquet export of the current features, written from the interface's rows).

The marts are made by hand here (the columns dbt gives them), so nothing runs dbt. Each
check that holds on every engine reaches the engine only through the interface and the
test's own :class:`Hands` (make tables, count rows), so the Spark implementation runs the
same checks: ``tests/spark/test_spark_warehouse.py`` imports them (:data:`ENGINE_CHECKS`) and
gives them its own ``wh`` and ``hands``. The rest are Postgres's own (an unreachable server,
repeatable read, the scorer's log writer).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

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
from churn_assets.serving.features import parquet_loader
from churn_assets.tables.feature_export import EXPORT_COLUMNS, write_feature_export
from churn_assets.tables.online_predictions import SHADOW_FIELDS
from churn_assets.tables.postgres.bulk import copy_frame
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.scores import MATURED_SCORE_COLUMNS, REALIZED_COLUMNS, SCORE_COLUMNS
from churn_assets.tables.snapshot import LabelDefinitionError
from churn_assets.tables.source import CONTRACT
from churn_assets.tables.warehouse import Warehouse
from tests.integration.source_support import Row, Shop

pytestmark = pytest.mark.integration

JAN, FEB = date(2025, 1, 31), date(2025, 2, 28)
CUSTOMERS = [f"c{i:02d}" for i in range(20)]
# The marts' columns as dbt types them on Postgres; an engine's hands translate.
FEATURE_COLUMNS = {
    "customer_id": "text",
    "as_of": "date",
    "days_since_last_order": "integer",
    "total_revenue_30d": "numeric",
    "total_revenue_90d": "numeric",
    "total_revenue_365d": "numeric",
    "order_frequency": "double precision",
    "cart_diversity": "integer",
    "email_domain_class": "text",
    "customer_lifetime_days": "integer",
}
LABEL_COLUMNS = {
    "customer_id": "text",
    "as_of": "date",
    "churned": "integer",
    "window_days": "integer",
}
MART_COLUMNS = {
    CUSTOMER_FEATURES_TABLE: FEATURE_COLUMNS,
    CURRENT_FEATURES_TABLE: FEATURE_COLUMNS,
    CHURN_LABELS_TABLE: LABEL_COLUMNS,
    TRAINING_SNAPSHOT_TABLE: {**FEATURE_COLUMNS, "churned": "integer"},
}


class Hands(Protocol):
    """A test's own access to one engine, beside the interface under test."""

    driver_error: type[BaseException]  # what the engine's driver raises

    def make_tables(self, tables: dict[str, pd.DataFrame]) -> None:
        """Create each table (``schema.name``, typed by :data:`MART_COLUMNS`, schemas
        created) holding its frame's rows."""
        ...

    def drop(self, table: str) -> None: ...

    def count(self, table: str) -> int: ...

    def exists(self, table: str) -> bool: ...

    def store_test_failures(self, test: str, failures: list[str]) -> None:
        """What dbt stores for a failing singular test: one ``failure`` line per row."""
        ...

    def another(self) -> Warehouse:
        """A second client of the same warehouse (another process's view of it)."""
        ...

    def make_source(self, shop: Shop) -> None:
        """Replace the schema ``shop`` with ``shop``'s tables (source tables to load from)."""
        ...

    def append(self, table: str, rows: list[Row]) -> None:
        """Add rows to the source table ``shop.<table>``."""
        ...

    def raw_rows(self, table: str) -> list[tuple[object, ...]]:
        """``raw.<table>``'s contract columns, ordered by its id ([]: no such table)."""
        ...


def mart_frames() -> dict[str, pd.DataFrame]:
    """Two periods of features, labels (90-day window) and training rows; the current
    features are February's. Churned: the odd customers."""
    features = pd.DataFrame(
        [
            {
                "customer_id": customer,
                "as_of": as_of,
                "days_since_last_order": i,
                "total_revenue_30d": i + 0.5,
                "total_revenue_90d": i * 2 + 0.25,
                "total_revenue_365d": float(i * 3),
                "order_frequency": i / 7,
                "cart_diversity": i % 4,
                "email_domain_class": "free",
                "customer_lifetime_days": 100 + i,
            }
            for as_of in (JAN, FEB)
            for i, customer in enumerate(CUSTOMERS)
        ]
    )
    churned = features["days_since_last_order"] % 2
    return {
        CUSTOMER_FEATURES_TABLE: features,
        CURRENT_FEATURES_TABLE: features[features["as_of"] == FEB].reset_index(drop=True),
        CHURN_LABELS_TABLE: features[["customer_id", "as_of"]].assign(
            churned=churned, window_days=90
        ),
        TRAINING_SNAPSHOT_TABLE: features.assign(churned=churned),
    }


class PostgresHands:
    driver_error = psycopg2.Error

    def __init__(self, url: str) -> None:
        self.url = url

    def make_tables(self, tables: dict[str, pd.DataFrame]) -> None:
        with warehouse.connect(self.url) as conn, conn.cursor() as cur:
            for table, frame in tables.items():
                columns = ", ".join(f"{c} {t}" for c, t in MART_COLUMNS[table].items())
                cur.execute(f"create schema if not exists {table.split('.')[0]}")
                cur.execute(f"create table {table} ({columns})")
                copy_frame(cur, table, frame)

    def drop(self, table: str) -> None:
        _execute(self.url, f"drop table {table}")

    def count(self, table: str) -> int:
        return _count(self.url, table)

    def exists(self, table: str) -> bool:
        with warehouse.connect(self.url) as conn, conn.cursor() as cur:
            cur.execute("select to_regclass(%s) is not null", (table,))
            return bool(cur.fetchone()[0])

    def store_test_failures(self, test: str, failures: list[str]) -> None:
        values = ", ".join(f"('{failure}')" for failure in failures)
        _execute(
            self.url,
            "create schema test_failures",
            f"create table test_failures.{test} (failure text)",
            f"insert into test_failures.{test} values {values}",
        )

    def another(self) -> Warehouse:
        return PostgresWarehouse(self.url)

    def make_source(self, shop: Shop) -> None:
        with warehouse.connect(self.url) as conn, conn.cursor() as cur:
            cur.execute("drop schema if exists shop cascade; create schema shop")
            for name, table in shop.tables.items():
                columns = ", ".join(f"{c} {t}" for c, t in table.columns.items())
                cur.execute(f"create table shop.{name} ({columns})")
        for name, table in shop.tables.items():
            self.append(name, table.rows)

    def append(self, table: str, rows: list[Row]) -> None:
        if not rows:
            return
        with warehouse.connect(self.url) as conn, conn.cursor() as cur:
            values = ", ".join(["%s"] * len(rows[0]))
            cur.executemany(f"insert into shop.{table} values ({values})", rows)

    def raw_rows(self, table: str) -> list[tuple[object, ...]]:
        if not self.exists(f"raw.{table}"):
            return []
        columns = ", ".join(spec.name for spec in CONTRACT[table])
        with warehouse.connect(self.url) as conn, conn.cursor() as cur:
            cur.execute(f"select {columns} from raw.{table} order by 1")
            return [tuple(row) for row in cur.fetchall()]


@pytest.fixture
def url(fresh_database_url: str) -> str:
    return fresh_database_url


@pytest.fixture
def wh(url: str) -> Warehouse:
    return PostgresWarehouse(url)


@pytest.fixture
def hands(url: str) -> Hands:
    return PostgresHands(url)


@pytest.fixture
def marts(hands: Hands) -> Hands:
    """The marts of :func:`mart_frames`, made by hand."""
    hands.make_tables(mart_frames())
    return hands


def _execute(url: str, *statements: str) -> None:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


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
    wh: Warehouse, marts: Hands
) -> None:
    marts.drop(TRAINING_SNAPSHOT_TABLE)  # a mart never built: skipped
    deleted = wh.retire_periods([JAN.isoformat()])
    assert deleted == 2 * len(CUSTOMERS)  # features and labels
    for table in (CUSTOMER_FEATURES_TABLE, CHURN_LABELS_TABLE):
        assert marts.count(table) == len(CUSTOMERS)
    assert wh.retire_periods([]) == 0


# --- features ---------------------------------------------------------------------------


def test_the_training_snapshot_reads_typed_rows_in_order_and_samples_the_same_customers(
    wh: Warehouse, marts: Hands
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
    wh: Warehouse, marts: Hands
) -> None:
    assert wh.labelled_periods(90) == [JAN, FEB]
    with pytest.raises(LabelDefinitionError, match=r"40 rows of 2 period\(s\).*90-day window"):
        wh.labelled_periods(120)


def test_the_feature_reads_name_the_newest_period_and_read_each_table(
    wh: Warehouse, marts: Hands
) -> None:
    assert wh.newest_feature_period() == FEB
    january = wh.read_period_features([JAN])
    assert set(january["as_of"]) == {JAN} and list(january["customer_id"]) == CUSTOMERS
    assert "churned" not in january.columns
    current = wh.read_current_features()
    assert set(current["as_of"]) == {FEB} and len(current) == len(CUSTOMERS)
    assert str(current["days_since_last_order"].dtype) == "int64"


def test_the_scorers_export_of_the_current_features_holds_their_rows_and_types(
    wh: Warehouse, marts: Hands, tmp_path: Path
) -> None:
    # What current_features_export does on each engine: the interface's rows into the file,
    # which the scorer loads with pyarrow alone, integers as ints and the rest as floats.
    path = tmp_path / "online" / "current_features.parquet"
    exported = write_feature_export(wh.read_current_features(), path)
    assert (exported.rows, exported.as_of) == (len(CUSTOMERS), FEB)
    snapshot = parquet_loader(path)(None)
    assert snapshot is not None and (snapshot.rows, snapshot.as_of) == (len(CUSTOMERS), FEB)
    expected = mart_frames()[CURRENT_FEATURES_TABLE][list(EXPORT_COLUMNS)]
    for record in expected.to_dict("records"):
        got = snapshot.row(record["customer_id"])
        assert got is not None
        assert [(k, v, type(v)) for k, v in got.items()] == [
            (k, v, type(v)) for k, v in record.items()
        ]


def test_no_features_yet_has_no_newest_period(wh: Warehouse, hands: Hands) -> None:
    features = mart_frames()[CUSTOMER_FEATURES_TABLE]
    hands.make_tables({CUSTOMER_FEATURES_TABLE: features.iloc[:0]})
    assert wh.newest_feature_period() is None


# --- what a dbt step built --------------------------------------------------------------


def test_the_dbt_metadata_reads_count_summarise_preview_and_quote_failures(
    wh: Warehouse, marts: Hands
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
    marts.store_test_failures("assert_something", ["a broke", "b broke", "c"])
    assert wh.read_test_failures("assert_something", limit=2) == [("a broke", 3), ("b broke", 3)]


def test_a_driver_error_leaves_as_a_warehouse_error_with_its_cause(
    wh: Warehouse, hands: Hands
) -> None:
    with pytest.raises(WarehouseError, match="never_ran") as caught:  # names what it missed
        wh.read_test_failures("never_ran", limit=3)
    assert isinstance(caught.value.__cause__, hands.driver_error)
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
    wh: Warehouse, marts: Hands
) -> None:
    assert wh.read_matured_scores().empty  # nothing scored yet
    wh.write_scores(_scores("1", JAN, data_through=JAN.isoformat()))
    wh.write_scores(_scores("2", JAN, data_through=FEB.isoformat()))  # trained after January
    assert marts.count("scoring.churn_scores") == len(CUSTOMERS)  # the newest write
    assert marts.count("scoring.churn_scores_history") == 2 * len(CUSTOMERS)
    matured = wh.read_matured_scores()
    assert tuple(matured.columns) == MATURED_SCORE_COLUMNS
    assert set(matured["model_version"]) == {"1"} and set(matured["as_of"]) == {JAN}
    assert sorted(matured["churned"]) == sorted(int(c[1:]) % 2 for c in CUSTOMERS)


def test_scores_without_a_column_are_refused_before_anything_is_written(
    wh: Warehouse, hands: Hands
) -> None:
    with pytest.raises(ValueError, match="model_data_through"):
        wh.write_scores(_scores("1", JAN, "").drop(columns="model_data_through"))
    assert not hands.exists("scoring.churn_scores")
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


def test_consistent_reads_read_through_a_view_that_writes_nothing(
    wh: Warehouse, marts: Hands
) -> None:
    with wh.consistent_reads() as reads:
        assert reads.count_training_rows([JAN, FEB]) == 2 * len(CUSTOMERS)
        assert len(reads.read_training_snapshot()) == 2 * len(CUSTOMERS)
        with reads.consistent_reads() as nested:  # already one state
            assert nested.labelled_periods(90) == [JAN, FEB]
        with pytest.raises(WarehouseError, match="read-only"):
            reads.retire_periods([FEB.isoformat()])
    assert marts.count(TRAINING_SNAPSHOT_TABLE) == 2 * len(CUSTOMERS)


def test_consistent_reads_on_postgres_see_one_state_whatever_others_commit(
    wh: Warehouse, marts: Hands, url: str
) -> None:
    # repeatable read: Postgres's guarantee (Spark's is one state per read, see SparkWarehouse)
    with wh.consistent_reads() as reads:
        before = reads.count_training_rows([JAN, FEB])
        _execute(url, f"delete from {TRAINING_SNAPSHOT_TABLE} where as_of = date '{JAN}'")
        assert wh.count_training_rows([JAN, FEB]) == len(CUSTOMERS)  # others see the delete
        assert reads.count_training_rows([JAN, FEB]) == before == 2 * len(CUSTOMERS)
        assert len(reads.read_training_snapshot()) == before


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
    wh: Warehouse, hands: Hands
) -> None:
    assert wh.lock_holder() is None
    with wh.write_lock("run first (churn_pipeline)", 0) as held:
        assert held.still_held()
        holder = wh.lock_holder()
        assert holder is not None and holder.name == "run first (churn_pipeline)"
        with (
            pytest.raises(WarehouseBusy, match="run first"),
            hands.another().write_lock("run second", 0),
        ):
            pytest.fail("the lock was granted twice")
        held.ensure_held("nothing registered")  # still ours: no error
    assert wh.lock_holder() is None


# The checks every engine runs (tests/spark/test_spark_warehouse.py imports them).
ENGINE_CHECKS = (
    test_a_raw_load_is_what_latest_load_and_last_order_date_then_read,
    test_retiring_periods_deletes_their_rows_from_every_built_mart_and_no_other,
    test_the_training_snapshot_reads_typed_rows_in_order_and_samples_the_same_customers,
    test_labelled_periods_are_the_snapshots_and_refuse_labels_of_another_window,
    test_the_feature_reads_name_the_newest_period_and_read_each_table,
    test_the_scorers_export_of_the_current_features_holds_their_rows_and_types,
    test_no_features_yet_has_no_newest_period,
    test_the_dbt_metadata_reads_count_summarise_preview_and_quote_failures,
    test_a_driver_error_leaves_as_a_warehouse_error_with_its_cause,
    test_matured_scores_are_the_scores_of_labelled_periods_by_models_that_had_not_seen_them,
    test_scores_without_a_column_are_refused_before_anything_is_written,
    test_realized_performance_is_replaced_whole_and_read_back_by_period,
    test_consistent_reads_read_through_a_view_that_writes_nothing,
    test_the_write_lock_through_the_interface_names_its_holder_and_refuses_a_second,
)
