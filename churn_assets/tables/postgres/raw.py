"""The raw tables in Postgres (:mod:`churn_assets.tables.raw`): both replaced in one
transaction, truncated rather than dropped because dbt's staging views depend on them, and
written with ``COPY``; the load recorded in ``raw.loads`` in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import psycopg2.extensions

from churn_assets.data.contract import RawTables, file_sha256
from churn_assets.schema import PERIOD_TABLES
from churn_assets.tables.postgres.bulk import copy_frame
from churn_assets.tables.raw import LOADS_TABLE, RAW_SCHEMA, LoadResult

_LOADS_DDL = """
    load_id          bigserial primary key,
    dagster_run_id   text,
    customers_file   text not null,
    customers_sha256 text not null,
    customers_rows   bigint not null,
    orders_file      text not null,
    orders_sha256    text not null,
    orders_rows      bigint not null,
    loaded_at        timestamptz not null default now()
"""

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


def load_raw_tables(
    conn: psycopg2.extensions.connection, tables: RawTables, dagster_run_id: str | None = None
) -> LoadResult:
    """Replaces ``raw.customers`` and ``raw.orders`` with ``tables`` in a single transaction
    and records the load (files, their sha256, row counts, run) in ``raw.loads``."""
    frames = {"customers": tables.customers, "orders": tables.orders}
    files = {"customers": tables.customers_file, "orders": tables.orders_file}
    digests = {table: file_sha256(path) for table, path in files.items()}
    rows = {table: len(frame) for table, frame in frames.items()}
    try:
        with conn.cursor() as cur:
            ensure_raw_tables(cur)
            cur.execute(f"truncate {RAW_SCHEMA}.customers, {RAW_SCHEMA}.orders")
            for table, frame in frames.items():
                copy_frame(cur, f"{RAW_SCHEMA}.{table}", frame)
            # loaded_at is now(), the transaction start: the value every row's default wrote.
            load_id, loaded_at = record_load(
                cur,
                dagster_run_id,
                {table: str(path) for table, path in files.items()},
                digests,
                rows,
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return LoadResult(rows, loaded_at, load_id, digests)


def record_load(
    cur: psycopg2.extensions.cursor,
    dagster_run_id: str | None,
    sources: Mapping[str, str],
    digests: Mapping[str, str],
    rows: Mapping[str, int],
) -> tuple[int, datetime]:
    """Insert the load's row into ``raw.loads`` (per raw table: where it came from, its
    digest and rows); returns its load_id and loaded_at."""
    cur.execute(
        f"""
        insert into {LOADS_TABLE} (dagster_run_id, customers_file, customers_sha256,
            customers_rows, orders_file, orders_sha256, orders_rows)
        values (%s, %s, %s, %s, %s, %s, %s)
        returning load_id, loaded_at
        """,
        (
            dagster_run_id,
            *(sources["customers"], digests["customers"], rows["customers"]),
            *(sources["orders"], digests["orders"], rows["orders"]),
        ),
    )
    load_id, loaded_at = cur.fetchone()
    return load_id, loaded_at


def ensure_raw_tables(cur: psycopg2.extensions.cursor) -> None:
    """Create the raw schema, both raw tables and ``raw.loads`` where missing."""
    cur.execute(f"create schema if not exists {RAW_SCHEMA}")
    for table, ddl in RAW_DDL.items():
        cur.execute(f"create table if not exists {RAW_SCHEMA}.{table} ({ddl})")
    cur.execute(f"create table if not exists {LOADS_TABLE} ({_LOADS_DDL})")


def latest_load(conn: psycopg2.extensions.connection) -> dict[str, Any] | None:
    """The row of ``raw.loads`` describing what the raw tables hold now (None: never loaded
    by this version of the loader)."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass(%s) is not null", (LOADS_TABLE,))
        if not cur.fetchone()[0]:
            return None
        cur.execute(f"select * from {LOADS_TABLE} order by load_id desc limit 1")
        row = cur.fetchone()
        names = [column.name for column in cur.description or ()]
    return dict(zip(names, row, strict=True)) if row is not None else None


def retire_periods(conn: psycopg2.extensions.connection, period_ends: Sequence[str]) -> int:
    """Delete the rows of periods the data no longer has from the per-period marts.

    A new data set (another source, or ``CHURN_PERIOD`` switched from month to week) must
    not leave the old periods' features and labels beside it. Returns the rows deleted.
    """
    if not period_ends:
        return 0
    deleted = 0
    with conn.cursor() as cur:
        for table in PERIOD_TABLES:
            cur.execute("select to_regclass(%s)", (table,))
            if cur.fetchone()[0] is None:
                continue  # never built
            cur.execute(f"delete from {table} where as_of = any(%s::date[])", (list(period_ends),))
            deleted += cur.rowcount
    conn.commit()
    return deleted


def last_order_date(conn: psycopg2.extensions.connection) -> date | None:
    """The newest order date in the raw data: what the platform knows up to."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass('raw.orders')")
        if cur.fetchone()[0] is None:
            return None  # a snapshot built elsewhere (no raw tables here)
        cur.execute("select max(ordered_at)::date from raw.orders")
        value = cur.fetchone()
    return value[0] if value else None
