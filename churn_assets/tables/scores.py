"""Batch scores in the warehouse: the current table replaced atomically, history appended.

Analysts read ``scoring.churn_scores`` (one row per customer: the current period's scores)
and ``scoring.churn_scores_history`` (every period's scores, per model version: re-scoring a
period with the same version replaces its rows, another version's scores sit beside them).
Both change in one transaction: a failure half-way leaves the previous scores and history
exactly as they were.
"""

from __future__ import annotations

import pandas as pd
import psycopg2.extensions

from churn_assets.tables.bulk import copy_frame

SCORES_SCHEMA = "scoring"
SCORE_COLUMNS = (
    "customer_id",
    "churn_probability",
    "risk_band",
    "model_name",
    "model_version",
    "model_sha256",
    "feature_as_of",
    "scored_at",
    "dagster_run_id",
    "model_data_through",
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


def write_scores(conn: psycopg2.extensions.connection, scores: pd.DataFrame) -> None:
    """Put one period's ``scores`` (one model version) in the history, replacing that
    version's earlier scores of the period, and replace ``scoring.churn_scores`` with them."""
    missing = [column for column in SCORE_COLUMNS if column not in scores.columns]
    if missing:
        raise ValueError(f"scores frame is missing column(s): {', '.join(missing)}")
    frame = scores.loc[:, list(SCORE_COLUMNS)]
    try:
        with conn.cursor() as cur:
            cur.execute(f"create schema if not exists {SCORES_SCHEMA}")
            for table in ("churn_scores", "churn_scores_history"):
                cur.execute(f"create table if not exists {SCORES_SCHEMA}.{table} ({_DDL})")
                for migration in _MIGRATIONS:
                    cur.execute(f"alter table {SCORES_SCHEMA}.{table} {migration}")
            # One client-side COPY into a staging table, then server-side inserts: sending
            # the rows twice (history and current) doubled the write time at 1M rows.
            cur.execute(
                f"create temp table scores_load (like {SCORES_SCHEMA}.churn_scores) on commit drop"
            )
            copy_frame(cur, "scores_load", frame)
            cur.execute(
                f"delete from {SCORES_SCHEMA}.churn_scores_history as history using "
                "(select distinct feature_as_of, model_version from scores_load) as scored "
                "where history.feature_as_of = scored.feature_as_of "
                "and history.model_version = scored.model_version"
            )
            cur.execute(
                f"insert into {SCORES_SCHEMA}.churn_scores_history ({', '.join(SCORE_COLUMNS)}) "
                f"select {', '.join(SCORE_COLUMNS)} from scores_load"
            )
            cur.execute(f"truncate {SCORES_SCHEMA}.churn_scores")
            _insert_current(cur)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _insert_current(cur: psycopg2.extensions.cursor) -> None:
    columns = ", ".join(SCORE_COLUMNS)
    cur.execute(
        f"insert into {SCORES_SCHEMA}.churn_scores ({columns}) select {columns} from scores_load"
    )
