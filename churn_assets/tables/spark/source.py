"""Raw data from warehouse tables, on Spark (:mod:`churn_assets.tables.source`): the contract
checked in Spark SQL (:mod:`churn_assets.tables.source_sql`, in Spark's words here), the
rows copied into ``raw`` by ``insert overwrite ... select``. No row passes through Python.

Where Spark's SQL differs from Postgres's, and what this module does about it:

- **Regular expressions** are Java's (``rlike``, found anywhere like Postgres's ``~``);
  Java's ``$`` also matches before a final line break, so patterns end with ``\\z``.
  ``trim`` removes spaces only: text is trimmed with ``regexp_replace`` of the same
  whitespace as on Postgres.
- **Text is parsed** with ``try_cast`` once it matched the same ISO 8601 or decimal pattern:
  a value that does not parse is null, never an error. At the edges of ISO 8601 each engine
  keeps its own parser's reading (Spark takes an hour without minutes, ``T10``, which
  Postgres refuses; Postgres takes a date with only an offset, ``2024-01-05Z``, and second
  60, which Spark refuses; pandas, for files, differs from both there).
- **Time**: the session's zone is UTC (:func:`churn_assets.infra.spark.session_conf`), so a
  ``timestamp`` (an instant) reads as naive UTC, and a ``timestamp_ntz``, a ``date`` and text
  without an offset are taken as UTC, as the file contract reads them.
- **Numbers**: a decimal cannot hold NaN, a float or double can (checked with ``isnan``).
  ``raw``'s amounts are doubles and its item counts bigints, as a file load writes them
  (pandas' float64 and Int64 through Arrow), so both loads give the same raw tables.
- **Types** come from the catalog (``tableExists``, the table's schema): a table or a view,
  Hive or temporary.
- **No transactions, no snapshot**: a scan sees one state of a table, two scans may see two.
  So the load copies the rows into staging tables first, then proves the copy is what was
  checked (the same count and hash as the check's fingerprint, the same newest order in the
  source) before it replaces ``raw``; else :class:`SourceChanged`, and ``raw`` is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from churn_assets.data import contract
from churn_assets.data.contract import Violation
from churn_assets.limits import ID_FORBIDDEN_CHARACTERS
from churn_assets.tables import source_sql
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
from churn_assets.tables.spark.common import identifier
from churn_assets.tables.spark.raw import record_load, staging_table

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import DataType

# The exact integers of a float64: a float id beyond them may not be the id it was
# (the file contract's rule for float ids); a decimal id may have 16 digits, as on Postgres.
_FLOAT_ID_LIMIT = 2**53
_DECIMAL_ID_LIMIT = 10**16


class SparkDialect:
    """Spark's words for :class:`~churn_assets.tables.source_sql.Dialect`."""

    # Java reads the limit's pattern as Python does (NUL and lone surrogates included).
    control_characters = ID_FORBIDDEN_CHARACTERS

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def literal(self, text: str) -> str:
        # Spark's parser reads backslash escapes in string literals.
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def text(self, expr: str) -> str:
        return f"cast({expr} as string)"

    def trimmed(self, expr: str) -> str:
        characters = "".join(f"\\x{ord(c):02x}" for c in source_sql.WHITESPACE)
        around = self.literal(f"^[{characters}]+|[{characters}]+\\z")
        return f"nullif(regexp_replace(cast({expr} as string), {around}, ''), '')"

    def matches(self, expr: str, pattern: str, *, ignore_case: bool = False) -> str:
        java = pattern[:-1] + "\\z" if pattern.endswith("$") else pattern
        return f"({expr} rlike {self.literal(('(?i)' if ignore_case else '') + java)})"

    def raw_type(self, spec: Column) -> str:
        if spec.kind is Kind.TIMESTAMP:
            return "timestamp"
        if spec.kind is Kind.NUMBER:
            return "bigint" if spec.integer else "double"
        return "string"

    def timestamp(self, expr: str, source_type: SourceType) -> str:
        # timestamp_ntz and date are read in the session's zone, UTC.
        return expr if source_type is SourceType.INSTANT else f"cast({expr} as timestamp)"

    def parses_as_timestamp(self, text: str) -> str:
        return f"try_cast({text} as timestamp) is not null"

    def text_timestamp(self, text: str) -> str:
        return f"try_cast({text} as timestamp)"

    def number(self, expr: str, source_type: SourceType) -> str:
        return f"cast({expr} as double)" if source_type is SourceType.FLOAT else expr

    def not_finite(self, number: str, source_type: SourceType) -> str | None:
        if source_type is not SourceType.FLOAT:
            return None  # integers and decimals are always finite
        return f"(isnan({number}) or abs({number}) = double('infinity'))"

    def fractional(self, number: str) -> str:
        # round, not floor: floor of a double is a bigint, wrong beyond 2^63.
        return f"{number} <> round({number})"

    def text_number(self, text: str) -> str:
        # Beyond a double's range: an infinity, which the bounds then refuse.
        return f"cast({text} as double)"

    def whole_id(self, expr: str, source_type: SourceType) -> str:
        if source_type is SourceType.FLOAT:
            limit = _FLOAT_ID_LIMIT
            return f"(not isnan({expr}) and {expr} = round({expr}) and abs({expr}) < {limit})"
        return f"({expr} = round({expr}) and abs({expr}) < {_DECIMAL_ID_LIMIT})"

    def whole_id_text(self, expr: str, source_type: SourceType) -> str:
        return f"cast(cast({expr} as decimal(38,0)) as string)"

    def hash_sum(self, columns: Sequence[str]) -> str:
        # xxhash64 skips nulls: each column's null flag keeps (a, null) apart from (null, a).
        values = ", ".join(f"{column}, {column} is null" for column in columns)
        return f"coalesce(sum(cast(xxhash64({values}) as decimal(20,0))), 0)"


DIALECT = SparkDialect()


class _Reader:
    def __init__(self, session: SparkSession) -> None:
        self.session = session

    def one(self, sql: str) -> Sequence[Any]:
        return tuple(self.session.sql(sql).first() or ())

    def all(self, sql: str) -> Sequence[Sequence[Any]]:
        return [tuple(row) for row in self.session.sql(sql).collect()]


def _source_type(data_type: DataType) -> SourceType:
    from pyspark.sql import types

    kinds: list[tuple[tuple[type[DataType], ...], SourceType]] = [
        ((types.StringType, types.CharType, types.VarcharType), SourceType.TEXT),
        ((types.ByteType, types.ShortType, types.IntegerType, types.LongType), SourceType.INTEGER),
        ((types.DecimalType,), SourceType.EXACT),
        ((types.FloatType, types.DoubleType), SourceType.FLOAT),
        ((types.BooleanType,), SourceType.BOOLEAN),
        ((types.DateType,), SourceType.DATE),
        ((types.TimestampNTZType,), SourceType.TIMESTAMP),
        ((types.TimestampType,), SourceType.INSTANT),
    ]
    for classes, source_type in kinds:
        if isinstance(data_type, classes):
            return source_type
    return SourceType.OTHER


def _finder(session: SparkSession) -> source_sql.Find:
    def find(table: str) -> Relation | None:
        relation = identifier(*table.split("."))
        if not session.catalog.tableExists(relation):
            return None
        fields = session.table(relation).schema.fields
        return Relation(relation, {f.name: _source_type(f.dataType) for f in fields})

    return find


def observe(session: SparkSession, source: SourceTables) -> SourceState:
    """Row counts and the newest ``ordered_at`` as stored (no contract, no parsing), in one
    query. Raises ``ValueError`` naming a missing table or column."""
    return source_sql.observe(DIALECT, _finder(session), _Reader(session), source)


def check(session: SparkSession, source: SourceTables, now: datetime | None = None) -> SourceCheck:
    """The contract on both source tables, every violation listed; for tables that pass,
    their fingerprint and the span of order dates. Reads only."""
    latest = contract.latest_allowed(now)
    reader = _Reader(session)
    return SourceCheck(*source_sql.check(DIALECT, _finder(session), reader, source, latest))


def _raw_columns(table: str) -> str:
    """A raw table's columns in Spark's types (those a file load writes, see above)."""
    columns = [f"{DIALECT.quote(spec.name)} {DIALECT.raw_type(spec)}" for spec in CONTRACT[table]]
    return ", ".join([*columns, "_loaded_at timestamp"])


def load(
    session: SparkSession,
    source: SourceTables,
    checked: SourceFingerprint,
    dagster_run_id: str | None = None,
) -> LoadResult:
    """Replace ``raw.customers`` and ``raw.orders`` with the source tables' rows, each row
    stamped ``_loaded_at`` (the load's time), and record the load in ``raw.loads``.

    The rows go to staging tables first (the long part); only a copy proven to be the rows
    ``checked`` replaces ``raw`` (else :class:`SourceChanged`, nothing replaced). Then, as
    for a file load (:mod:`churn_assets.tables.spark.raw`): a failure between the two
    overwrites leaves new customers beside old orders and no new row in ``raw.loads``, and
    the next load replaces both."""
    changed = SourceChanged.of(source)
    reader = _Reader(session)
    violations: list[Violation] = []
    # The values do not depend on the validation time: any will do here.
    tables = source_sql.find_tables(
        DIALECT, _finder(session), source, violations, contract.latest_allowed()
    )
    if violations:
        raise changed
    loaded_at = datetime.now(UTC)
    stamp = f"timestamp'{loaded_at:%Y-%m-%d %H:%M:%S.%f}'"  # the session's zone is UTC
    session.sql(f"create database if not exists {RAW_SCHEMA}")
    try:
        for name, table in tables.items():
            session.sql(f"drop table if exists {staging_table(name)}")
            session.sql(
                f"create table {staging_table(name)} using parquet as "
                f"select *, {stamp} as _loaded_at from ({table.values()}) v"
            )
        copied = {
            name: source_sql.hash_rows(reader, DIALECT, staging_table(name), name)
            for name in tables
        }
        newest = source_sql.newest_order(reader, DIALECT, tables["orders"].relation)
        state = SourceState(copied["customers"][0], copied["orders"][0], newest)
        if SourceFingerprint(state, copied["customers"][1], copied["orders"][1]) != checked:
            raise changed
        for name, table in tables.items():
            target = f"{RAW_SCHEMA}.{name}"
            session.sql(f"create table if not exists {target} ({_raw_columns(name)}) using parquet")
            columns = ", ".join([*(DIALECT.quote(c) for c in table.columns), "_loaded_at"])
            session.sql(
                f"insert overwrite table {target} ({columns}) "
                f"select {columns} from {staging_table(name)}"
            )
    finally:
        for name in tables:
            session.sql(f"drop table if exists {staging_table(name)}")
    rows = {"customers": state.customers_rows, "orders": state.orders_rows}
    digests = {table: checked.digest(table) for table in CONTRACT}
    sources = {table: f"table {source.name(table)}" for table in CONTRACT}
    load_id = record_load(session, dagster_run_id, sources, digests, rows, loaded_at)
    return LoadResult(rows, loaded_at, load_id, digests)
