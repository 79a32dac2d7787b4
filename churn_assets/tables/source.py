"""Raw data where it already lives: customers and orders read from warehouse tables
(``CHURN_RAW_SOURCE=tables``) instead of files, what every engine shares of it.

The same contract as for files (:mod:`churn_assets.data.contract`), checked in the engine:
a billion orders are counted by SQL, never pulled into pandas. :data:`CONTRACT` says, per
column, what the engine checks (the kind of value, null or not, the bounds, uniqueness,
the reference to customers); :mod:`churn_assets.tables.source_sql` turns it into SQL once
for every engine, each saying how it spells what differs
(:mod:`churn_assets.tables.postgres.source`, :mod:`churn_assets.tables.spark.source`). Every
broken rule is reported as a :class:`~churn_assets.data.contract.Violation` naming the table
(where a file's name would be), the column, the rule in the contract's own words, and the
count of offending rows, with a few offending values keyed by the row's id (a table has no
row numbers).

A table that passes is copied into the ``raw`` schema inside the engine (``insert ...
select``; ``insert overwrite ... select`` on Spark), so dbt and everything after it cannot
tell it from a file load; ``raw.loads`` records the tables and their
:class:`SourceFingerprint` where a file load records its sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from churn_assets.data.contract import Violation
from churn_assets.limits import MAX_AMOUNT, MAX_EMAIL_LENGTH, MAX_ITEM_COUNT, MAX_TEXT_LENGTH


class Kind(StrEnum):
    """How a column's values are read, whatever the table's column type."""

    ID = "id"
    """Text or a whole number; text in ``raw`` (at most ``MAX_ID_LENGTH`` characters, no
    control characters)."""
    TIMESTAMP = "timestamp"
    """A date or timestamp column, or ISO 8601 text; naive UTC in ``raw``."""
    NUMBER = "number"
    """A number column or decimal text, finite and within bounds."""
    TEXT = "text"
    """Anything, as text, at most ``limit`` characters."""


@dataclass(frozen=True)
class Column:
    """One column of the contract, as the engine checks it."""

    name: str
    kind: Kind
    nullable: bool = True
    unique: bool = False
    limit: int = MAX_TEXT_LENGTH  # TEXT: most characters
    minimum: int = 0  # NUMBER: inclusive bounds
    maximum: int = 0
    integer: bool = False  # NUMBER: whole numbers only


CONTRACT: dict[str, tuple[Column, ...]] = {
    "customers": (
        Column("customer_id", Kind.ID, nullable=False, unique=True),
        Column("signup_at", Kind.TIMESTAMP),
        Column("email", Kind.TEXT, limit=MAX_EMAIL_LENGTH),
    ),
    "orders": (
        Column("order_id", Kind.ID, nullable=False, unique=True),
        Column("customer_id", Kind.ID, nullable=False),
        Column("ordered_at", Kind.TIMESTAMP, nullable=False),
        Column("amount", Kind.NUMBER, nullable=False, minimum=0, maximum=MAX_AMOUNT),
        Column("item_count", Kind.NUMBER, minimum=1, maximum=MAX_ITEM_COUNT, integer=True),
        Column("category", Kind.TEXT),
    ),
}
"""Per raw table, its columns in ``raw``'s order; orders' ``customer_id`` must also exist
in customers (the one rule across tables)."""

KEYS = {"customers": "customer_id", "orders": "order_id"}
"""The id an example of an offending row is shown by."""


@dataclass(frozen=True)
class SourceTables:
    """The two tables a deployment reads its raw data from (``schema.table``)."""

    customers: str
    orders: str

    def name(self, table: str) -> str:
        """The source table of the raw table ``table`` (``customers`` or ``orders``)."""
        return self.customers if table == "customers" else self.orders


@dataclass(frozen=True)
class SourceState:
    """What an observation of the source sees, cheaply: row counts and the newest order.
    Its :attr:`data_version` is the source asset's data version: new rows change it (as
    does any deletion); a value updated in place does not (run the ingest by hand)."""

    customers_rows: int
    orders_rows: int
    newest_order_at: str | None  # as the engine prints the stored value

    @property
    def data_version(self) -> str:
        newest = self.newest_order_at or "none"
        return f"customers={self.customers_rows};orders={self.orders_rows};newest={newest}"


def hash_digest(total: int) -> str:
    """A fingerprint's hash: the sum of the rows' 64-bit hashes, modulo 2^64, in hex."""
    return f"{total % 2**64:016x}"


@dataclass(frozen=True)
class SourceFingerprint:
    """What a load from tables records where a file load records sha256: the state and an
    order-independent hash of every row's values as ``raw`` receives them (per table;
    engine-specific, compared only with the same engine's)."""

    state: SourceState
    customers_hash: str
    orders_hash: str

    def digest(self, table: str) -> str:
        rows = self.state.customers_rows if table == "customers" else self.state.orders_rows
        value = self.customers_hash if table == "customers" else self.orders_hash
        return f"rows={rows};hash={value}"


@dataclass(frozen=True)
class SourceCheck:
    """The contract checked on the source tables: every violation (empty: the tables
    pass), and for tables that pass, their fingerprint and the span of order dates."""

    violations: list[Violation]
    fingerprint: SourceFingerprint | None = None
    first_order_on: date | None = None
    last_order_on: date | None = None


class SourceChanged(RuntimeError):
    """The source tables changed between their check and their copy: nothing was loaded
    (the next observation sees the new data version and loads it)."""

    @classmethod
    def of(cls, source: SourceTables) -> SourceChanged:
        """The one wording, whatever the engine."""
        return cls(
            f"{source.customers}, {source.orders}: the tables changed after their check; "
            "nothing was loaded (the next observation loads the new rows)"
        )
