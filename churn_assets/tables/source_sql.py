"""The contract of source tables (:mod:`churn_assets.tables.source`) as SQL, written once for
every engine: each column's rules in their order, and the queries that count them, quote
examples, find duplicate ids and unknown customers, and fingerprint the rows. What an engine
spells its own way (quoting, trimming, regular expressions, parsing text, hashing, the
types of ``raw``) is its :class:`Dialect`; how it runs a query is its :class:`Reader`; how
it finds a table and its columns' types is its ``find`` (:data:`Find`). So both engines
report the same broken rules, in the same order, in the same words.

Each column of :data:`~churn_assets.tables.source.CONTRACT` becomes two expressions over
the source table, chosen by the column's type there (its :class:`SourceType`): its *status*
(0 when the value passes, else the 1-based number of the first rule it breaks, so a value
counts under one rule only, as in a file) and its *value* as ``raw`` stores it (text ids,
naive UTC timestamps, numbers; null where the status is not 0). One scan per table counts
every rule and, in the same scan, fingerprints the rows (so the fingerprint describes the
rows whose rules were counted); ids shared by rows and orders of unknown customers cost a
query each. Only a broken rule costs more: one query per table for the first offending rows
of every broken rule, by id, and one for the first duplicate ids or unknown customers. Text
means what it means in a file: trimmed, and empty is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Any, Protocol

import pandas as pd

from churn_assets.data import contract
from churn_assets.data.contract import Violation
from churn_assets.limits import MAX_ID_LENGTH, MAX_TEXT_LENGTH, MIN_DATE
from churn_assets.tables.source import (
    CONTRACT,
    KEYS,
    Column,
    Kind,
    SourceFingerprint,
    SourceState,
    SourceTables,
    hash_digest,
)

EXAMPLES = 5
"""Most offending values quoted per broken rule, as for a file."""
WHITESPACE = " \t\n\r\f\v"
"""What trimming removes from text: the common part of what Python's ``str.strip()`` removes
from a file's cells (not the Unicode spaces, which neither engine's SQL strips)."""
ISO_8601 = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    "([T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?)?)?"
    " ?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
)
"""ISO 8601 as the file contract's reader takes it: a date, optionally a time and an offset
(a regular expression both Postgres and Java read alike). The engine's own parser then
decides what else is valid (a 30 February is not)."""
DECIMAL = f"^{contract.DECIMAL_PATTERN}$"
NOT_FINITE_TEXT = "^[+-]?(nan|inf|infinity)$"


class SourceType(Enum):
    """What the contract needs to know of a source column's type, whatever the engine
    calls it (each engine's ``find`` maps its types onto these)."""

    TEXT = "text"
    INTEGER = "integer"
    EXACT = "exact number"  # numeric, decimal
    FLOAT = "float"  # real, double: may hold NaN and infinities
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"  # wall-clock time without a zone: UTC, as the contract reads it
    INSTANT = "instant"  # a timestamp with a time zone
    OTHER = "other"


class Dialect(Protocol):
    """How an engine spells what its SQL does not share with the other's. Every method
    returns an SQL expression (or condition) over the expressions it is given."""

    control_characters: str
    """The regular expression of a character no id may hold (as far as the engine's text
    can hold it)."""

    def quote(self, name: str) -> str:
        """A column name as an identifier."""
        ...

    def literal(self, text: str) -> str:
        """``text`` as a string literal."""
        ...

    def text(self, expr: str) -> str:
        """Any value as text (what an example quotes)."""
        ...

    def trimmed(self, expr: str) -> str:
        """A value as text without :data:`WHITESPACE` around it, null when nothing is left."""
        ...

    def matches(self, expr: str, pattern: str, *, ignore_case: bool = False) -> str:
        """Whether the regular expression ``pattern`` (as text, not yet a literal) is found
        in the text ``expr``; ``$`` ends the text (not a line)."""
        ...

    def raw_type(self, spec: Column) -> str:
        """The type of ``spec``'s column in ``raw``."""
        ...

    def timestamp(self, expr: str, source_type: SourceType) -> str:
        """A date or timestamp column's value as a naive UTC timestamp."""
        ...

    def parses_as_timestamp(self, text: str) -> str:
        """Whether ISO 8601 text (it matched :data:`ISO_8601`) is a valid timestamp."""
        ...

    def text_timestamp(self, text: str) -> str:
        """Valid ISO 8601 text as a naive UTC timestamp (without an offset: UTC)."""
        ...

    def number(self, expr: str, source_type: SourceType) -> str:
        """A number column's value, as compared with the contract's bounds."""
        ...

    def not_finite(self, number: str, source_type: SourceType) -> str | None:
        """Whether a number (from :meth:`number`) is NaN or infinite (None: never)."""
        ...

    def fractional(self, number: str) -> str:
        """Whether a number is not a whole number."""
        ...

    def text_number(self, text: str) -> str:
        """Decimal text (it matched :data:`DECIMAL`) as a number."""
        ...

    def whole_id(self, expr: str, source_type: SourceType) -> str:
        """Whether an exact or float number column's value is a whole number an id may be
        (as a Parquet id column with nulls holds integers)."""
        ...

    def whole_id_text(self, expr: str, source_type: SourceType) -> str:
        """Such a number (:meth:`whole_id`) as an id's text, without a fraction."""
        ...

    def hash_sum(self, columns: Sequence[str]) -> str:
        """An aggregate: the sum of a 64-bit hash of each row's values of ``columns`` (an
        exact number, 0 without rows), whatever the order of the rows."""
        ...


class Reader(Protocol):
    """Runs a query on the engine: its first row, or all its rows."""

    def one(self, sql: str) -> Sequence[Any]: ...

    def all(self, sql: str) -> Sequence[Sequence[Any]]: ...


@dataclass(frozen=True)
class Relation:
    """A source table as the engine found it: its name as SQL, its columns' types."""

    name: str
    types: dict[str, SourceType]


Find = Callable[[str], Relation | None]
"""An engine's look-up of a table by its setting's name (None: no such table or view)."""


@dataclass
class _Expr:
    """A column's status and value expressions over the source table, and its rules."""

    status: str
    value: str
    rules: list[str] = field(default_factory=list)
    shown: str = ""  # the value an example quotes


def _case(whens: list[tuple[str, str]], rules: list[str]) -> str:
    """A status CASE: the first ``(condition, rule)`` that holds gives its rule's number."""
    parts = []
    for condition, rule in whens:
        if rule not in rules:
            rules.append(rule)
        parts.append(f"when {condition} then {rules.index(rule) + 1}")
    return "case " + " ".join(parts) + " else 0 end" if parts else "0"


def _null(d: Dialect, spec: Column) -> str:
    return f"cast(null as {d.raw_type(spec)})"


def _expr(d: Dialect, spec: Column, source_type: SourceType, latest: pd.Timestamp) -> _Expr:
    """The status and value of one contract column over a source column of this type."""
    c = d.quote(spec.name)
    rules: list[str] = []
    missing = [(f"{c} is null", contract.NOT_NULL)] if not spec.nullable else []
    shown = d.text(c)
    if spec.kind is Kind.TEXT:
        t = d.trimmed(c)
        status = _case([(f"length({t}) > {spec.limit}", contract.at_most_rule(spec.limit))], rules)
        return _Expr(status, t, rules, shown)
    if spec.kind is Kind.ID:
        return _id(d, spec, c, source_type, missing, rules, shown)
    if spec.kind is Kind.TIMESTAMP:
        return _timestamp(d, spec, c, source_type, latest, missing, rules, shown)
    return _number(d, spec, c, source_type, missing, rules, shown)


def _id(
    d: Dialect,
    spec: Column,
    c: str,
    source_type: SourceType,
    missing: list[tuple[str, str]],
    rules: list[str],
    shown: str,
) -> _Expr:
    if source_type is SourceType.TEXT:
        t = d.trimmed(c)
        whens = [
            (f"{t} is null", contract.NOT_NULL),
            (f"length({t}) > {MAX_ID_LENGTH}", contract.at_most_rule(MAX_ID_LENGTH)),
            (d.matches(t, d.control_characters), contract.NO_CONTROL_CHARACTERS),
        ]
        return _Expr(_case(whens, rules), t, rules, shown)
    if source_type is SourceType.INTEGER:
        return _Expr(_case(missing, rules), d.text(c), rules, shown)
    if source_type in (SourceType.EXACT, SourceType.FLOAT):
        whole = d.whole_id(c, source_type)
        whens = [*missing, (f"not {whole}", contract.ID_RULE)]
        value = f"case when {whole} then {d.whole_id_text(c, source_type)} end"
        return _Expr(_case(whens, rules), value, rules, shown)
    boolean = source_type is SourceType.BOOLEAN
    rule = f"{contract.ID_RULE}, not boolean" if boolean else contract.ID_RULE
    whens = [*missing, (f"{c} is not null", rule)]
    return _Expr(_case(whens, rules), _null(d, spec), rules, shown)


def _timestamp(
    d: Dialect,
    spec: Column,
    c: str,
    source_type: SourceType,
    latest: pd.Timestamp,
    missing: list[tuple[str, str]],
    rules: list[str],
    shown: str,
) -> _Expr:
    bounds = [
        # A literal (formatted here from a timestamp), so every query can reuse the status.
        (f"{{v}} > cast('{latest.isoformat(sep=' ')}' as timestamp)", contract.future_rule(latest)),
        (f"{{v}} < cast('{MIN_DATE.isoformat()}' as timestamp)", contract.NOT_BEFORE),
    ]
    if source_type in (SourceType.DATE, SourceType.TIMESTAMP, SourceType.INSTANT):
        v = d.timestamp(c, source_type)
        whens = missing + [(cond.format(v=v), rule) for cond, rule in bounds]
        return _Expr(_case(whens, rules), v, rules, shown)
    if source_type is SourceType.TEXT:
        t = d.trimmed(c)
        valid = f"({d.matches(t, ISO_8601)} and {d.parses_as_timestamp(t)})"
        v = f"(case when {valid} then {d.text_timestamp(t)} end)"
        whens = [
            *([(f"{t} is null", contract.NOT_NULL)] if not spec.nullable else []),
            (f"length({t}) > {MAX_TEXT_LENGTH}", contract.at_most_rule(MAX_TEXT_LENGTH)),
            (f"{t} is not null and not {valid}", contract.ISO_8601),
            *[(cond.format(v=v), rule) for cond, rule in bounds],
        ]
        return _Expr(_case(whens, rules), v, rules, shown)
    whens = [*missing, (f"{c} is not null", contract.ISO_8601)]
    return _Expr(_case(whens, rules), _null(d, spec), rules, shown)


def _number(
    d: Dialect,
    spec: Column,
    c: str,
    source_type: SourceType,
    missing: list[tuple[str, str]],
    rules: list[str],
    shown: str,
) -> _Expr:
    kind = "integer" if spec.integer else "numeric"
    if source_type in (SourceType.INTEGER, SourceType.EXACT, SourceType.FLOAT):
        n = d.number(c, source_type)
        condition = d.not_finite(n, source_type)
        not_finite = [(condition, contract.FINITE)] if condition else []
    elif source_type is SourceType.TEXT:
        t = d.trimmed(c)
        is_decimal = d.matches(t, DECIMAL, ignore_case=True)
        n = f"(case when {is_decimal} then {d.text_number(t)} end)"
        not_finite = [
            *([(f"{t} is null", contract.NOT_NULL)] if not spec.nullable else []),
            (f"length({t}) > {MAX_TEXT_LENGTH}", contract.at_most_rule(MAX_TEXT_LENGTH)),
            (d.matches(t, NOT_FINITE_TEXT, ignore_case=True), contract.FINITE),
            (f"{t} is not null and not {is_decimal}", kind),
        ]
        missing = []
    else:
        rule = contract.NOT_BOOLEAN if source_type is SourceType.BOOLEAN else kind
        whens = [*missing, (f"{c} is not null", rule)]
        return _Expr(_case(whens, rules), _null(d, spec), rules, shown)
    whens = [
        *missing,
        *not_finite,
        *([(d.fractional(n), kind)] if spec.integer else []),
        (f"{n} < {spec.minimum}", contract.minimum_rule(spec.name, spec.minimum)),
        (f"{n} > {spec.maximum}", contract.maximum_rule(spec.name, spec.maximum)),
    ]
    status = _case(whens, rules)
    # The value only where the status is 0: a cast of an out-of-range number may raise.
    value = f"(case when {status} = 0 then cast({n} as {d.raw_type(spec)}) end)"
    return _Expr(status, value, rules, shown)


@dataclass
class SourceTable:
    """One source table with its columns' expressions."""

    table: str  # customers or orders
    source: str  # the setting's name, for errors
    relation: Relation
    exprs: dict[str, _Expr]
    dialect: Dialect

    @property
    def columns(self) -> list[str]:
        return [spec.name for spec in CONTRACT[self.table]]

    def select(self, *columns: str, source_columns: Sequence[str] = ()) -> str:
        """The normalised rows: ``<column>__s`` (status) and ``<column>`` (value) of each
        of ``columns``, and ``<column>__source`` (as stored) of each of ``source_columns``."""
        q = self.dialect.quote
        parts = []
        for name in columns:
            expr = self.exprs[name]
            parts.append(f"{expr.status} as {q(name + '__s')}")
            parts.append(f"{expr.value} as {q(name)}")
        parts.extend(f"{q(name)} as {q(name + '__source')}" for name in source_columns)
        return f"select {', '.join(parts)} from {self.relation.name}"

    def values(self) -> str:
        """The rows as ``raw`` receives them: each contract column's value, by name."""
        q = self.dialect.quote
        names = ", ".join(q(column) for column in self.columns)
        return f"select {names} from ({self.select(*self.columns)}) r"


def find_tables(
    d: Dialect,
    find: Find,
    source: SourceTables,
    violations: list[Violation],
    latest: pd.Timestamp,
) -> dict[str, SourceTable]:
    """The source tables that exist and have every contract column; the others' problems
    go to ``violations``."""
    found: dict[str, SourceTable] = {}
    for table, columns in CONTRACT.items():
        name = source.name(table)
        relation = find(name)
        if relation is None:
            violations.append(Violation(name, "", "a table or view that exists", 0))
            continue
        absent = [spec.name for spec in columns if spec.name not in relation.types]
        if absent:
            rule = contract.column_present_rule(list(relation.types))
            violations.extend(Violation(name, column, rule, 0) for column in absent)
            continue
        exprs = {spec.name: _expr(d, spec, relation.types[spec.name], latest) for spec in columns}
        found[table] = SourceTable(table, name, relation, exprs, d)
    return found


_DATED = (SourceType.TEXT, SourceType.DATE, SourceType.TIMESTAMP, SourceType.INSTANT)


@dataclass(frozen=True)
class _Scan:
    """What one scan of a source table found: its rows, each rule's offending rows, its
    rows' hash and, for orders, the span of order dates and the newest order as stored."""

    rows: int
    broken: list[tuple[str, str, int, int]]  # column, rule, rule number, rows
    hash: int
    first_order_on: date | None = None
    last_order_on: date | None = None
    newest_order_at: str | None = None


def _scan(reader: Reader, table: SourceTable, *, rules: bool = True) -> _Scan:
    """Every rule of every column of one table counted, and its rows fingerprinted, in one
    scan."""
    d = table.dialect
    aggregates = ["count(*)"]
    counted: list[tuple[str, str, int]] = []
    if rules:
        for name in table.columns:
            for number, rule in enumerate(table.exprs[name].rules, start=1):
                aggregates.append(f"count(*) filter (where {d.quote(name + '__s')} = {number})")
                counted.append((name, rule, number))
    aggregates.append(d.hash_sum([d.quote(column) for column in table.columns]))
    orders = table.table == "orders"
    if orders:
        # The span of the dates that pass only (a year 0 would not even become a date).
        at = f"case when {d.quote('ordered_at__s')} = 0 then {d.quote('ordered_at')} end"
        source_at = d.quote("ordered_at__source")
        # The newest as stored, where a value that passes can be stored (no max of booleans).
        dated = table.relation.types["ordered_at"] in _DATED
        aggregates += [
            f"cast(min({at}) as date)",
            f"cast(max({at}) as date)",
            d.text(f"max({source_at})" if dated else "null"),
        ]
    rows_sql = table.select(*table.columns, source_columns=["ordered_at"] if orders else [])
    row = list(reader.one(f"select {', '.join(aggregates)} from ({rows_sql}) r"))
    total, bad, hashed = row[0], row[1 : 1 + len(counted)], row[1 + len(counted)]
    first, last, newest = row[2 + len(counted) :] if orders else (None, None, None)
    broken = [
        (column, rule, number, int(count))
        for (column, rule, number), count in zip(counted, bad, strict=True)
        if count
    ]
    return _Scan(int(total), broken, int(hashed), first, last, newest)


def _examples(
    reader: Reader, table: SourceTable, broken: list[tuple[str, str, int, int]]
) -> list[tuple[str, ...]]:
    """The first offending rows of each broken rule (by the row's id), in one query."""
    d = table.dialect
    key = KEYS[table.table]
    key_text = d.trimmed(d.quote(key))
    parts = []
    for i, (column, _, number, _) in enumerate(broken):
        expr = table.exprs[column]
        parts.append(
            f"(select {i} as i, {key_text} as k, {expr.shown} as v from (select *, "
            f"{expr.status} as churn__status from {table.relation.name}) x "
            f"where churn__status = {number} "
            f"limit {EXAMPLES})"
        )
    shown: list[list[str]] = [[] for _ in broken]
    for i, key_value, value in reader.all(" union all ".join(parts)):
        who = f"{key} {contract.quote_value(key_value)}" if key_value else f"{key} null"
        quoted = contract.quote_value(value) if value is not None else "null"
        shown[int(i)].append(f"{who}: {quoted}")
    return [tuple(examples) for examples in shown]


def _column_rules(reader: Reader, table: SourceTable, scan: _Scan) -> list[Violation]:
    violations = []
    if scan.rows == 0:
        violations.append(Violation(table.source, "", contract.AT_LEAST_ONE_ROW, 0))
    if scan.broken:
        examples = _examples(reader, table, scan.broken)
        for (column, rule, _, rows), shown in zip(scan.broken, examples, strict=True):
            violations.append(Violation(table.source, column, rule, rows, shown))
    return violations


def _unique(reader: Reader, table: SourceTable, column: str) -> Violation | None:
    """Rows sharing an id with another row (all of them, as in a file)."""
    q = table.dialect.quote
    duplicates = (
        f"select {q(column)} v, count(*) n from ({table.select(column)}) r "
        f"where {q(column + '__s')} = 0 group by {q(column)} having count(*) > 1"
    )
    rows = int(reader.one(f"select coalesce(sum(n), 0) from ({duplicates}) d")[0])
    if not rows:
        return None
    examples = _first_values(reader, f"select v from ({duplicates}) d")
    shown = tuple(f"{column} {contract.quote_value(v)}" for v in examples)
    return Violation(table.source, column, contract.UNIQUE, rows, shown)


def _known_customers(
    reader: Reader, orders: SourceTable, customers: SourceTable
) -> Violation | None:
    unknown = (
        f"with c as ({customers.select('customer_id')}), o as ({orders.select('customer_id')}) "
        "select customer_id from o where customer_id__s = 0 and not exists (select 1 from c "
        "where c.customer_id__s = 0 and c.customer_id = o.customer_id)"
    )
    rows = int(reader.one(f"select count(*) from ({unknown}) u")[0])
    if not rows:
        return None
    examples = _first_values(reader, f"select distinct customer_id from ({unknown}) u")
    shown = tuple(f"customer_id {contract.quote_value(v)}" for v in examples)
    return Violation(orders.source, "customer_id", contract.KNOWN_CUSTOMER, rows, shown)


def _first_values(reader: Reader, values: str) -> list[Any]:
    """The first :data:`EXAMPLES` values of a one-column query, sorted: a second, small query
    only for a broken rule (never every offending value gathered into one array)."""
    return [row[0] for row in reader.all(f"select * from ({values}) x order by 1 limit {EXAMPLES}")]


def check(
    d: Dialect, find: Find, reader: Reader, source: SourceTables, latest: pd.Timestamp
) -> tuple[list[Violation], SourceFingerprint | None, date | None, date | None]:
    """The contract on both source tables, every violation listed; for tables that pass,
    their fingerprint and the span of order dates (each engine's ``check`` wraps this in
    what its reads need: a transaction, a session)."""
    violations: list[Violation] = []
    tables = find_tables(d, find, source, violations, latest)
    scans = {}
    for name, table in tables.items():
        scans[name] = _scan(reader, table)
        violations.extend(_column_rules(reader, table, scans[name]))
        for spec in CONTRACT[name]:
            if spec.unique and (found := _unique(reader, table, spec.name)) is not None:
                violations.append(found)
    if len(tables) == len(CONTRACT):
        found = _known_customers(reader, tables["orders"], tables["customers"])
        if found is not None:
            violations.append(found)
    if violations:
        return violations, None, None, None
    orders = scans["orders"]
    fingerprint = _fingerprint(scans["customers"], orders)
    return [], fingerprint, orders.first_order_on, orders.last_order_on


def _fingerprint(customers: _Scan, orders: _Scan) -> SourceFingerprint:
    state = SourceState(customers.rows, orders.rows, orders.newest_order_at)
    return SourceFingerprint(state, hash_digest(customers.hash), hash_digest(orders.hash))


def fingerprint(reader: Reader, tables: dict[str, SourceTable]) -> SourceFingerprint:
    """The tables' fingerprint as :func:`check` takes it, without counting the rules."""
    scans = {name: _scan(reader, table, rules=False) for name, table in tables.items()}
    return _fingerprint(scans["customers"], scans["orders"])


def hash_rows(reader: Reader, d: Dialect, relation: str, table: str) -> tuple[int, str]:
    """The rows and the hash digest of a relation holding ``table``'s contract columns as
    ``raw`` receives them (a copy of the source's values): as :func:`check` takes them."""
    columns = [d.quote(spec.name) for spec in CONTRACT[table]]
    rows, hashed = reader.one(f"select count(*), {d.hash_sum(columns)} from {relation}")
    return int(rows), hash_digest(int(hashed))


def newest_order(reader: Reader, d: Dialect, orders: Relation) -> str | None:
    """The newest ``ordered_at`` as stored, as text: what :func:`check` and
    :func:`observe` record."""
    newest: str | None = reader.one(
        f"select {d.text('max(' + d.quote('ordered_at') + ')')} from {orders.name}"
    )[0]
    return newest


def observe(d: Dialect, find: Find, reader: Reader, source: SourceTables) -> SourceState:
    """Row counts and the newest ``ordered_at`` as stored (no contract, no parsing), in one
    query. Raises ``ValueError`` naming a missing table or column."""
    relations = {}
    for table in CONTRACT:
        relation = find(source.name(table))
        if relation is None:
            raise ValueError(f"{source.name(table)}: breaks rule 'a table or view that exists'")
        relations[table] = relation
    if "ordered_at" not in relations["orders"].types:
        raise ValueError(f"{source.orders}: column 'ordered_at' is missing")
    newest = d.text("max(" + d.quote("ordered_at") + ")")
    customers, orders, newest_at = reader.one(
        f"select (select count(*) from {relations['customers'].name}), count(*), {newest} "
        f"from {relations['orders'].name}"
    )
    return SourceState(int(customers), int(orders), newest_at)
