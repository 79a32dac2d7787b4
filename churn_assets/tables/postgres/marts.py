"""What a dbt step built, read back from Postgres for the run's metadata: a table's rows,
the rows (and label rate) per period of a per-period mart, a preview, and the readable
failures singular tests store."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import psycopg2.extensions
from psycopg2 import sql

from churn_assets.schema import CUSTOMER_FEATURES_TABLE, PERIOD_TABLES

# Where dbt stores the failing rows of the tests configured to keep them (store_failures).
_TEST_FAILURES_SCHEMA = "test_failures"


def count_rows(conn: psycopg2.extensions.connection, schema: str, name: str) -> int:
    """Rows of the table ``schema.name`` (quoted: any name dbt gives a relation)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, name)))
        (rows,) = cur.fetchone()
    return int(rows)


def _period_table(table: str) -> str:
    if table not in PERIOD_TABLES:
        raise ValueError(f"not a per-period table: {table!r}; expected one of {PERIOD_TABLES}")
    return table


def rows_by_period(
    conn: psycopg2.extensions.connection, table: str, period_ends: Sequence[str]
) -> pd.DataFrame:
    """One row per period of ``period_ends`` that ``table`` holds, oldest first: ``as_of``
    (a date), ``rows`` and ``label_rate`` (the mean of ``churned``; None for a table
    without labels)."""
    label = "null::float" if table == CUSTOMER_FEATURES_TABLE else "avg(churned::float)"
    with conn.cursor() as cur:
        cur.execute(
            f"select as_of, count(*), {label} from {_period_table(table)} "
            "where as_of = any(%s::date[]) group by as_of order by as_of",
            (list(period_ends),),
        )
        rows = cur.fetchall()
    return pd.DataFrame(rows, columns=["as_of", "rows", "label_rate"])


def preview_period(
    conn: psycopg2.extensions.connection, table: str, period_end: str, rows: int
) -> pd.DataFrame:
    """The first ``rows`` rows (by customer id) of one period of ``table``."""
    with conn.cursor() as cur:
        cur.execute(
            f"select * from {_period_table(table)} where as_of = %s::date "
            "order by customer_id limit %s",
            (period_end, rows),
        )
        columns = [column.name for column in cur.description or ()]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def test_failures(
    conn: psycopg2.extensions.connection, test: str, limit: int
) -> list[tuple[str, int]]:
    """Up to ``limit`` of the readable ``failure`` lines the singular test ``test`` stored,
    each with the test's count of failing rows. Raises when the test stored nothing."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("select failure, count(*) over () from {} limit %s").format(
                sql.Identifier(_TEST_FAILURES_SCHEMA, test)
            ),
            (limit,),
        )
        return [(str(failure), int(count)) for failure, count in cur.fetchall()]
