"""What a dbt step built, read back from Spark for the run's metadata (as
:mod:`churn_assets.tables.postgres.marts` does on Postgres)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from churn_assets.schema import CUSTOMER_FEATURES_TABLE, PERIOD_TABLES
from churn_assets.tables.spark.common import (
    dates_sql,
    identifier,
    parse_dates,
    period_first,
    read,
    scalar,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Where dbt-spark stores the failing rows of the tests configured to keep them.
_TEST_FAILURES_SCHEMA = "test_failures"


def count_rows(session: SparkSession, schema: str, name: str) -> int:
    """Rows of the table ``schema.name``."""
    rows = scalar(session, f"select count(*) from {identifier(schema, name)}")
    return int(rows)


def _period_table(table: str) -> str:
    if table not in PERIOD_TABLES:
        raise ValueError(f"not a per-period table: {table!r}; expected one of {PERIOD_TABLES}")
    return table


def rows_by_period(session: SparkSession, table: str, period_ends: Sequence[str]) -> pd.DataFrame:
    """``as_of``, ``rows`` and ``label_rate`` (None for the features) of each period of
    ``period_ends`` that ``table`` holds, oldest first."""
    label = (
        "cast(null as double)"
        if table == CUSTOMER_FEATURES_TABLE
        else "avg(cast(churned as double))"
    )
    if not period_ends:
        return pd.DataFrame(columns=["as_of", "rows", "label_rate"])
    return read(
        session,
        f"select as_of, count(*) as rows, {label} as label_rate from {_period_table(table)} "
        f"where as_of in ({dates_sql(period_ends)}) group by as_of order by as_of",
    )


def preview_period(session: SparkSession, table: str, period_end: str, rows: int) -> pd.DataFrame:
    """The first ``rows`` rows (by customer id) of one period of ``table``."""
    (day,) = parse_dates([period_end])
    return period_first(
        read(
            session,
            f"select * from {_period_table(table)} where as_of = date'{day.isoformat()}' "
            f"order by customer_id limit {int(rows)}",
        )
    )


def test_failures(session: SparkSession, test: str, limit: int) -> list[tuple[str, int]]:
    """Up to ``limit`` of the ``failure`` lines the singular test ``test`` stored, each with
    the test's count of failing rows."""
    rows = session.sql(
        f"select failure, count(*) over () from {identifier(_TEST_FAILURES_SCHEMA, test)} "
        f"limit {int(limit)}"
    ).collect()
    return [(str(failure), int(count)) for failure, count in rows]
