"""Raw data from warehouse tables, in Postgres (:mod:`churn_assets.tables.source`): the
contract checked in SQL (:mod:`churn_assets.tables.source_sql`, in Postgres's words here),
the rows copied into ``raw`` by ``insert ... select``.

The session's time zone is UTC for the check and the copy, so text timestamps without an
offset are UTC, as the file contract reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg2.extensions

from churn_assets.data import contract
from churn_assets.data.contract import Violation
from churn_assets.tables import source_sql
from churn_assets.tables.postgres.raw import ensure_raw_tables, record_load
from churn_assets.tables.raw import RAW_SCHEMA, LoadResult
from churn_assets.tables.source import (
    CONTRACT,
    Column,
    Kind,
    SourceChanged,
    SourceCheck,
    SourceFingerprint,
    SourceState,
    SourceTables,
)
from churn_assets.tables.source_sql import Relation, SourceType

_INTEGER_TYPES = ("int2", "int4", "int8")
_FLOAT_TYPES = ("float4", "float8")
_TIMESTAMP_TYPES = {
    "date": SourceType.DATE,
    "timestamp": SourceType.TIMESTAMP,
    "timestamptz": SourceType.INSTANT,
}
# A whole number as an id: digits, optionally a zero fraction (17.0), within float64's
# exact integers (16 digits), as a Parquet id column with nulls would hold it.
_WHOLE_ID = "'^-?[0-9]{1,16}(\\.0*)?$'"
_NOT_FINITE = "('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric)"


class PostgresDialect:
    """Postgres's words for :class:`~churn_assets.tables.source_sql.Dialect`."""

    # Postgres text cannot hold NUL, nor a lone surrogate (limits.ID_FORBIDDEN_CHARACTERS).
    control_characters = "[\\x01-\\x1f\\x7f-\\x9f]"

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def literal(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"  # standard_conforming_strings

    def text(self, expr: str) -> str:
        return f"{expr}::text"

    def trimmed(self, expr: str) -> str:
        characters = "".join(f"\\x{ord(c):02x}" for c in source_sql.WHITESPACE)
        return f"nullif(btrim({expr}::text, E'{characters}'), '')"

    def matches(self, expr: str, pattern: str, *, ignore_case: bool = False) -> str:
        return f"({expr} {'~*' if ignore_case else '~'} {self.literal(pattern)})"

    def raw_type(self, spec: Column) -> str:
        if spec.kind is Kind.TIMESTAMP:
            return "timestamp"
        if spec.kind is Kind.NUMBER:
            return "integer" if spec.integer else "numeric"
        return "text"

    def timestamp(self, expr: str, source_type: SourceType) -> str:
        if source_type is SourceType.INSTANT:
            return f"({expr} at time zone 'UTC')"
        return f"{expr}::timestamp"

    def parses_as_timestamp(self, text: str) -> str:
        return f"pg_input_is_valid({text}, 'timestamptz')"

    def text_timestamp(self, text: str) -> str:
        return f"({text}::timestamptz at time zone 'UTC')"

    def number(self, expr: str, source_type: SourceType) -> str:
        return f"{expr}::numeric"

    def not_finite(self, number: str, source_type: SourceType) -> str | None:
        if source_type is SourceType.INTEGER:
            return None
        return f"{number} in {_NOT_FINITE}"  # numeric holds NaN and infinities too

    def fractional(self, number: str) -> str:
        return f"{number} <> trunc({number})"

    def text_number(self, text: str) -> str:
        return f"{text}::numeric"

    def whole_id(self, expr: str, source_type: SourceType) -> str:
        return f"({expr}::text ~ {_WHOLE_ID})"

    def whole_id_text(self, expr: str, source_type: SourceType) -> str:
        return f"split_part({expr}::text, '.', 1)"

    def hash_sum(self, columns: Sequence[str]) -> str:
        row = ", ".join(columns)
        return f"coalesce(sum(hashtextextended(row({row})::text, 0)::numeric), 0)"


DIALECT = PostgresDialect()


class _Reader:
    def __init__(self, cur: psycopg2.extensions.cursor) -> None:
        self.cur = cur

    def one(self, sql: str) -> Sequence[Any]:
        self.cur.execute(sql)
        row: Sequence[Any] = self.cur.fetchone()
        return row

    def all(self, sql: str) -> Sequence[Sequence[Any]]:
        self.cur.execute(sql)
        rows: Sequence[Sequence[Any]] = self.cur.fetchall()
        return rows


def _source_type(type_name: str, category: str) -> SourceType:
    if category == "S":
        return SourceType.TEXT
    if category == "B":
        return SourceType.BOOLEAN
    if type_name in _INTEGER_TYPES:
        return SourceType.INTEGER
    if type_name in _FLOAT_TYPES:
        return SourceType.FLOAT
    if category == "N" and type_name != "money":
        return SourceType.EXACT
    return _TIMESTAMP_TYPES.get(type_name, SourceType.OTHER)


def _finder(cur: psycopg2.extensions.cursor) -> source_sql.Find:
    def find(table: str) -> Relation | None:
        cur.execute("select to_regclass(%s)::oid", (table,))
        oid = cur.fetchone()[0]
        if oid is None:
            return None
        cur.execute(
            "select format('%%I.%%I', n.nspname, c.relname) from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace where c.oid = %s",
            (oid,),
        )
        name = cur.fetchone()[0]
        cur.execute(
            """
            select a.attname, b.typname, b.typcategory
            from pg_attribute a
            join pg_type t on t.oid = a.atttypid
            join pg_type b on b.oid = case when t.typtype = 'd' then t.typbasetype else t.oid end
            where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
            order by a.attnum
            """,
            (oid,),
        )
        return Relation(name, {row[0]: _source_type(row[1], row[2]) for row in cur.fetchall()})

    return find


def _utc(cur: psycopg2.extensions.cursor) -> None:
    cur.execute("set local timezone = 'UTC'")


def observe(conn: psycopg2.extensions.connection, source: SourceTables) -> SourceState:
    """Row counts and the newest ``ordered_at`` as stored (no contract, no parsing): cheap
    enough for every sensor tick. Raises ``ValueError`` naming a missing table or column."""
    with conn.cursor() as cur:
        _utc(cur)
        state = source_sql.observe(DIALECT, _finder(cur), _Reader(cur), source)
    conn.rollback()
    return state


def check(
    conn: psycopg2.extensions.connection, source: SourceTables, now: datetime | None = None
) -> SourceCheck:
    """The contract on both source tables, every violation listed; for tables that pass,
    their fingerprint and the span of order dates. Reads only."""
    latest = contract.latest_allowed(now)
    with conn.cursor() as cur:
        _utc(cur)
        checked = source_sql.check(DIALECT, _finder(cur), _Reader(cur), source, latest)
    conn.rollback()
    return SourceCheck(*checked)


def load(
    conn: psycopg2.extensions.connection,
    source: SourceTables,
    checked: SourceFingerprint,
    dagster_run_id: str | None = None,
) -> LoadResult:
    """Replace ``raw.customers`` and ``raw.orders`` with the source tables' rows, in one
    repeatable-read transaction that first proves they are still the rows ``checked``
    (else :class:`SourceChanged`, nothing written), and record the load in ``raw.loads``."""
    rows = {"customers": checked.state.customers_rows, "orders": checked.state.orders_rows}
    digests = {table: checked.digest(table) for table in CONTRACT}
    conn.set_session(isolation_level="REPEATABLE READ")
    try:
        with conn.cursor() as cur:
            _utc(cur)
            reader = _Reader(cur)
            # The values do not depend on the validation time: any will do here.
            violations: list[Violation] = []
            tables = source_sql.find_tables(
                DIALECT, _finder(cur), source, violations, contract.latest_allowed()
            )
            if violations or source_sql.fingerprint(reader, tables) != checked:
                raise SourceChanged.of(source)
            ensure_raw_tables(cur)
            cur.execute(f"truncate {RAW_SCHEMA}.customers, {RAW_SCHEMA}.orders")
            for name, table in tables.items():
                names = ", ".join(table.columns)
                cur.execute(f"insert into {RAW_SCHEMA}.{name} ({names}) {table.values()}")
            load_id, loaded_at = record_load(
                cur,
                dagster_run_id,
                {"customers": f"table {source.customers}", "orders": f"table {source.orders}"},
                digests,
                rows,
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return LoadResult(rows, loaded_at, load_id, digests)
