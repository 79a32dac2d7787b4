"""The dbt feature tables read from Postgres (:mod:`churn_assets.tables.snapshot`): the
training snapshot, the current and per-period features, the labelled periods."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import pandas as pd
import psycopg2.extensions

from churn_assets.schema import (
    CHURN_LABELS_TABLE,
    CUSTOMER_FEATURES_TABLE,
    TRAINING_SNAPSHOT_TABLE,
)
from churn_assets.tables.snapshot import FEATURE_TABLES, LabelDefinitionError, with_model_dtypes


def read_training_snapshot(
    conn: psycopg2.extensions.connection,
    periods: Sequence[date] | None = None,
    customer_share: float = 1.0,
) -> pd.DataFrame:
    """The training snapshot of ``periods`` (default: every labelled period), one row per
    period and customer, ordered by ``as_of`` then ``customer_id``. ``customer_share`` < 1
    keeps a deterministic sample of customers (by a hash of the id: the same customers in
    every period), sampled in the database so the rest never reaches memory."""
    return read_feature_table(conn, TRAINING_SNAPSHOT_TABLE, periods, customer_share)


def count_rows(conn: psycopg2.extensions.connection, periods: Sequence[date]) -> int:
    """Rows of the training snapshot in ``periods``."""
    with conn.cursor() as cur:
        cur.execute(
            f"select count(*) from {TRAINING_SNAPSHOT_TABLE} where as_of = any(%s::date[])",
            ([p.isoformat() for p in periods],),
        )
        return int(cur.fetchone()[0])


def labelled_periods(conn: psycopg2.extensions.connection, window_days: int) -> list[date]:
    """The periods with labels in the training snapshot, oldest first, once every label
    has been checked against this run's definition (its window): labels built with
    another window must never be stacked with, or judged against, this one's.

    Raises :class:`LabelDefinitionError` naming the rows, periods and windows found.
    """
    with conn.cursor() as cur:
        other: list[tuple[Any, ...]] = []
        cur.execute("select to_regclass(%s)", (CHURN_LABELS_TABLE,))
        if cur.fetchone()[0] is not None:  # else a snapshot built elsewhere: nothing to check
            cur.execute(
                f"""
                select window_days, count(*), count(distinct as_of), min(as_of), max(as_of)
                from {CHURN_LABELS_TABLE} where window_days <> %s
                group by window_days order by window_days
                """,
                (window_days,),
            )
            other = cur.fetchall()
        if other:
            raise LabelDefinitionError.for_other_windows(window_days, other)
        cur.execute(f"select distinct as_of from {TRAINING_SNAPSHOT_TABLE} order by as_of")
        return [row[0] for row in cur.fetchall()]


def newest_period(conn: psycopg2.extensions.connection) -> date | None:
    """The newest period of ``marts.customer_features`` (None: no features yet)."""
    with conn.cursor() as cur:
        cur.execute(f"select max(as_of) from {CUSTOMER_FEATURES_TABLE}")
        row = cur.fetchone()
    return row[0] if row else None


def read_feature_table(
    conn: psycopg2.extensions.connection,
    table: str,
    periods: Sequence[date] | None = None,
    customer_share: float = 1.0,
) -> pd.DataFrame:
    """A features table (e.g. ``marts.current_features``) with the same dtypes, optionally
    restricted to some periods and a deterministic share of customers."""
    if table not in FEATURE_TABLES:
        raise ValueError(f"unknown feature table {table!r}; expected one of {FEATURE_TABLES}")
    where: list[str] = ["true"]
    params: list[object] = []
    if periods is not None:
        where.append("as_of = any(%s::date[])")
        params.append([p.isoformat() for p in periods])
    if customer_share < 1.0:
        # the first 32 bits of md5(customer_id), in [0, 1): stable across runs and versions
        where.append("('x' || substr(md5(customer_id), 1, 8))::bit(32)::bigint < %s")
        params.append(int(customer_share * 2**32))
    with conn.cursor() as cur:
        cur.execute(
            f"select * from {table} where {' and '.join(where)} order by as_of, customer_id",
            params,
        )
        columns = [column.name for column in cur.description or ()]
        frame = pd.DataFrame(cur.fetchall(), columns=columns)
    return with_model_dtypes(frame)
