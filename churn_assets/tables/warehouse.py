"""The warehouse interface: every read and write of the warehouse from Python goes through
a :class:`Warehouse`, one implementation per engine
(:class:`churn_assets.tables.postgres.warehouse.PostgresWarehouse`,
:class:`churn_assets.tables.spark.warehouse.SparkWarehouse`), chosen by ``CHURN_ENGINE``
(:func:`churn_assets.tables.engines.open_warehouse`). An operation an engine does not offer
raises :class:`UnsupportedOperation` saying what to use instead.

Operations are named after what they mean to the platform (load the raw tables, read the
training snapshot of some periods, write a period's scores), never after SQL: the SQL of an
engine lives in its implementation. Tables cross the interface as pandas frames, in the
columns and dtypes the modules beside this one define (:mod:`~churn_assets.tables.raw`,
:mod:`~churn_assets.tables.snapshot`, :mod:`~churn_assets.tables.scores`,
:mod:`~churn_assets.tables.online_predictions`): an Arrow-native engine converts at its edge
(``pyarrow.Table.from_pandas`` / ``to_pandas``), and nothing above it knows.

Errors: an operation raises :class:`~churn_assets.infra.warehouse.WarehouseError` when the
warehouse cannot be reached or refuses it (the driver's error chained as its cause), never
a driver's own exception, so callers catch one type whatever the engine. Errors about the
data keep their own types (:class:`~churn_assets.tables.snapshot.LabelDefinitionError`,
``ValueError`` for a frame without its columns).

Why in ``tables/``: the operations speak of the platform's tables (the raw-data contract's
:class:`~churn_assets.data.contract.RawTables`, the shadow comparison's
:class:`~churn_assets.tables.online_predictions.ShadowGroup`), which live at the libraries'
rank, so ``infra/`` (below it: the vocabulary only) cannot name them; and the scorer and
``churn status`` use it outside Dagster, so it cannot live in ``defs/`` either.
``tables/`` is the plain library for the warehouse's tables, importable by the Dagster
resource (``defs/resources.py``, which hands a :class:`Warehouse` to every asset), by
``serving/`` and by ``app/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime
from typing import Any, Protocol

import pandas as pd

from churn_assets.data.contract import RawTables
from churn_assets.infra.warehouse import LockHolder, WarehouseError
from churn_assets.tables.online_predictions import PRUNE_BATCH_ROWS, ShadowGroup
from churn_assets.tables.raw import LoadResult
from churn_assets.tables.source import SourceCheck, SourceFingerprint, SourceState, SourceTables


class UnsupportedOperation(WarehouseError):
    """An operation this engine does not offer (yet); the message says what to use instead
    (e.g. the online prediction log on Spark)."""


class HeldLock(Protocol):
    """The write lock as its holder sees it (what :meth:`Warehouse.write_lock` yields).

    A run asks it before an irreversible step that follows a long computation (a registry
    write): a warehouse that restarted mid-run, or a session that was cut, can take the lock
    with it, and another run may already be rewriting the data this one used."""

    def still_held(self) -> bool:
        """Whether the lock is still this holder's. Never raises: unknown is lost."""
        ...

    def ensure_held(self, consequence: str) -> None:
        """Raise :class:`~churn_assets.infra.warehouse.WarehouseLockLost` (one line ending with
        ``consequence``, e.g. "nothing registered") unless :meth:`still_held`."""
        ...


class PredictionLogWriter(Protocol):
    """The online scorer's session with the prediction log: one writer thread appends the
    rows the requests formatted and keeps the log to its retention. Creates the log before
    its first write; after a failure the next call starts over (reconnects)."""

    def append(self, lines: Sequence[str]) -> None:
        """Append ``lines``, each one row in the log's line format
        (:data:`~churn_assets.tables.online_predictions.LINE_FIELDS`), all or none. Raises
        :class:`~churn_assets.infra.warehouse.WarehouseError` when they were not written."""
        ...

    def prune_before(self, cutoff: datetime, rows: int = PRUNE_BATCH_ROWS) -> int:
        """Delete up to ``rows`` rows scored before ``cutoff``; returns how many went (fewer
        than ``rows``: none older is left). A short step, so the writer interleaves it with
        its appends. Raises :class:`~churn_assets.infra.warehouse.WarehouseError`."""
        ...

    def close(self) -> None:
        """Let go of the session (idempotent)."""
        ...


class Warehouse(Protocol):
    """Every operation the platform's Python code performs on the warehouse.

    Each call is its own unit of work (committed when it returns, nothing left half-written
    when it raises), except inside :meth:`consistent_reads`."""

    # --- one writer at a time -------------------------------------------------------------

    def write_lock(
        self,
        holder: str,
        timeout_seconds: float,
        on_wait: Callable[[LockHolder | None], None] = ...,
    ) -> AbstractContextManager[HeldLock]:
        """Hold the warehouse's write lock for the block: one writing run at a time.

        ``holder`` (e.g. ``run <run id> (<job>)``) names this holder to the others. Waits up
        to ``timeout_seconds`` (0: not at all), calling ``on_wait`` once with the current
        holder, then raises :class:`~churn_assets.infra.warehouse.WarehouseBusy` naming it.
        The lock must go with its holder's process (no stale lock after a crash)."""
        ...

    def lock_holder(self) -> LockHolder | None:
        """Who holds the write lock now (None: nobody)."""
        ...

    def consistent_reads(self) -> AbstractContextManager[Warehouse]:
        """A read-only view of one state of the warehouse for the block: every read through
        it sees the same data, whatever other sessions commit meanwhile (training reads
        its periods, rows and raw load through one)."""
        ...

    # --- raw data -------------------------------------------------------------------------

    def load_raw_tables(self, tables: RawTables, dagster_run_id: str | None = None) -> LoadResult:
        """Replace the raw customers and orders with ``tables``, all or nothing, and record
        the load (files, sha256, rows, run) in ``raw.loads``."""
        ...

    def observe_source(self, source: SourceTables) -> SourceState:
        """Row counts and newest order of the source tables (``CHURN_RAW_SOURCE=tables``),
        cheap enough for every sensor tick: the source asset's data version. Raises
        ``ValueError`` naming a table or column that is missing."""
        ...

    def check_source(self, source: SourceTables, now: datetime | None = None) -> SourceCheck:
        """The raw-data contract checked on the source tables in the engine, every broken
        rule a :class:`~churn_assets.data.contract.Violation` naming the table, column,
        rule and offending rows (``now``: the validation time, as for files). Reads only."""
        ...

    def load_raw_from_source(
        self,
        source: SourceTables,
        checked: SourceFingerprint,
        dagster_run_id: str | None = None,
    ) -> LoadResult:
        """Replace the raw customers and orders with the source tables' rows, copied inside
        the engine, all or nothing, and record the load in ``raw.loads`` (tables and
        fingerprint where files record sha256). Raises
        :class:`~churn_assets.tables.source.SourceChanged`, writing nothing, when the tables
        no longer hold what ``checked`` (from :meth:`check_source`) describes."""
        ...

    def latest_load(self) -> dict[str, Any] | None:
        """The newest row of ``raw.loads``: what the raw tables hold now (None: nothing was
        ever loaded by this version of the loader)."""
        ...

    def last_order_date(self) -> date | None:
        """The newest order date in the raw orders: what the platform knows up to (None: no
        raw tables here)."""
        ...

    def retire_periods(self, period_ends: Sequence[str]) -> int:
        """Delete the rows of ``period_ends`` (ISO dates) from every per-period mart, in one
        unit of work; returns the rows deleted. A mart never built is skipped."""
        ...

    # --- features (the dbt marts) ---------------------------------------------------------

    def labelled_periods(self, window_days: int) -> list[date]:
        """The periods of the training snapshot, oldest first, once every label has been
        checked against this definition (``window_days``); raises
        :class:`~churn_assets.tables.snapshot.LabelDefinitionError` naming labels built with
        another window."""
        ...

    def count_training_rows(self, periods: Sequence[date]) -> int:
        """Rows of the training snapshot in ``periods``."""
        ...

    def read_training_snapshot(
        self, periods: Sequence[date] | None = None, customer_share: float = 1.0
    ) -> pd.DataFrame:
        """The training snapshot of ``periods`` (None: every period), one row per period and
        customer, ordered by ``as_of`` then ``customer_id``, in ``SNAPSHOT_DTYPES``.
        ``customer_share`` < 1 keeps a deterministic sample of customers (the first 32 bits
        of the md5 of the id below the share: the same customers in every period and on
        every engine), sampled in the warehouse so the rest never reaches memory."""
        ...

    def newest_feature_period(self) -> date | None:
        """The newest period of the per-period features (None: none built yet)."""
        ...

    def read_period_features(self, periods: Sequence[date]) -> pd.DataFrame:
        """The per-period features (``marts.customer_features``) of ``periods``, ordered and
        typed as :meth:`read_training_snapshot` (no label column)."""
        ...

    def read_current_features(self) -> pd.DataFrame:
        """The newest period's features (``marts.current_features``): what batch scoring,
        the drift monitor and the scorer's online copy read; ordered and typed as above."""
        ...

    # --- what a dbt step built (the run's metadata) ---------------------------------------

    def count_table_rows(self, schema: str, name: str) -> int:
        """Rows of the table ``schema.name``."""
        ...

    def rows_by_period(self, table: str, period_ends: Sequence[str]) -> pd.DataFrame:
        """For the per-period mart ``table`` (one of ``PERIOD_TABLES``): ``as_of`` (a date),
        ``rows`` and ``label_rate`` (None for the features, which have no label) of each of
        ``period_ends`` it holds, oldest first."""
        ...

    def preview_period(self, table: str, period_end: str, rows: int) -> pd.DataFrame:
        """The first ``rows`` rows, by customer id, of one period of a per-period mart."""
        ...

    def read_test_failures(self, test: str, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` readable ``failure`` lines stored by the failing singular dbt test
        ``test``, each with its count of failing rows. Raises
        :class:`~churn_assets.infra.warehouse.WarehouseError` when it stored none."""
        ...

    # --- batch scores and realized performance --------------------------------------------

    def write_scores(self, scores: pd.DataFrame) -> None:
        """Put one period's scores (one model version; ``SCORE_COLUMNS``) in the history,
        replacing that version's earlier scores of the period, and make them the current
        scores; all or nothing."""
        ...

    def read_matured_scores(self) -> pd.DataFrame:
        """Each scored customer of every period whose labels exist (``MATURED_SCORE_COLUMNS``),
        counting only scores of a model trained on data up to the period. Empty (no
        columns) before anything was scored and labelled."""
        ...

    def write_realized_performance(self, realized: pd.DataFrame) -> None:
        """Replace the realized performance table with ``realized`` (``REALIZED_COLUMNS``)."""
        ...

    def read_realized_performance(self) -> pd.DataFrame:
        """The realized performance table (``REALIZED_COLUMNS``), by period then version; no
        rows when it was never written."""
        ...

    # --- the online prediction log --------------------------------------------------------

    def create_prediction_log(self) -> None:
        """Create the prediction log if missing (idempotent), so its readers never meet a
        missing table; an older log is brought up to date, keeping its rows."""
        ...

    def prediction_log_writer(self) -> PredictionLogWriter:
        """A session for the scorer's log writer (nothing is opened until its first call)."""
        ...

    def prune_prediction_log(self, cutoff: datetime, batch_rows: int = PRUNE_BATCH_ROWS) -> int:
        """Delete every logged prediction scored before ``cutoff``, ``batch_rows`` at a time,
        each batch its own unit of work; returns how many went. No log: deletes nothing
        and creates nothing."""
        ...

    def read_shadow_results(self) -> pd.DataFrame:
        """Every logged prediction with a shadow result, as champion and challenger
        (``SHADOW_COLUMNS``), oldest first. Empty when no log exists (creates nothing)."""
        ...

    def read_shadow_groups(self) -> list[ShadowGroup]:
        """:meth:`read_shadow_results` aggregated per (champion, challenger) pair in the
        warehouse, with the same results: what ``churn status`` and the shadow comparison
        read. Empty when no log exists (creates nothing)."""
        ...
