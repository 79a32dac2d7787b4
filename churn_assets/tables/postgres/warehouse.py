"""The Postgres implementation of the warehouse interface
(:class:`churn_assets.tables.warehouse.Warehouse`): psycopg2 and the Postgres SQL of every
Python read and write, one module per table family beside this one. The connection
helpers and the advisory write lock stay in :mod:`churn_assets.infra.warehouse` (the server,
its URL and its lock, also used by the CLI without this package).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

import pandas as pd
import psycopg2
import psycopg2.extensions

from churn_assets.data.contract import RawTables
from churn_assets.infra import warehouse
from churn_assets.infra.warehouse import HeldWriteLock, LockHolder, WarehouseError
from churn_assets.schema import CURRENT_FEATURES_TABLE, CUSTOMER_FEATURES_TABLE
from churn_assets.tables.online_predictions import PRUNE_BATCH_ROWS, ShadowGroup
from churn_assets.tables.postgres import marts, online_predictions, raw, snapshot
from churn_assets.tables.postgres import scores as score_tables
from churn_assets.tables.postgres import source as source_tables
from churn_assets.tables.raw import LoadResult
from churn_assets.tables.source import SourceCheck, SourceFingerprint, SourceState, SourceTables
from churn_assets.urls import mask_url

_T = TypeVar("_T")


class PostgresWarehouse:
    """The warehouse at ``url`` (``postgresql://``, TCP or a unix socket).

    Each operation opens a connection of its own, commits when it returns and rolls back
    when it raises, then closes it (nothing to keep alive between steps, nothing to
    reconnect after a restart), except inside :meth:`consistent_reads`, whose view reads
    through one read-only repeatable-read transaction. A driver error leaves as a
    :class:`WarehouseError` with the driver's error as its cause.
    """

    def __init__(
        self, url: str, *, _connection: psycopg2.extensions.connection | None = None
    ) -> None:
        self.url = url
        self._connection = _connection  # set only on a consistent_reads view

    def __repr__(self) -> str:
        return f"PostgresWarehouse({mask_url(self.url)!r})"

    @contextlib.contextmanager
    def _session(self) -> Iterator[psycopg2.extensions.connection]:
        try:
            if self._connection is not None:
                yield self._connection
            else:
                with warehouse.connect(self.url) as conn:
                    yield conn
        except psycopg2.Error as exc:
            raise WarehouseError(str(exc).strip() or type(exc).__name__) from exc

    def _run(self, operation: Callable[[psycopg2.extensions.connection], _T]) -> _T:
        with self._session() as conn:
            return operation(conn)

    # --- one writer at a time -------------------------------------------------------------

    def write_lock(
        self,
        holder: str,
        timeout_seconds: float,
        on_wait: Callable[[LockHolder | None], None] = lambda _: None,
    ) -> contextlib.AbstractContextManager[HeldWriteLock]:
        """A session-level advisory lock on a connection of its own
        (:func:`churn_assets.infra.warehouse.write_lock`)."""
        return warehouse.write_lock(self.url, holder, timeout_seconds, on_wait)

    def lock_holder(self) -> LockHolder | None:
        return self._run(warehouse.lock_holder)

    @contextlib.contextmanager
    def consistent_reads(self) -> Iterator[PostgresWarehouse]:
        if self._connection is not None:  # already one state
            yield self
            return
        with self._session() as conn:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            yield PostgresWarehouse(self.url, _connection=conn)

    # --- raw data -------------------------------------------------------------------------

    def load_raw_tables(self, tables: RawTables, dagster_run_id: str | None = None) -> LoadResult:
        return self._run(
            functools.partial(raw.load_raw_tables, tables=tables, dagster_run_id=dagster_run_id)
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
            )
        )

    def latest_load(self) -> dict[str, Any] | None:
        return self._run(raw.latest_load)

    def last_order_date(self) -> date | None:
        return self._run(raw.last_order_date)

    def retire_periods(self, period_ends: Sequence[str]) -> int:
        return self._run(functools.partial(raw.retire_periods, period_ends=period_ends))

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
                snapshot.read_training_snapshot, periods=periods, customer_share=customer_share
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
        self._run(functools.partial(score_tables.write_scores, scores=scores))

    def read_matured_scores(self) -> pd.DataFrame:
        return self._run(score_tables.read_matured_scores)

    def write_realized_performance(self, realized: pd.DataFrame) -> None:
        self._run(functools.partial(score_tables.write_realized, realized=realized))

    def read_realized_performance(self) -> pd.DataFrame:
        return self._run(score_tables.read_realized)

    # --- the online prediction log --------------------------------------------------------

    def create_prediction_log(self) -> None:
        self._run(online_predictions.create_table)

    def prediction_log_writer(self) -> online_predictions.PostgresPredictionLogWriter:
        return online_predictions.PostgresPredictionLogWriter(self.url)

    def prune_prediction_log(self, cutoff: datetime, batch_rows: int = PRUNE_BATCH_ROWS) -> int:
        return self._run(
            functools.partial(online_predictions.prune, cutoff=cutoff, batch_rows=batch_rows)
        )

    def read_shadow_results(self) -> pd.DataFrame:
        return self._run(online_predictions.read_shadow_results)

    def read_shadow_groups(self) -> list[ShadowGroup]:
        return self._run(online_predictions.read_shadow_groups)
