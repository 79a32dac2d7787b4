"""Small raw deliveries written by hand, in the contract's CSV columns (DESIGN.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CUSTOMERS_HEADER = "customer_id,signup_at,email"
ORDERS_HEADER = "order_id,customer_id,ordered_at,amount,item_count,category"


def write_csv_delivery(raw_dir: Path, customers: Sequence[str], orders: Sequence[str]) -> None:
    """``customers.csv`` and ``orders.csv`` in ``raw_dir``: the header, then these rows."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, header, rows in (
        ("customers.csv", CUSTOMERS_HEADER, customers),
        ("orders.csv", ORDERS_HEADER, orders),
    ):
        (raw_dir / name).write_text("".join(f"{line}\n" for line in (header, *rows)))
