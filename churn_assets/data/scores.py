"""Batch scores in the warehouse: the current table replaced atomically, history appended.

Analysts read ``scoring.churn_scores`` (one row per customer, the latest run) and
``scoring.churn_scores_history`` (every run). Both change in one transaction: a failure
half-way leaves the previous scores and history exactly as they were.
"""

from __future__ import annotations

import pandas as pd
import psycopg2.extensions

from churn_assets.data.loader import copy_frame

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
    dagster_run_id    text not null
"""


def write_scores(conn: psycopg2.extensions.connection, scores: pd.DataFrame) -> None:
    """Replace ``scoring.churn_scores`` with ``scores`` and append them to the history."""
    missing = [column for column in SCORE_COLUMNS if column not in scores.columns]
    if missing:
        raise ValueError(f"scores frame is missing column(s): {', '.join(missing)}")
    frame = scores.loc[:, list(SCORE_COLUMNS)]
    try:
        with conn.cursor() as cur:
            cur.execute(f"create schema if not exists {SCORES_SCHEMA}")
            for table in ("churn_scores", "churn_scores_history"):
                cur.execute(f"create table if not exists {SCORES_SCHEMA}.{table} ({_DDL})")
            # One client-side COPY into a staging table, then server-side inserts: sending
            # the rows twice (history and current) doubled the write time at 1M rows.
            cur.execute(
                f"create temp table scores_load (like {SCORES_SCHEMA}.churn_scores) on commit drop"
            )
            copy_frame(cur, "scores_load", frame)
            cur.execute(
                f"insert into {SCORES_SCHEMA}.churn_scores_history select * from scores_load"
            )
            cur.execute(f"truncate {SCORES_SCHEMA}.churn_scores")
            _insert_current(cur)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _insert_current(cur: psycopg2.extensions.cursor) -> None:
    cur.execute(f"insert into {SCORES_SCHEMA}.churn_scores select * from scores_load")
