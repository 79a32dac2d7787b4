"""One dbt project, two engines: the same models, seeds, data tests and unit tests build on
Spark (dbt-spark, session method, Parquet tables in a Hive catalog with an embedded Derby
metastore) and give the same rows as on Postgres (issue 26, items 2 and 6 at the dbt level).

The demo's generator makes a small history (200 customers, June to December 2025); its
files pass the raw-data contract once, and the same frames are loaded into Postgres and
into Spark (Parquet tables in the `raw` schema the sources name), each by the platform's
loader (the warehouse interface's load_raw_tables).
Each engine then runs what a first load and a later delivery run: `dbt build` of everything
but the analyst tables with the periods 2025-06-30 .. 2025-09-30, then the per-period marts
alone with 2025-09-30 .. 2025-11-30, so the second build replaces one period already built
(delete+insert on Postgres; the partition dropped and overwritten on Spark) and keeps the
three before it. `customer_features`, `churn_labels` and `training_snapshot` must then hold
the same rows on both engines, floats equal to 1e-9.

dbt runs in this process (dbtRunner) on both engines: dbt-spark's session method then finds
the SparkSession that loaded the raw tables and runs its SQL in it. A dbt in a subprocess
could not open the embedded Derby metastore while this process holds it (docs/spark-notes.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churn_assets.data.contract import RawTables, read_raw_tables
from churn_assets.data.generator import GeneratorConfig, generate, write_raw_files
from churn_assets.infra import spark, warehouse
from churn_assets.lib.dbt import ANALYTICS_SELECT, PERIOD_SELECT, dbt_build_args, dbt_build_env
from churn_assets.lib.dbt import environ as temporary_environ
from churn_assets.settings import DBT_PROJECT_DIR, Settings
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.spark.warehouse import SparkWarehouse
from tests.spark import SMALL_DATA_CONF

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # a JVM and two builds per engine: minutes

if not spark.java_available():
    pytest.skip(spark.JAVA_MISSING, allow_module_level=True)

WINDOW_DAYS = 90
# A first load's periods, then a delivery's: 2025-09-30 is built twice.
FIRST_BUILD = ["2025-06-30", "2025-07-31", "2025-08-31", "2025-09-30"]
SECOND_BUILD = ["2025-09-30", "2025-10-31", "2025-11-30"]
PERIODS = sorted({*FIRST_BUILD, *SECOND_BUILD})
# as_of + 90 days <= 2025-12-29, the last order date
LABELLED = ["2025-06-30", "2025-07-31", "2025-08-31", "2025-09-30"]
COMPARED = ("customer_features", "churn_labels", "training_snapshot")

Build = Callable[[list[str], str | None], None]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> RawTables:
    """The demo generator's files, small, read through the raw-data contract."""
    config = GeneratorConfig(n_customers=200, history_days=200)
    raw_dir = tmp_path_factory.mktemp("spark_raw")
    write_raw_files(generate(config), raw_dir)
    return read_raw_tables(raw_dir, now=datetime(2026, 1, 1))


def _dbt_builder(target: str, env: Mapping[str, str], target_dir: Path) -> Build:
    """Runs ``dbt build`` in this process as a Dagster dbt step does (its arguments and
    environment), on ``target``; ``select=None`` builds everything but the analyst tables."""
    from dbt.cli.main import dbtRunner

    def build(period_ends: list[str], select: str | None) -> None:
        args = [
            *dbt_build_args(window_days=WINDOW_DAYS, full_refresh=False),
            *(["--select", select] if select else ["--exclude", ANALYTICS_SELECT]),
            *("--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)),
            *("--target", target, "--target-path", str(target_dir)),
            *("--log-path", str(target_dir / "logs")),
        ]
        with temporary_environ({**env, **dbt_build_env(period_ends)}):
            result = dbtRunner().invoke(args)
        failures = [
            f"{node.node.name}: {node.status}: {node.message}"
            for node in (result.result or [])
            if str(node.status) in ("error", "fail", "skipped")
        ]
        assert result.success, f"dbt build on {target} failed: {failures or result.exception}"

    return build


def _build_twice(build: Build) -> None:
    build(FIRST_BUILD, None)
    build(SECOND_BUILD, PERIOD_SELECT)


@pytest.fixture(scope="module")
def on_postgres(
    raw: RawTables, new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, pd.DataFrame]:
    url = new_database()
    PostgresWarehouse(url).load_raw_tables(raw)
    env = warehouse.parse_url(url).dbt_env()
    _build_twice(_dbt_builder("local", env, tmp_path_factory.mktemp("dbt_postgres")))
    with warehouse.connect(url) as conn:
        marts = {table: _read_postgres(conn, table) for table in COMPARED}
    return {**marts, "sample": PostgresWarehouse(url).read_training_snapshot(customer_share=0.5)}


def _read_postgres(conn: Any, table: str) -> pd.DataFrame:
    with conn.cursor() as cur:
        cur.execute(f"select * from marts.{table}")
        names = [column.name for column in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=names)


@pytest.fixture(scope="module")
def on_spark(raw: RawTables, spark_settings: Settings) -> Iterator[dict[str, Any]]:
    session = spark.start_session(spark_settings, app_name="churn-test", in_process_derby=True)
    try:
        # A few thousand rows: each query's fixed costs dominate (planning, one task per
        # shuffle partition, code generation); dbt's statements run in this session too.
        for key, value in SMALL_DATA_CONF.items():
            session.conf.set(key, value)
        SparkWarehouse(spark_settings).load_raw_tables(raw)  # the platform's loader, in it
        target_dir = spark_settings.home / "dbt"
        env = spark.dbt_env(spark_settings, in_process_derby=True)  # dbt in this JVM
        _build_twice(_dbt_builder("spark", env, target_dir))
        yield {
            **{table: session.table(f"marts.{table}").toPandas() for table in COMPARED},
            "sample": SparkWarehouse(spark_settings).read_training_snapshot(customer_share=0.5),
            "partitions": {
                table: [row[0] for row in session.sql(f"show partitions marts.{table}").collect()]
                for table in COMPARED
            },
        }
    finally:
        spark.stop_jvm()


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """One period's rows as plain values: dates as ISO text, decimals as floats, sorted by
    the key, columns by name (Spark puts the partition column last)."""
    out = frame.copy()
    out["as_of"] = [value.isoformat() for value in pd.to_datetime(out["as_of"]).dt.date]
    for column in out.columns:
        if out[column].map(lambda value: isinstance(value, Decimal)).any():
            out[column] = out[column].astype(float)
    out = out.sort_values(["as_of", "customer_id"]).reset_index(drop=True)
    return out[sorted(out.columns)]


@pytest.mark.parametrize("table", COMPARED)
def test_spark_builds_the_same_rows_as_postgres(
    table: str, on_postgres: dict[str, pd.DataFrame], on_spark: dict[str, Any]
) -> None:
    expected, actual = _comparable(on_postgres[table]), _comparable(on_spark[table])
    assert list(actual.columns) == list(expected.columns)
    periods = LABELLED if table != "customer_features" else PERIODS
    assert sorted(expected["as_of"].unique()) == periods  # neither side is empty
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=0, atol=1e-9)


def test_both_warehouses_hand_training_the_same_frame_and_the_same_sample(
    on_postgres: dict[str, Any], on_spark: dict[str, Any]
) -> None:
    # what training reads through the interface: columns, order, dtypes and the md5 sample
    expected, actual = on_postgres["sample"], on_spark["sample"]
    assert 0 < len(expected) < len(on_postgres["training_snapshot"])
    pd.testing.assert_frame_equal(actual, expected, rtol=0, atol=1e-9)


def test_spark_keeps_the_per_period_marts_as_partitions_by_as_of(
    on_spark: dict[str, Any],
) -> None:
    # insert_overwrite on Spark: one Parquet partition per period; the second build
    # replaced 2025-09-30 and kept the three periods before it
    partitions = on_spark["partitions"]
    assert partitions["customer_features"] == [f"as_of={day}" for day in PERIODS]
    assert partitions["churn_labels"] == [f"as_of={day}" for day in LABELLED]
    assert partitions["training_snapshot"] == [f"as_of={day}" for day in LABELLED]


def test_the_compared_history_covers_labels_of_both_classes(
    on_postgres: dict[str, pd.DataFrame],
) -> None:
    labels = on_postgres["churn_labels"]
    assert set(labels["churned"]) == {0, 1}
    assert labels["as_of"].min() == date(2025, 6, 30)
