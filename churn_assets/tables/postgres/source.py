"""Raw data from warehouse tables, in Postgres (:mod:`churn_assets.tables.source`): the
contract checked in SQL, the rows copied into ``raw`` by ``insert ... select``.

Each column of :data:`~churn_assets.tables.source.CONTRACT` becomes two expressions over the
source table, chosen by the column's type there: its *status* (0 when the value passes,
else the 1-based number of the first rule it breaks, so a value counts under one rule only,
as in a file) and its *value* as ``raw`` stores it (text ids, naive UTC timestamps,
numeric amounts; null where the status is not 0). One scan per table counts every rule;
only a broken rule costs a second, small query (its first offending rows, by id). Text
means what it means in a file: trimmed, and empty is missing.

The session's time zone is UTC for the check and the copy, so text timestamps without an
offset are UTC, as the file contract reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import psycopg2.extensions

from churn_assets.data import contract
from churn_assets.data.contract import Violation
from churn_assets.limits import MAX_ID_LENGTH, MAX_TEXT_LENGTH, MIN_DATE
from churn_assets.tables.postgres.raw import ensure_raw_tables, record_load
from churn_assets.tables.raw import RAW_SCHEMA, LoadResult
from churn_assets.tables.source import (
    CONTRACT,
    KEYS,
    Column,
    Kind,
    SourceChanged,
    SourceCheck,
    SourceFingerprint,
    SourceState,
    SourceTables,
)

_EXAMPLES = 5
_INTEGER_TYPES = ("int2", "int4", "int8")
_TIMESTAMP_TYPES = ("date", "timestamp", "timestamptz")
# The whitespace Python's str.strip() removes from a file's cells (the common ones).
_TRIMMED = "E' \\t\\n\\r\\f\\v'"
# Control characters no id may hold (limits.ID_FORBIDDEN_CHARACTERS; Postgres text cannot
# hold NUL, nor a lone surrogate).
_CONTROL = "'[\\x01-\\x1f\\x7f-\\x9f]'"
# ISO 8601 as the file contract's reader takes it: a date, optionally a time and an offset.
_ISO = (
    "'^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    "([T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?)?)?"
    " ?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$'"
)
_DECIMAL = f"'^{contract.DECIMAL_PATTERN}$'"
_NOT_FINITE_TEXT = "'^[+-]?(nan|inf|infinity)$'"
_NOT_FINITE = "('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric)"
# A whole number as an id: digits, optionally a zero fraction (17.0), within float64's
# exact integers (16 digits), as a Parquet id column with nulls would hold it.
_WHOLE_ID = "'^-?[0-9]{1,16}(\\.0*)?$'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Expr:
    """A column's status and value expressions over the source table, and its rules."""

    status: str
    value: str
    rules: list[str] = field(default_factory=list)
    shown: str = "null::text"  # the value an example quotes


@dataclass
class _Relation:
    """A source table as found: its quoted name and its columns' types."""

    name: str
    types: dict[str, tuple[str, str]]  # column -> (type name, type category)


def _find(cur: psycopg2.extensions.cursor, table: str) -> _Relation | None:
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
    return _Relation(name, {row[0]: (row[1], row[2]) for row in cur.fetchall()})


def _case(whens: list[tuple[str, str]], rules: list[str]) -> str:
    """A status CASE: the first ``(condition, rule)`` that holds gives its rule's number."""
    parts = []
    for condition, rule in whens:
        if rule not in rules:
            rules.append(rule)
        parts.append(f"when {condition} then {rules.index(rule) + 1}")
    return "case " + " ".join(parts) + " else 0 end" if parts else "0"


def _trimmed(column: str) -> str:
    return f"nullif(btrim({column}::text, {_TRIMMED}), '')"


def _expr(spec: Column, type_name: str, category: str, latest: pd.Timestamp) -> _Expr:
    """The status and value of one contract column over a source column of this type."""
    c = _quote(spec.name)
    rules: list[str] = []
    missing = [(f"{c} is null", contract.NOT_NULL)] if not spec.nullable else []
    shown = f"{c}::text"
    if spec.kind is Kind.TEXT:
        t = _trimmed(c)
        status = _case([(f"length({t}) > {spec.limit}", contract.at_most_rule(spec.limit))], rules)
        return _Expr(status, t, rules, shown)
    if spec.kind is Kind.ID:
        if category == "S":
            t = _trimmed(c)
            whens = [
                (f"{t} is null", contract.NOT_NULL),
                (f"length({t}) > {MAX_ID_LENGTH}", contract.at_most_rule(MAX_ID_LENGTH)),
                (f"{t} ~ {_CONTROL}", contract.NO_CONTROL_CHARACTERS),
            ]
            return _Expr(_case(whens, rules), t, rules, shown)
        if type_name in _INTEGER_TYPES:
            return _Expr(_case(missing, rules), f"{c}::text", rules, shown)
        if category == "N":
            whens = [*missing, (f"not {c}::text ~ {_WHOLE_ID}", contract.ID_RULE)]
            value = f"case when {c}::text ~ {_WHOLE_ID} then split_part({c}::text, '.', 1) end"
            return _Expr(_case(whens, rules), value, rules, shown)
        rule = f"{contract.ID_RULE}, not boolean" if category == "B" else contract.ID_RULE
        return _Expr(_case([*missing, (f"{c} is not null", rule)], rules), "null::text", rules)
    if spec.kind is Kind.TIMESTAMP:
        return _timestamp(spec, c, (type_name, category), latest, missing, rules, shown)
    return _number(spec, c, type_name, category, missing, rules, shown)


def _timestamp(
    spec: Column,
    c: str,
    column_type: tuple[str, str],
    latest: pd.Timestamp,
    missing: list[tuple[str, str]],
    rules: list[str],
    shown: str,
) -> _Expr:
    type_name, category = column_type
    bounds = [
        # A literal (formatted here from a timestamp), so every query can reuse the status.
        (f"{{v}} > '{latest.isoformat(sep=' ')}'::timestamp", contract.future_rule(latest)),
        (f"{{v}} < '{MIN_DATE.isoformat()}'::timestamp", contract.NOT_BEFORE),
    ]
    if type_name in _TIMESTAMP_TYPES:
        v = f"({c} at time zone 'UTC')" if type_name == "timestamptz" else f"{c}::timestamp"
        whens = missing + [(cond.format(v=v), rule) for cond, rule in bounds]
        return _Expr(_case(whens, rules), v, rules, shown)
    if category == "S":
        t = _trimmed(c)
        valid = f"({t} ~ {_ISO} and pg_input_is_valid({t}, 'timestamptz'))"
        v = f"(case when {valid} then {t}::timestamptz at time zone 'UTC' end)"
        whens = [
            *([(f"{t} is null", contract.NOT_NULL)] if not spec.nullable else []),
            (f"length({t}) > {MAX_TEXT_LENGTH}", contract.at_most_rule(MAX_TEXT_LENGTH)),
            (f"{t} is not null and not {valid}", contract.ISO_8601),
            *[(cond.format(v=v), rule) for cond, rule in bounds],
        ]
        return _Expr(_case(whens, rules), v, rules, shown)
    whens = [*missing, (f"{c} is not null", contract.ISO_8601)]
    return _Expr(_case(whens, rules), "null::timestamp", rules, shown)


def _number(
    spec: Column,
    c: str,
    type_name: str,
    category: str,
    missing: list[tuple[str, str]],
    rules: list[str],
    shown: str,
) -> _Expr:
    kind = "integer" if spec.integer else "numeric"
    cast = "integer" if spec.integer else "numeric"
    if category == "N" and type_name != "money":
        n = f"{c}::numeric"
        not_finite = [(f"{n} in {_NOT_FINITE}", contract.FINITE)]
    elif category == "S":
        t = _trimmed(c)
        n = f"(case when {t} ~* {_DECIMAL} then {t}::numeric end)"
        not_finite = [
            *([(f"{t} is null", contract.NOT_NULL)] if not spec.nullable else []),
            (f"length({t}) > {MAX_TEXT_LENGTH}", contract.at_most_rule(MAX_TEXT_LENGTH)),
            (f"{t} ~* {_NOT_FINITE_TEXT}", contract.FINITE),
            (f"{t} is not null and not {t} ~* {_DECIMAL}", kind),
        ]
        missing = []
    else:
        rule = contract.NOT_BOOLEAN if category == "B" else kind
        whens = [*missing, (f"{c} is not null", rule)]
        return _Expr(_case(whens, rules), f"null::{cast}", rules, shown)
    whens = [
        *missing,
        *not_finite,
        *([(f"{n} <> trunc({n})", kind)] if spec.integer else []),
        (f"{n} < {spec.minimum}", contract.minimum_rule(spec.name, spec.minimum)),
        (f"{n} > {spec.maximum}", contract.maximum_rule(spec.name, spec.maximum)),
    ]
    status = _case(whens, rules)
    # The value only where the status is 0: a cast of an out-of-range number would raise.
    return _Expr(status, f"(case when {status} = 0 then {n}::{cast} end)", rules, shown)


@dataclass
class _Table:
    """One source table with its columns' expressions (None: the column is missing)."""

    table: str  # customers or orders
    source: str  # the setting's name, for errors
    relation: _Relation
    exprs: dict[str, _Expr]

    def select(self, *columns: str) -> str:
        """The normalised rows: ``<column>__s`` (status) and ``<column>`` (value)."""
        parts = []
        for name in columns:
            expr = self.exprs[name]
            parts.append(f"{expr.status} as {_quote(name + '__s')}")
            parts.append(f"{expr.value} as {_quote(name)}")
        return f"select {', '.join(parts)} from {self.relation.name}"


def _tables(
    cur: psycopg2.extensions.cursor,
    source: SourceTables,
    violations: list[Violation],
    latest: pd.Timestamp,
) -> dict[str, _Table]:
    """The source tables that exist and have every contract column; the others' problems
    go to ``violations``."""
    found: dict[str, _Table] = {}
    for table, columns in CONTRACT.items():
        name = source.name(table)
        relation = _find(cur, name)
        if relation is None:
            violations.append(Violation(name, "", "a table or view that exists", 0))
            continue
        absent = [spec.name for spec in columns if spec.name not in relation.types]
        if absent:
            rule = contract.column_present_rule(list(relation.types))
            violations.extend(Violation(name, column, rule, 0) for column in absent)
            continue
        exprs = {spec.name: _expr(spec, *relation.types[spec.name], latest) for spec in columns}
        found[table] = _Table(table, name, relation, exprs)
    return found


def _examples(
    cur: psycopg2.extensions.cursor, table: _Table, column: str, where: str
) -> tuple[str, ...]:
    key = KEYS[table.table]
    key_text = _trimmed(_quote(key))
    expr = table.exprs[column]
    cur.execute(
        f"select {key_text}, {expr.shown} from (select *, {expr.status} as st "
        f"from {table.relation.name}) x where {where} limit {_EXAMPLES}"
    )
    shown = []
    for key_value, value in cur.fetchall():
        who = f"{key} {contract.quote_value(key_value)}" if key_value else f"{key} null"
        shown.append(f"{who}: {contract.quote_value(value) if value is not None else 'null'}")
    return tuple(shown)


def _column_rules(cur: psycopg2.extensions.cursor, table: _Table) -> list[Violation]:
    """Every rule of every column of one table, counted in one scan."""
    columns = [spec.name for spec in CONTRACT[table.table]]
    counts = ["count(*)"]
    where: list[tuple[str, str, str]] = []
    for name in columns:
        expr = table.exprs[name]
        for number, rule in enumerate(expr.rules, start=1):
            counts.append(f"count(*) filter (where {_quote(name + '__s')} = {number})")
            where.append((name, rule, f"st = {number}"))
    cur.execute(f"select {', '.join(counts)} from ({table.select(*columns)}) rows")
    total, *bad = cur.fetchone()
    violations = []
    if total == 0:
        violations.append(Violation(table.source, "", contract.AT_LEAST_ONE_ROW, 0))
    for (column, rule, condition), rows in zip(where, bad, strict=True):
        if rows:
            examples = _examples(cur, table, column, condition)
            violations.append(Violation(table.source, column, rule, rows, examples))
    return violations


def _unique(cur: psycopg2.extensions.cursor, table: _Table, column: str) -> Violation | None:
    """Rows sharing an id with another row (all of them, as in a file)."""
    q = _quote(column)
    cur.execute(
        f"select coalesce(sum(n), 0), (array_agg(v order by v))[1:{_EXAMPLES}] from ("
        f"select {q} v, count(*) n from ({table.select(column)}) r "
        f"where {_quote(column + '__s')} = 0 group by {q} having count(*) > 1) d"
    )
    rows, values = cur.fetchone()
    if not rows:
        return None
    examples = tuple(f"{column} {contract.quote_value(v)}" for v in values or ())
    return Violation(table.source, column, contract.UNIQUE, int(rows), examples)


def _known_customers(
    cur: psycopg2.extensions.cursor, orders: _Table, customers: _Table
) -> Violation | None:
    cur.execute(
        f"with c as ({customers.select('customer_id')}), o as ({orders.select('customer_id')}) "
        "select count(*), (array_agg(distinct customer_id))[1:5] from o "
        "where customer_id__s = 0 and not exists (select 1 from c where c.customer_id__s = 0 "
        "and c.customer_id = o.customer_id)"
    )
    rows, values = cur.fetchone()
    if not rows:
        return None
    examples = tuple(f"customer_id {contract.quote_value(v)}" for v in (values or ())[:_EXAMPLES])
    return Violation(orders.source, "customer_id", contract.KNOWN_CUSTOMER, rows, examples)


def _utc(cur: psycopg2.extensions.cursor) -> None:
    cur.execute("set local timezone = 'UTC'")


def observe(conn: psycopg2.extensions.connection, source: SourceTables) -> SourceState:
    """Row counts and the newest ``ordered_at`` as stored (no contract, no parsing): cheap
    enough for every sensor tick. Raises ``ValueError`` naming a missing table or column."""
    with conn.cursor() as cur:
        _utc(cur)
        relations = {}
        for table in CONTRACT:
            relation = _find(cur, source.name(table))
            if relation is None:
                raise ValueError(f"{source.name(table)}: breaks rule 'a table or view that exists'")
            relations[table] = relation
        if "ordered_at" not in relations["orders"].types:
            raise ValueError(f"{source.orders}: column 'ordered_at' is missing")
        cur.execute(f"select count(*) from {relations['customers'].name}")
        customers = cur.fetchone()[0]
        cur.execute(f"select count(*), max(ordered_at)::text from {relations['orders'].name}")
        orders, newest = cur.fetchone()
    conn.rollback()
    return SourceState(customers, orders, newest)


def check(
    conn: psycopg2.extensions.connection, source: SourceTables, now: datetime | None = None
) -> SourceCheck:
    """The contract on both source tables, every violation listed; for tables that pass,
    their fingerprint and the span of order dates. Reads only."""
    latest = contract.latest_allowed(now)
    violations: list[Violation] = []
    with conn.cursor() as cur:
        _utc(cur)
        tables = _tables(cur, source, violations, latest)
        for table in tables.values():
            violations.extend(_column_rules(cur, table))
            for spec in CONTRACT[table.table]:
                if spec.unique and (found := _unique(cur, table, spec.name)) is not None:
                    violations.append(found)
        if len(tables) == len(CONTRACT):
            found = _known_customers(cur, tables["orders"], tables["customers"])
            if found is not None:
                violations.append(found)
        if violations:
            conn.rollback()
            return SourceCheck(violations)
        fingerprint = _fingerprint(cur, tables)
        dates = tables["orders"].select("ordered_at")
        cur.execute(f"select min(ordered_at)::date, max(ordered_at)::date from ({dates}) o")
        first, last = cur.fetchone()
    conn.rollback()
    return SourceCheck([], fingerprint, first, last)


def _fingerprint(cur: psycopg2.extensions.cursor, tables: dict[str, _Table]) -> SourceFingerprint:
    """Counts, the newest order and, per table, the sum of a 64-bit hash of each row's
    values as ``raw`` receives them (order-independent), modulo 2^64."""
    hashes, counts = {}, {}
    for name, table in tables.items():
        columns = [spec.name for spec in CONTRACT[name]]
        row = ", ".join(_quote(column) for column in columns)
        cur.execute(
            f"select count(*), coalesce(sum(hashtextextended(row({row})::text, 0)::numeric), 0) "
            f"from ({table.select(*columns)}) r"
        )
        counts[name], total = cur.fetchone()
        hashes[name] = f"{int(total) % 2**64:016x}"
    cur.execute(f"select max(ordered_at)::text from {tables['orders'].relation.name}")
    newest = cur.fetchone()[0]
    state = SourceState(counts["customers"], counts["orders"], newest)
    return SourceFingerprint(state, hashes["customers"], hashes["orders"])


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
            # The values do not depend on the validation time: any will do here.
            violations: list[Violation] = []
            tables = _tables(cur, source, violations, contract.latest_allowed())
            if violations or _fingerprint(cur, tables) != checked:
                raise SourceChanged(
                    f"{source.customers}, {source.orders}: the tables changed after their "
                    "check; nothing was loaded (the next observation loads the new rows)"
                )
            ensure_raw_tables(cur)
            cur.execute(f"truncate {RAW_SCHEMA}.customers, {RAW_SCHEMA}.orders")
            for name, table in tables.items():
                columns = [spec.name for spec in CONTRACT[name]]
                names = ", ".join(columns)
                values = ", ".join(_quote(column) for column in columns)
                cur.execute(
                    f"insert into {RAW_SCHEMA}.{name} ({names}) "
                    f"select {values} from ({table.select(*columns)}) r"
                )
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
