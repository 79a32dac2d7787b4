"""The dbt feature tables read from Spark (:mod:`churn_assets.tables.snapshot`): the
training snapshot, the current and per-period features, the labelled periods. The same
queries as on Postgres, in Spark's dialect; each read is one query, so it sees one listing
of each table's files."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from churn_assets.schema import (
    CHURN_LABELS_TABLE,
    CUSTOMER_FEATURES_TABLE,
    TRAINING_SNAPSHOT_TABLE,
)
from churn_assets.tables.snapshot import FEATURE_TABLES, LabelDefinitionError, with_model_dtypes
from churn_assets.tables.spark.common import dates_sql, exists, period_first, read, scalar

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def count_rows(session: SparkSession, periods: Sequence[date]) -> int:
    """Rows of the training snapshot in ``periods``."""
    if not periods:
        return 0
    rows = scalar(
        session,
        f"select count(*) from {TRAINING_SNAPSHOT_TABLE} where as_of in ({dates_sql(periods)})",
    )
    return int(rows)


def labelled_periods(session: SparkSession, window_days: int) -> list[date]:
    """The periods of the training snapshot, oldest first, once every label has been
    checked against ``window_days``; raises :class:`LabelDefinitionError` as on Postgres."""
    other: list[tuple[int, int, int, date, date]] = []
    if exists(session, CHURN_LABELS_TABLE):  # else a snapshot built elsewhere
        other = [
            (int(w), int(rows), int(n), first, last)
            for w, rows, n, first, last in session.sql(
                f"""
                select window_days, count(*), count(distinct as_of), min(as_of), max(as_of)
                from {CHURN_LABELS_TABLE} where window_days <> {int(window_days)}
                group by window_days order by window_days
                """
            ).collect()
        ]
    if other:
        raise LabelDefinitionError.for_other_windows(window_days, other)
    rows = session.sql(
        f"select distinct as_of from {TRAINING_SNAPSHOT_TABLE} order by as_of"
    ).collect()
    return [row[0] for row in rows]


def newest_period(session: SparkSession) -> date | None:
    """The newest period of ``marts.customer_features`` (None: no features yet)."""
    newest: date | None = scalar(session, f"select max(as_of) from {CUSTOMER_FEATURES_TABLE}")
    return newest


def read_feature_table(
    session: SparkSession,
    table: str,
    periods: Sequence[date] | None = None,
    customer_share: float = 1.0,
) -> pd.DataFrame:
    """A features table with the model's dtypes, optionally restricted to some periods and
    a deterministic share of customers: the same customers as on Postgres (the first 32
    bits of the md5 of the id, as an unsigned integer, below the share of 2**32)."""
    if table not in FEATURE_TABLES:
        raise ValueError(f"unknown feature table {table!r}; expected one of {FEATURE_TABLES}")
    where = ["true"]
    if periods is not None:
        where.append(f"as_of in ({dates_sql(periods)})" if periods else "false")
    if customer_share < 1.0:
        where.append(
            "cast(conv(substr(md5(customer_id), 1, 8), 16, 10) as bigint) "
            f"< {int(customer_share * 2**32)}"
        )
    frame = read(
        session,
        f"select * from {table} where {' and '.join(where)} order by as_of, customer_id",
    )
    return with_model_dtypes(period_first(frame))
