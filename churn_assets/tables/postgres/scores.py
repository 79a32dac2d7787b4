"""Batch scores and realized performance in Postgres (:mod:`churn_assets.tables.scores`):
the scores through one ``COPY`` into a staging table, then server-side inserts into the
history and the current table, in one transaction."""

from __future__ import annotations

import pandas as pd
import psycopg2.extensions

from churn_assets.schema import CHURN_LABELS_TABLE
from churn_assets.tables.postgres.bulk import copy_frame
from churn_assets.tables.scores import (
    MATURED_SCORE_COLUMNS,
    MATURED_SCORES_SQL,
    REALIZED_COLUMNS,
    REALIZED_TABLE,
    SCORE_COLUMNS,
    SCORES_HISTORY_TABLE,
    SCORES_SCHEMA,
    SCORES_TABLE,
    score_frame,
)

_DDL = """
    customer_id       text not null,
    churn_probability double precision not null,
    risk_band         text not null,
    model_name        text not null,
    model_version     text not null,
    model_sha256      text not null,
    feature_as_of     date not null,
    scored_at         timestamptz not null,
    dagster_run_id    text not null,
    model_data_through date
"""
# Added with periods: the newest order date the model knew when it was trained. A period's
# scores count towards realized performance only when it is on or before the period.
_MIGRATIONS = ("add column if not exists model_data_through date",)

_REALIZED_DDL = (
    "model_version text not null, as_of date not null, rows bigint not null, "
    "auc double precision, brier double precision not null, "
    "mean_predicted double precision not null, observed_rate double precision not null, "
    "holdout_auc double precision, primary key (model_version, as_of)"
)


def write_scores(conn: psycopg2.extensions.connection, scores: pd.DataFrame) -> None:
    """Put one period's ``scores`` (one model version) in the history, replacing that
    version's earlier scores of the period, and replace ``scoring.churn_scores`` with them."""
    frame = score_frame(scores)
    try:
        with conn.cursor() as cur:
            cur.execute(f"create schema if not exists {SCORES_SCHEMA}")
            for table in (SCORES_TABLE, SCORES_HISTORY_TABLE):
                cur.execute(f"create table if not exists {table} ({_DDL})")
                for migration in _MIGRATIONS:
                    cur.execute(f"alter table {table} {migration}")
            # One client-side COPY into a staging table, then server-side inserts: sending
            # the rows twice (history and current) doubled the write time at 1M rows.
            cur.execute(f"create temp table scores_load (like {SCORES_TABLE}) on commit drop")
            copy_frame(cur, "scores_load", frame)
            cur.execute(
                f"delete from {SCORES_HISTORY_TABLE} as history using "
                "(select distinct feature_as_of, model_version from scores_load) as scored "
                "where history.feature_as_of = scored.feature_as_of "
                "and history.model_version = scored.model_version"
            )
            cur.execute(
                f"insert into {SCORES_HISTORY_TABLE} ({', '.join(SCORE_COLUMNS)}) "
                f"select {', '.join(SCORE_COLUMNS)} from scores_load"
            )
            cur.execute(f"truncate {SCORES_TABLE}")
            _insert_current(cur)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _insert_current(cur: psycopg2.extensions.cursor) -> None:
    columns = ", ".join(SCORE_COLUMNS)
    cur.execute(f"insert into {SCORES_TABLE} ({columns}) select {columns} from scores_load")


def read_matured_scores(conn: psycopg2.extensions.connection) -> pd.DataFrame:
    """Every period's scores joined to the period's labels (:data:`MATURED_SCORE_COLUMNS`),
    only those of a model trained on data up to the period (its data-through date on or
    before the period's as_of). Empty when nothing was scored or labelled yet."""
    with conn.cursor() as cur:
        cur.execute(
            "select to_regclass(%s), to_regclass(%s)", (SCORES_HISTORY_TABLE, CHURN_LABELS_TABLE)
        )
        if None in cur.fetchone():
            return pd.DataFrame()
        cur.execute(MATURED_SCORES_SQL)
        return pd.DataFrame(cur.fetchall(), columns=list(MATURED_SCORE_COLUMNS))


def write_realized(conn: psycopg2.extensions.connection, realized: pd.DataFrame) -> None:
    """Replace ``scoring.realized_performance`` with ``realized`` (:data:`REALIZED_COLUMNS`),
    in one transaction."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"create schema if not exists {SCORES_SCHEMA}")
            cur.execute(f"create table if not exists {REALIZED_TABLE} ({_REALIZED_DDL})")
            cur.execute(f"truncate {REALIZED_TABLE}")
            copy_frame(cur, REALIZED_TABLE, realized[list(REALIZED_COLUMNS)])
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def read_realized(conn: psycopg2.extensions.connection) -> pd.DataFrame:
    """``scoring.realized_performance`` (:data:`REALIZED_COLUMNS`) ordered by period, then
    version; no rows when it was never written (reading creates nothing)."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (REALIZED_TABLE,))
        if cur.fetchone()[0] is None:
            return pd.DataFrame(columns=list(REALIZED_COLUMNS))
        cur.execute(
            f"select {', '.join(REALIZED_COLUMNS)} from {REALIZED_TABLE} "
            "order by as_of, model_version"
        )
        return pd.DataFrame(cur.fetchall(), columns=list(REALIZED_COLUMNS))
