"""Batch scores and realized performance on Spark (:mod:`churn_assets.tables.scores`):
Parquet tables in the ``scoring`` schema.

The history is partitioned by (``feature_as_of``, ``model_version``), so re-scoring a period
with the same version overwrites exactly that partition (dynamic partition overwrite) and
keeps every other. Parquet tables have no transactions: the history is written first, then
the current table; a failure between them leaves the previous current scores beside the new
history, and writing the same scores again repairs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pandas as pd

from churn_assets.schema import CHURN_LABELS_TABLE
from churn_assets.tables.scores import (
    MATURED_SCORE_COLUMNS,
    MATURED_SCORES_SQL,
    REALIZED_COLUMNS,
    REALIZED_TABLE,
    SCORES_HISTORY_TABLE,
    SCORES_SCHEMA,
    SCORES_TABLE,
    score_frame,
)
from churn_assets.tables.spark.common import exists, insert, read, to_spark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_COLUMNS = """
    customer_id        string,
    churn_probability  double,
    risk_band          string,
    model_name         string,
    model_sha256       string,
    scored_at          timestamp,
    dagster_run_id     string,
    model_data_through date,
    feature_as_of      date,
    model_version      string
"""
_REALIZED_DDL = (
    "model_version string, as_of date, rows bigint, auc double, brier double, "
    "mean_predicted double, observed_rate double, holdout_auc double"
)


@contextmanager
def _dynamic_partition_overwrite(session: SparkSession) -> Iterator[None]:
    """An overwrite replaces only the partitions its rows fall in (not the whole table)."""
    key = "spark.sql.sources.partitionOverwriteMode"
    before = session.conf.get(key) or "static"  # Spark's default
    session.conf.set(key, "dynamic")
    try:
        yield
    finally:
        session.conf.set(key, before)


def write_scores(session: SparkSession, scores: pd.DataFrame) -> None:
    """Put one period's ``scores`` in the history, replacing that version's earlier scores
    of the period, then replace ``scoring.churn_scores`` with them."""
    frame = score_frame(scores)  # refuses a frame without its columns before any write
    session.sql(f"create database if not exists {SCORES_SCHEMA}")
    session.sql(f"create table if not exists {SCORES_TABLE} ({_COLUMNS}) using parquet")
    session.sql(
        f"create table if not exists {SCORES_HISTORY_TABLE} ({_COLUMNS}) using parquet "
        "partitioned by (feature_as_of, model_version)"
    )
    rows = to_spark(session, frame).cache()  # written twice, converted once
    try:
        with _dynamic_partition_overwrite(session):
            insert(session, SCORES_HISTORY_TABLE, rows, overwrite=True)
        insert(session, SCORES_TABLE, rows, overwrite=True)
    finally:
        rows.unpersist()


def read_matured_scores(session: SparkSession) -> pd.DataFrame:
    """Every period's scores joined to the period's labels (:data:`MATURED_SCORE_COLUMNS`),
    only those of a model trained on data up to the period. Empty when nothing was scored
    or labelled yet."""
    if not (exists(session, SCORES_HISTORY_TABLE) and exists(session, CHURN_LABELS_TABLE)):
        return pd.DataFrame()
    frame = read(session, MATURED_SCORES_SQL)
    return frame[list(MATURED_SCORE_COLUMNS)]


def write_realized(session: SparkSession, realized: pd.DataFrame) -> None:
    """Replace ``scoring.realized_performance`` with ``realized`` (:data:`REALIZED_COLUMNS`)."""
    frame = realized[list(REALIZED_COLUMNS)]
    session.sql(f"create database if not exists {SCORES_SCHEMA}")
    session.sql(f"create table if not exists {REALIZED_TABLE} ({_REALIZED_DDL}) using parquet")
    insert(session, REALIZED_TABLE, to_spark(session, frame), overwrite=True)


def read_realized(session: SparkSession) -> pd.DataFrame:
    """``scoring.realized_performance`` by period, then version; no rows when it was never
    written (reading creates nothing)."""
    if not exists(session, REALIZED_TABLE):
        return pd.DataFrame(columns=list(REALIZED_COLUMNS))
    return read(
        session,
        f"select {', '.join(REALIZED_COLUMNS)} from {REALIZED_TABLE} order by as_of, model_version",
    )
