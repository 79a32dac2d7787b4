"""Loading raw files into Postgres: all or nothing, idempotent, bad files change nothing."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

from churn_assets.data.contract import RawDataContractError, read_raw_tables
from churn_assets.infra import warehouse
from churn_assets.limits import (
    MAX_AMOUNT,
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_ITEM_COUNT,
    MAX_TEXT_LENGTH,
)
from churn_assets.tables.postgres import raw as loader
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.raw import LoadResult

pytestmark = pytest.mark.integration

CUSTOMERS = pd.DataFrame(
    {"customer_id": ["c1", "c2"], "signup_at": ["2024-01-01", None], "email": ["a@x.io", None]}
)
ORDERS = pd.DataFrame(
    {
        "order_id": ["o1", "o2", "o3"],
        "customer_id": ["c1", "c2", "c2"],
        "ordered_at": ["2024-01-05 10:00:00", "2024-02-01", "2024-03-01 08:30:00"],
        "amount": [10.5, 0.0, 99.99],
        "item_count": [1, None, 3],
        "category": ["books", None, "toys"],
    }
)


def _write(raw_dir: Path, customers: pd.DataFrame, orders: pd.DataFrame) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    customers.to_csv(raw_dir / "customers.csv", index=False)
    orders.to_csv(raw_dir / "orders.csv", index=False)


def _snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select customer_id, signup_at, email from raw.customers order by 1")
        customers = cur.fetchall()
        cur.execute(
            "select order_id, customer_id, ordered_at, amount, item_count, category "
            "from raw.orders order by 1"
        )
        return {"customers": customers, "orders": cur.fetchall()}


def _load(url: str, raw_dir: Path) -> LoadResult:
    return PostgresWarehouse(url).load_raw_tables(read_raw_tables(raw_dir))


def test_load_raw_tables_writes_exactly_the_file_contents(
    fresh_database_url: str, tmp_path: Path
) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS)
    result = _load(fresh_database_url, tmp_path)
    assert result.row_counts == {"customers": 2, "orders": 3}
    tables = _snapshot(fresh_database_url)
    assert [row[0] for row in tables["customers"]] == ["c1", "c2"]
    assert tables["customers"][1][1:] == (None, None)
    o3 = tables["orders"][2]
    assert (o3[0], o3[1], str(o3[2]), float(o3[3]), o3[4], o3[5]) == (
        "o3",
        "c2",
        "2024-03-01 08:30:00",
        99.99,
        3,
        "toys",
    )
    assert tables["orders"][1][4:] == (None, None)  # nulls stay null (dbt applies defaults)


def test_load_raw_tables_twice_gives_the_same_tables(
    fresh_database_url: str, tmp_path: Path
) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS)
    _load(fresh_database_url, tmp_path)
    first = _snapshot(fresh_database_url)
    _load(fresh_database_url, tmp_path)
    assert _snapshot(fresh_database_url) == first


def test_bad_file_leaves_previous_raw_tables_intact(
    fresh_database_url: str, tmp_path: Path
) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    _write(good, CUSTOMERS, ORDERS)
    _load(fresh_database_url, good)
    before = _snapshot(fresh_database_url)
    _write(bad, CUSTOMERS.iloc[:1], ORDERS.assign(amount=[1.0, -5.0, 2.0]))
    with pytest.raises(RawDataContractError) as excinfo:
        _load(fresh_database_url, bad)
    rules = {v.rule for v in excinfo.value.violations}
    assert rules == {"amount >= 0", "exists in customers.customer_id"}
    assert _snapshot(fresh_database_url) == before


def test_failure_midway_through_the_load_rolls_back_both_tables(
    fresh_database_url: str, tmp_path: Path
) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS)
    _load(fresh_database_url, tmp_path)
    before = _snapshot(fresh_database_url)
    bigger = tmp_path / "bigger"
    _write(bigger, pd.concat([CUSTOMERS, CUSTOMERS.assign(customer_id=["c3", "c4"])]), ORDERS)
    tables = read_raw_tables(bigger)
    real_copy = loader.copy_frame
    calls = []

    def copy_then_fail_on_orders(cur, table, frame):  # type: ignore[no-untyped-def]
        calls.append(table)
        if table == "raw.orders":
            raise ConnectionError("connection lost while copying orders")
        real_copy(cur, table, frame)

    with (
        mock.patch.object(loader, "copy_frame", copy_then_fail_on_orders),
        pytest.raises(ConnectionError),
    ):
        PostgresWarehouse(fresh_database_url).load_raw_tables(tables)
    assert calls == ["raw.customers", "raw.orders"]  # customers had been written...
    assert _snapshot(fresh_database_url) == before  # ...and were rolled back


# Bug: these values passed the contract and either reached Postgres (amount inf was stored
# as Infinity, a 50 MB category as is, a 2999 order date as a date) or failed inside the load
# as a raw OverflowError / NumericValueOutOfRange. Each case: column, value, rule fragment.
HOSTILE_ORDERS = [
    ("amount", "inf", "finite"),  # was stored as Infinity, then summed into features
    ("amount", "2e12", "amount <= "),  # above MAX_AMOUNT
    ("item_count", "inf", "finite"),  # was an OverflowError while copying
    ("item_count", "99999999999", "item_count <= "),  # was NumericValueOutOfRange (integer)
    ("ordered_at", "2999-01-01", "not in the future"),  # was "not ISO 8601"
    ("category", "x" * 1_000_000, "at most "),  # was stored whole
]


@pytest.mark.parametrize(("column", "value", "rule"), HOSTILE_ORDERS)
def test_load_refuses_hostile_values_before_touching_the_warehouse(
    fresh_database_url: str, tmp_path: Path, column: str, value: str, rule: str
) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    _write(good, CUSTOMERS, ORDERS)
    _load(fresh_database_url, good)
    before = _snapshot(fresh_database_url)
    orders = ORDERS.astype(object)
    orders.loc[1, column] = value
    _write(bad, CUSTOMERS, orders)
    with pytest.raises(RawDataContractError) as excinfo:
        _load(fresh_database_url, bad)
    assert [v.column for v in excinfo.value.violations] == [column]
    assert rule in excinfo.value.violations[0].rule
    assert _snapshot(fresh_database_url) == before


def test_values_at_every_limit_load_and_read_back_exactly(
    fresh_database_url: str, tmp_path: Path
) -> None:
    # The limits are chosen to fit the warehouse types: the largest accepted values load.
    longest_id = "c" * MAX_ID_LENGTH
    customers = CUSTOMERS.assign(
        customer_id=[longest_id, "c2"], email=pd.Series(["e" * MAX_EMAIL_LENGTH, None])
    )
    orders = ORDERS.assign(
        customer_id=[longest_id, "c2", "c2"],
        amount=[float(MAX_AMOUNT), 0.0, 99.99],
        item_count=pd.Series([MAX_ITEM_COUNT, None, 3]),
        category=pd.Series(["k" * MAX_TEXT_LENGTH, None, "toys"]),
    )
    _write(tmp_path, customers, orders)
    _load(fresh_database_url, tmp_path)
    o1 = _snapshot(fresh_database_url)["orders"][0]
    assert o1[1] == longest_id
    assert o1[3] == MAX_AMOUNT  # numeric: exact
    assert o1[4] == MAX_ITEM_COUNT
    assert o1[5] == "k" * MAX_TEXT_LENGTH
