"""The warehouse interface on Spark (:class:`SparkWarehouse`): the same behaviour checks as
on Postgres, one definition each (``tests/integration/test_warehouse_interface.py``,
imported below and run here with this module's ``wh`` and ``hands``), then what is Spark's
own: the per-period marts lose partitions, the prediction log is refused with what to use
instead, and the lock is a file lock that goes with its process.

One SparkSession (one JVM, an embedded Derby metastore) for the module; each test starts
from an empty catalog (its schemas dropped), and the JVM is stopped at the end.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from churn_assets.infra import spark
from churn_assets.infra.warehouse import WarehouseBusy
from churn_assets.schema import CHURN_LABELS_TABLE, CUSTOMER_FEATURES_TABLE, PERIOD_TABLES
from churn_assets.settings import Settings
from churn_assets.tables.engines import open_warehouse
from churn_assets.tables.source import CONTRACT
from churn_assets.tables.spark import lock
from churn_assets.tables.spark.common import to_spark
from churn_assets.tables.spark.warehouse import SparkWarehouse
from churn_assets.tables.warehouse import UnsupportedOperation, Warehouse
from tests.integration.source_support import Row, Shop
from tests.integration.test_raw_source_tables import SOURCE_CHECKS
from tests.integration.test_warehouse_interface import (
    ENGINE_CHECKS,
    FEB,
    JAN,
    MART_COLUMNS,
    Hands,
    marts,  # noqa: F401  (a fixture: made through this module's hands)
)
from tests.spark import SMALL_DATA_CONF

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # a JVM: ~10 s to start

if not spark.java_available():
    pytest.skip(spark.JAVA_MISSING, allow_module_level=True)

# The same checks as on Postgres, collected here (pytest runs each test_* name of a module).
for _check in (*ENGINE_CHECKS, *SOURCE_CHECKS):
    globals()[_check.__name__] = _check

_SCHEMAS = ("raw", "marts", "scoring", "test_failures", "shop")
# The tests' Postgres types in Spark's words (numeric: a decimal, as dbt-spark builds it; a
# timestamp without zone: timestamp_ntz, Spark's timestamp being an instant).
_SPARK_TYPES = {
    "text": "string",
    "date": "date",
    "integer": "int",
    "bigint": "bigint",
    "numeric": "decimal(38,6)",
    "double precision": "double",
    "boolean": "boolean",
    "timestamp": "timestamp_ntz",
    "timestamptz": "timestamp",
}


class SparkHands:
    def __init__(self, session: Any, settings: Settings) -> None:
        from pyspark.errors import PySparkException

        self.session = session
        self.settings = settings
        self.driver_error = PySparkException

    def make_tables(self, tables: dict[str, pd.DataFrame]) -> None:
        """Parquet tables as dbt-spark builds them: the per-period marts partitioned by
        ``as_of`` (its column last), the others not."""
        for table, frame in tables.items():
            self.session.sql(f"create database if not exists {table.split('.')[0]}")
            types = {c: _SPARK_TYPES[t] for c, t in MART_COLUMNS[table].items()}
            rows = to_spark(self.session, frame).selectExpr(
                *(f"cast({column} as {kind}) as {column}" for column, kind in types.items())
            )
            writer = rows.coalesce(1).write.format("parquet")
            if table in PERIOD_TABLES:
                writer = writer.partitionBy("as_of")
            writer.saveAsTable(table)

    def drop(self, table: str) -> None:
        self.session.sql(f"drop table {table}")

    def count(self, table: str) -> int:
        return int(self.session.table(table).count())

    def exists(self, table: str) -> bool:
        return bool(self.session.catalog.tableExists(table))

    def store_test_failures(self, test: str, failures: list[str]) -> None:
        self.session.sql("create database if not exists test_failures")
        rows = self.session.createDataFrame([(f,) for f in failures], "failure string")
        rows.coalesce(1).write.format("parquet").saveAsTable(f"test_failures.{test}")

    def another(self) -> Warehouse:
        return SparkWarehouse(self.settings)

    def make_source(self, shop: Shop) -> None:
        self.session.sql("drop database if exists shop cascade")
        self.session.sql("create database shop")
        for name, table in shop.tables.items():
            types = {column: _SPARK_TYPES[kind] for column, kind in table.columns.items()}
            rows = self._rows(types, table.rows)
            rows.write.format("parquet").saveAsTable(f"shop.{name}")

    def append(self, table: str, rows: list[Row]) -> None:
        schema = self.session.table(f"shop.{table}").schema
        types = {field.name: field.dataType.simpleString() for field in schema}
        self._rows(types, rows).write.insertInto(f"shop.{table}")

    def _rows(self, types: dict[str, str], rows: list[Row]) -> Any:
        """The rows (text) as one partition (one file: read back in this order), each
        value cast to its column's Spark type."""
        text = self.session.createDataFrame(rows, ", ".join(f"{c} string" for c in types))
        return text.coalesce(1).selectExpr(*(f"cast({c} as {t}) as {c}" for c, t in types.items()))

    def raw_rows(self, table: str) -> list[tuple[object, ...]]:
        if not self.exists(f"raw.{table}"):
            return []
        columns = ", ".join(spec.name for spec in CONTRACT[table])
        rows = self.session.sql(f"select {columns} from raw.{table} order by 1").collect()
        return [tuple(row) for row in rows]


@pytest.fixture(scope="module")
def session(spark_settings: Settings) -> Iterator[Any]:
    started = spark.start_session(
        spark_settings, app_name="churn-test-warehouse", in_process_derby=True
    )
    try:
        for key, value in SMALL_DATA_CONF.items():
            started.conf.set(key, value)
        yield started
    finally:
        spark.stop_jvm()


@pytest.fixture
def hands(session: Any, spark_settings: Settings) -> Hands:
    for schema in _SCHEMAS:  # an empty catalog for every test, as a fresh database on Postgres
        session.sql(f"drop database if exists {schema} cascade")
    return SparkHands(session, spark_settings)


@pytest.fixture
def wh(hands: Hands, spark_settings: Settings) -> Warehouse:
    return open_warehouse(spark_settings)  # CHURN_ENGINE=spark chooses SparkWarehouse


# --- Spark's own ------------------------------------------------------------------------


def test_the_engine_setting_chooses_the_spark_warehouse(wh: Warehouse) -> None:
    assert isinstance(wh, SparkWarehouse)


def test_the_per_period_marts_lose_partitions_and_read_with_as_of_first(
    wh: Warehouse,
    marts: Hands,  # noqa: F811
    session: Any,
) -> None:
    wh.retire_periods([JAN.isoformat(), "2025-03-31"])  # March was never built: nothing
    for table in (CUSTOMER_FEATURES_TABLE, CHURN_LABELS_TABLE):
        partitions = [row[0] for row in session.sql(f"show partitions {table}").collect()]
        assert partitions == [f"as_of={FEB.isoformat()}"], table
    # Spark stores the partition column last; the frame has it first, as the models do
    assert wh.read_period_features([FEB]).columns[0] == "as_of"


def test_the_prediction_log_is_refused_with_what_to_use_and_reads_find_no_log(
    wh: Warehouse,
) -> None:
    with pytest.raises(UnsupportedOperation, match="CHURN_ENGINE=postgres"):
        wh.prediction_log_writer()
    with pytest.raises(UnsupportedOperation, match="not kept on Spark"):
        wh.create_prediction_log()
    assert wh.prune_prediction_log(datetime.now(UTC)) == 0
    assert wh.read_shadow_results().empty
    assert wh.read_shadow_groups() == []


def test_the_write_lock_goes_with_its_process(wh: Warehouse, spark_settings: Settings) -> None:
    path = lock.lock_path(spark_settings)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from churn_assets.tables.spark.lock import write_lock; "
            f"lock = write_lock(Path({str(path)!r}), 'run crashed', 0); lock.__enter__(); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        current = wh.lock_holder()
        assert current is not None and current.name == "run crashed"
        with pytest.raises(WarehouseBusy, match="run crashed"), wh.write_lock("run next", 0):
            pytest.fail("the lock was granted twice")
    finally:
        holder.kill()
        holder.wait()
    assert wh.lock_holder() is None  # killed: the kernel let go of its lock
    with wh.write_lock("run next", 0) as held:
        assert held.still_held()
