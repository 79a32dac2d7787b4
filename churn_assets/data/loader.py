"""Load validated raw tables into the warehouse's ``raw`` schema, all or nothing.

Both tables are replaced in one transaction: a failure at any point (bad file, lost
connection) leaves the previous ``raw.customers`` and ``raw.orders`` exactly as they were,
and loading the same files twice gives the same tables. Tables are truncated rather than
dropped because dbt's staging views depend on them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import psycopg2.extensions

from churn_assets.data.contract import RawTables

RAW_SCHEMA = "raw"
_COPY_CHUNK_ROWS = 500_000

# The warehouse schema of the contract.
# ``_loaded_at`` (the load's transaction time) feeds dbt source freshness.
RAW_DDL = {
    "customers": """
        customer_id text not null,
        signup_at   timestamp,
        email       text,
        _loaded_at  timestamptz not null default now()
    """,
    "orders": """
        order_id    text not null,
        customer_id text not null,
        ordered_at  timestamp not null,
        amount      numeric not null,
        item_count  integer,
        category    text,
        _loaded_at  timestamptz not null default now()
    """,
}


@dataclass(frozen=True)
class LoadResult:
    """What one load wrote."""

    row_counts: dict[str, int]
    loaded_at: datetime


def load_raw_tables(conn: psycopg2.extensions.connection, tables: RawTables) -> LoadResult:
    """Replaces ``raw.customers`` and ``raw.orders`` with ``tables`` in a single transaction."""
    frames = {"customers": tables.customers, "orders": tables.orders}
    try:
        with conn.cursor() as cur:
            cur.execute(f"create schema if not exists {RAW_SCHEMA}")
            for table, ddl in RAW_DDL.items():
                cur.execute(f"create table if not exists {RAW_SCHEMA}.{table} ({ddl})")
            cur.execute(f"truncate {RAW_SCHEMA}.customers, {RAW_SCHEMA}.orders")
            for table, frame in frames.items():
                copy_frame(cur, f"{RAW_SCHEMA}.{table}", frame)
            # now() is the transaction start, the same value the column default wrote.
            cur.execute("select now()")
            loaded_at = cur.fetchone()[0]
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return LoadResult({table: len(frame) for table, frame in frames.items()}, loaded_at)


def copy_frame(cur: psycopg2.extensions.cursor, table: str, frame: pd.DataFrame) -> None:
    """COPY a frame into an existing table, in chunks (far faster than INSERTs)."""
    columns = ", ".join(frame.columns)
    for start in range(0, len(frame), _COPY_CHUNK_ROWS):
        buffer = io.StringIO()
        frame.iloc[start : start + _COPY_CHUNK_ROWS].to_csv(
            buffer, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f"
        )
        buffer.seek(0)
        cur.copy_expert(f"copy {table} ({columns}) from stdin with (format csv)", buffer)
