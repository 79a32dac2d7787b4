"""Source tables (CHURN_RAW_SOURCE=tables) as the tests make them on any engine: a
:class:`Shop` says each table's columns (types in Postgres's words; each engine's hands
translate) and rows (as text, cast by the engine to the column's type, as an insert of
literals would be), so one description serves Postgres and Spark, and the same text
written as CSV is what a file delivery of the same data would hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from churn_assets.tables.source import SourceTables

SOURCE = SourceTables("shop.customers", "shop.orders")

Row = tuple[str | None, ...]


@dataclass(frozen=True)
class Table:
    columns: dict[str, str]  # name -> type
    rows: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Shop:
    """The schema ``shop``: its tables (a table left out does not exist)."""

    tables: dict[str, Table]

    def write_csv(self, directory: Path) -> None:
        """The same cells as ``<table>.csv`` files (an empty cell for None)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, table in self.tables.items():
            frame = pd.DataFrame(table.rows, columns=list(table.columns))
            frame.to_csv(directory / f"{name}.csv", index=False)


CUSTOMERS_COLUMNS = {"customer_id": "text", "signup_at": "text", "email": "text"}
ORDERS_COLUMNS = {
    "order_id": "bigint",  # whole numbers: their text in raw
    "customer_id": "text",
    "ordered_at": "timestamptz",  # an instant: naive UTC in raw
    "amount": "numeric",
    "item_count": "integer",
    "category": "text",
}

# Five orders of three customers over whole months (2024-01 .. 2024-05), clean: ISO text
# dates with offsets and padding, blank text (missing, as in a file), integer ids.
SHOP = Shop(
    {
        "customers": Table(
            CUSTOMERS_COLUMNS,
            [
                ("c1", "2023-12-01T01:00:00+01:00", "a@x.io"),
                ("c2", None, None),
                ("c3", " 2024-01-02 ", "  "),
            ],
        ),
        "orders": Table(
            ORDERS_COLUMNS,
            [
                ("1", "c1", "2024-01-01 10:00:00+00", "10.5", "1", "books"),
                ("2", "c2", "2024-02-01 00:00:00+00", "0", None, None),
                ("3", "c2", "2024-03-01 10:30:00+02", "99.99", "3", "toys"),
                ("4", "c3", "2024-04-20 00:00:00+00", "5", "2", " toys "),
                ("5", "c1", "2024-05-03 00:00:00+00", "7", "1", "books"),
            ],
        ),
    }
)
