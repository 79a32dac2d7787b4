"""The raw tables on Spark (:mod:`churn_assets.tables.raw`): Parquet tables in the ``raw``
schema of the Hive catalog, and ``raw.loads``.

Parquet tables have no transactions. A load first writes both frames to staging tables
(the long part, where a failure is likely: the raw tables are untouched until both are
written), then overwrites ``raw.customers`` and ``raw.orders`` from them (a file rename per
table) and records the load. A failure between the two overwrites leaves new customers
beside old orders, with no new row in ``raw.loads``: the next load replaces both. The
tables are overwritten in place rather than dropped, so dbt's staging views keep pointing
at them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from churn_assets.data.contract import RawTables, file_sha256
from churn_assets.schema import PERIOD_TABLES
from churn_assets.tables.raw import LOADS_TABLE, RAW_SCHEMA, LoadResult
from churn_assets.tables.spark.common import dates_sql, exists, parse_dates, scalar, to_spark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_LOADS_DDL = """
    load_id          bigint,
    dagster_run_id   string,
    customers_file   string,
    customers_sha256 string,
    customers_rows   bigint,
    orders_file      string,
    orders_sha256    string,
    orders_rows      bigint,
    loaded_at        timestamp
"""


def staging_table(table: str) -> str:
    """Where a load writes a raw table's new rows before it replaces the table's."""
    return f"{RAW_SCHEMA}._incoming_{table}"


def load_raw_tables(
    session: SparkSession, tables: RawTables, dagster_run_id: str | None = None
) -> LoadResult:
    """Replaces ``raw.customers`` and ``raw.orders`` with ``tables`` (each row stamped
    ``_loaded_at``, the load's time) and records the load in ``raw.loads``."""
    from pyspark.sql import functions

    frames = {"customers": tables.customers, "orders": tables.orders}
    files = {"customers": tables.customers_file, "orders": tables.orders_file}
    digests = {table: file_sha256(path) for table, path in files.items()}
    loaded_at = datetime.now(UTC)
    session.sql(f"create database if not exists {RAW_SCHEMA}")
    for table, frame in frames.items():
        rows = to_spark(session, frame).withColumn("_loaded_at", functions.lit(loaded_at))
        rows.write.mode("overwrite").format("parquet").saveAsTable(staging_table(table))
    for table in frames:
        target = f"{RAW_SCHEMA}.{table}"
        session.sql(
            f"create table if not exists {target} like {staging_table(table)} using parquet"
        )
        session.sql(f"insert overwrite table {target} select * from {staging_table(table)}")
    row_counts = {table: len(frame) for table, frame in frames.items()}
    sources = {table: str(path) for table, path in files.items()}
    load_id = record_load(session, dagster_run_id, sources, digests, row_counts, loaded_at)
    for table in frames:
        session.sql(f"drop table if exists {staging_table(table)}")
    return LoadResult(row_counts, loaded_at, load_id, digests)


def record_load(
    session: SparkSession,
    dagster_run_id: str | None,
    sources: Mapping[str, str],
    digests: Mapping[str, str],
    rows: Mapping[str, int],
    loaded_at: datetime,
) -> int:
    """Append the load's row to ``raw.loads`` (per raw table: where it came from, its digest
    and rows); returns its load_id (one more than the newest: the write lock keeps loads
    one at a time)."""
    session.sql(f"create table if not exists {LOADS_TABLE} ({_LOADS_DDL}) using parquet")
    previous = scalar(session, f"select coalesce(max(load_id), 0) from {LOADS_TABLE}")
    load_id = int(previous) + 1
    row = (
        load_id,
        dagster_run_id,
        *(sources["customers"], digests["customers"], rows["customers"]),
        *(sources["orders"], digests["orders"], rows["orders"]),
        loaded_at,
    )
    schema = session.table(LOADS_TABLE).schema
    session.createDataFrame([row], schema=schema).write.insertInto(LOADS_TABLE)
    return load_id


def latest_load(session: SparkSession) -> dict[str, Any] | None:
    """The newest row of ``raw.loads`` (None: never loaded)."""
    if not exists(session, LOADS_TABLE):
        return None
    rows = (
        session.sql(f"select * from {LOADS_TABLE} order by load_id desc limit 1")
        .toArrow()
        .to_pylist()
    )
    return rows[0] if rows else None


def last_order_date(session: SparkSession) -> date | None:
    """The newest order date in the raw data (None: no raw tables here)."""
    if not exists(session, f"{RAW_SCHEMA}.orders"):
        return None
    day: date | None = scalar(
        session, f"select cast(max(ordered_at) as date) from {RAW_SCHEMA}.orders"
    )
    return day


def retire_periods(session: SparkSession, period_ends: Sequence[str]) -> int:
    """Drop the ``as_of`` partitions of ``period_ends`` from every built per-period mart
    (dbt builds them partitioned by ``as_of``: dropping a partition deletes its files);
    returns the rows they held. Not one unit of work: a failure half-way leaves the
    periods retired from the marts before it, and retiring again finishes the job."""
    if not period_ends:
        return 0
    days = dates_sql(period_ends)
    deleted = 0
    for table in PERIOD_TABLES:
        if not exists(session, table):
            continue  # never built
        rows = scalar(session, f"select count(*) from {table} where as_of in ({days})")
        partitions = ", ".join(
            f"partition (as_of = '{day.isoformat()}')" for day in parse_dates(period_ends)
        )
        session.sql(f"alter table {table} drop if exists {partitions}")
        deleted += int(rows)
    return deleted
