"""The Spark implementation of the warehouse interface
(:class:`churn_assets.tables.warehouse.Warehouse`): Parquet tables in the Hive catalog the
settings name, read and written through the process's SparkSession, with pandas in and out
through Arrow. The SQL of each table family is in the module beside this one; the write
lock is a file lock (:mod:`churn_assets.tables.spark.lock`).

Nothing here imports pyspark until an operation runs, so choosing the engine
(:func:`churn_assets.tables.engines.open_warehouse`) needs neither pyspark nor a JVM.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pandas as pd

from churn_assets.data.contract import RawTables
from churn_assets.infra import spark
from churn_assets.infra.warehouse import LockHolder, WarehouseError
from churn_assets.schema import (
    CURRENT_FEATURES_TABLE,
    CUSTOMER_FEATURES_TABLE,
    TRAINING_SNAPSHOT_TABLE,
)
from churn_assets.settings import Settings
from churn_assets.tables.online_predictions import PRUNE_BATCH_ROWS, SHADOW_COLUMNS, ShadowGroup
from churn_assets.tables.raw import LoadResult
from churn_assets.tables.source import SourceCheck, SourceFingerprint, SourceState, SourceTables
from churn_assets.tables.spark import lock, marts, raw, snapshot
from churn_assets.tables.spark import scores as score_tables
from churn_assets.tables.spark import source as source_tables
from churn_assets.tables.warehouse import UnsupportedOperation

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_T = TypeVar("_T")

# Said by the prediction log's operations: the scorer writes a row per request, which a
# table of Parquet files cannot take (one job and a set of files per append).
PREDICTION_LOG_ON_POSTGRES = (
    "the online prediction log is not kept on Spark: the scorer appends a row per request, "
    "and Parquet tables take one job and new files per append. Run the scorer against a "
    "Postgres warehouse for its log (CHURN_ENGINE=postgres, CHURN_WAREHOUSE_URL)"
)


class SparkWarehouse:
    """The Spark warehouse these settings name (master, warehouse directory, metastore).

    Operations run in the process's active SparkSession, started on first use with the
    platform's properties (:func:`churn_assets.infra.spark.start_session`), so a step's
    reads and writes and its in-process dbt share one JVM; the caller stops it
    (:func:`churn_assets.infra.spark.stop_jvm`) before another process needs an embedded
    metastore. A pyspark or JVM error leaves as a :class:`WarehouseError` with the
    driver's error as its cause.

    Units of work: Parquet tables have no transactions. Each write is written so that a
    failure in its long part (the rows) leaves the tables as they were, and each module
    says what a failure between its final steps leaves (:mod:`.raw`, :mod:`.source`,
    :mod:`.scores`); a
    second run of the same write repairs it. The write lock keeps the platform's writers
    one at a time.
    """

    def __init__(self, settings: Settings, *, _read_only: bool = False) -> None:
        self.settings = settings
        self._read_only = _read_only  # set only on a consistent_reads view

    def __repr__(self) -> str:
        return (
            f"SparkWarehouse(master={self.settings.spark_master!r}, "
            f"warehouse={self.settings.spark_warehouse_dir!r})"
        )

    def _session(self) -> SparkSession:
        if not spark.java_available():
            raise WarehouseError(spark.JAVA_MISSING)
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise WarehouseError(
                "CHURN_ENGINE=spark needs pyspark: pip install -e '.[spark]'"
            ) from None
        return SparkSession.getActiveSession() or spark.start_session(self.settings)

    def _run(self, operation: Callable[[SparkSession], _T], *, writes: bool = False) -> _T:
        if writes and self._read_only:
            raise WarehouseError(
                "a consistent_reads view of the Spark warehouse is read-only: write through "
                "the warehouse itself"
            )
        session = self._session()
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException

        try:
            return operation(session)
        except (PySparkException, Py4JError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WarehouseError(first) from exc

    # --- one writer at a time -------------------------------------------------------------

    def write_lock(
        self,
        holder: str,
        timeout_seconds: float,
        on_wait: Callable[[LockHolder | None], None] = lambda _: None,
    ) -> contextlib.AbstractContextManager[lock.HeldFileLock]:
        """A file lock beside the metastore (:mod:`churn_assets.tables.spark.lock`, which
        says what it guards and its limits); needs no session."""
        return lock.write_lock(lock.lock_path(self.settings), holder, timeout_seconds, on_wait)

    def lock_holder(self) -> LockHolder | None:
        return lock.lock_holder(lock.lock_path(self.settings))

    @contextlib.contextmanager
    def consistent_reads(self) -> Iterator[SparkWarehouse]:
        """A read-only view (its writes raise :class:`WarehouseError`).

        What it guarantees on Spark is less than Postgres's repeatable read: each read is
        one query, which lists each table's Parquet files once and reads those, so one read
        sees one state of every table it reads; two reads in the block may see different
        states if something writes in between. The platform's writers hold the write lock
        for their run, so none writes while a run that holds it reads (training reads its
        periods, rows and raw load under its run's lock); dbt, which replaces a partition's
        files, runs in the steps of that same run.
        """
        yield self if self._read_only else SparkWarehouse(self.settings, _read_only=True)

    # --- raw data -------------------------------------------------------------------------

    def load_raw_tables(self, tables: RawTables, dagster_run_id: str | None = None) -> LoadResult:
        return self._run(
            functools.partial(raw.load_raw_tables, tables=tables, dagster_run_id=dagster_run_id),
            writes=True,
        )

    def observe_source(self, source: SourceTables) -> SourceState:
        return self._run(functools.partial(source_tables.observe, source=source))

    def check_source(self, source: SourceTables, now: datetime | None = None) -> SourceCheck:
        return self._run(functools.partial(source_tables.check, source=source, now=now))

    def load_raw_from_source(
        self,
        source: SourceTables,
        checked: SourceFingerprint,
        dagster_run_id: str | None = None,
    ) -> LoadResult:
        return self._run(
            functools.partial(
                source_tables.load, source=source, checked=checked, dagster_run_id=dagster_run_id
            ),
            writes=True,
        )

    def latest_load(self) -> dict[str, Any] | None:
        return self._run(raw.latest_load)

    def last_order_date(self) -> date | None:
        return self._run(raw.last_order_date)

    def retire_periods(self, period_ends: Sequence[str]) -> int:
        return self._run(
            functools.partial(raw.retire_periods, period_ends=period_ends), writes=True
        )

    # --- features -------------------------------------------------------------------------

    def labelled_periods(self, window_days: int) -> list[date]:
        return self._run(functools.partial(snapshot.labelled_periods, window_days=window_days))

    def count_training_rows(self, periods: Sequence[date]) -> int:
        return self._run(functools.partial(snapshot.count_rows, periods=periods))

    def read_training_snapshot(
        self, periods: Sequence[date] | None = None, customer_share: float = 1.0
    ) -> pd.DataFrame:
        return self._run(
            functools.partial(
                snapshot.read_feature_table,
                table=TRAINING_SNAPSHOT_TABLE,
                periods=periods,
                customer_share=customer_share,
            )
        )

    def newest_feature_period(self) -> date | None:
        return self._run(snapshot.newest_period)

    def read_period_features(self, periods: Sequence[date]) -> pd.DataFrame:
        return self._run(
            functools.partial(
                snapshot.read_feature_table, table=CUSTOMER_FEATURES_TABLE, periods=periods
            )
        )

    def read_current_features(self) -> pd.DataFrame:
        return self._run(
            functools.partial(snapshot.read_feature_table, table=CURRENT_FEATURES_TABLE)
        )

    # --- what a dbt step built ------------------------------------------------------------

    def count_table_rows(self, schema: str, name: str) -> int:
        return self._run(functools.partial(marts.count_rows, schema=schema, name=name))

    def rows_by_period(self, table: str, period_ends: Sequence[str]) -> pd.DataFrame:
        return self._run(
            functools.partial(marts.rows_by_period, table=table, period_ends=period_ends)
        )

    def preview_period(self, table: str, period_end: str, rows: int) -> pd.DataFrame:
        return self._run(
            functools.partial(marts.preview_period, table=table, period_end=period_end, rows=rows)
        )

    def read_test_failures(self, test: str, limit: int) -> list[tuple[str, int]]:
        return self._run(functools.partial(marts.test_failures, test=test, limit=limit))

    # --- batch scores and realized performance --------------------------------------------

    def write_scores(self, scores: pd.DataFrame) -> None:
        self._run(functools.partial(score_tables.write_scores, scores=scores), writes=True)

    def read_matured_scores(self) -> pd.DataFrame:
        return self._run(score_tables.read_matured_scores)

    def write_realized_performance(self, realized: pd.DataFrame) -> None:
        self._run(functools.partial(score_tables.write_realized, realized=realized), writes=True)

    def read_realized_performance(self) -> pd.DataFrame:
        return self._run(score_tables.read_realized)

    # --- the online prediction log: not on Spark ------------------------------------------
    # Its writes raise UnsupportedOperation; its reads find no log, as on a Postgres
    # warehouse no scorer has written to (so `churn status` works on Spark).

    def create_prediction_log(self) -> NoReturn:
        raise UnsupportedOperation(PREDICTION_LOG_ON_POSTGRES)

    def prediction_log_writer(self) -> NoReturn:
        raise UnsupportedOperation(PREDICTION_LOG_ON_POSTGRES)

    def prune_prediction_log(self, cutoff: datetime, batch_rows: int = PRUNE_BATCH_ROWS) -> int:
        return 0  # no log: nothing to delete

    def read_shadow_results(self) -> pd.DataFrame:
        return pd.DataFrame(columns=list(SHADOW_COLUMNS))

    def read_shadow_groups(self) -> list[ShadowGroup]:
        return []
