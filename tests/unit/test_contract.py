"""Every raw-data contract rule gives an error naming file, column, rule, row count, examples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from churn_assets.data.contract import RawDataContractError, has_raw_files, read_raw_tables

CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["c1", "c2", "c3"],
        "signup_at": ["2024-01-01", "", "2024-02-03T10:00:00"],
        "email": ["a@gmail.com", "", "c@acme.io"],
    }
)
ORDERS = pd.DataFrame(
    {
        "order_id": ["o1", "o2", "o3", "o4"],
        "customer_id": ["c1", "c1", "c2", "c3"],
        "ordered_at": ["2024-01-05 10:00:00", "2024-02-01", "2024-03-01 08:30", "2024-03-02"],
        "amount": ["10.5", "0", "99.99", "5"],
        "item_count": ["1", "", "3", "2"],
        "category": ["books", "", "toys", "home"],
    }
)


def _write(raw_dir: Path, customers: pd.DataFrame, orders: pd.DataFrame, fmt: str = "csv") -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("customers", customers), ("orders", orders)):
        if fmt == "csv":
            frame.to_csv(raw_dir / f"{name}.csv", index=False)
        else:
            frame.to_parquet(raw_dir / f"{name}.parquet", index=False)


def _with(frame: pd.DataFrame, column: str, row: int, value: object) -> pd.DataFrame:
    changed = frame.copy()
    changed.loc[row, column] = value
    return changed


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_read_raw_tables_accepts_valid_files_and_normalises_types(tmp_path: Path, fmt: str) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS, fmt)
    tables = read_raw_tables(tmp_path)
    assert list(tables.customers["customer_id"]) == ["c1", "c2", "c3"]
    assert tables.customers["signup_at"].isna().tolist() == [False, True, False]
    assert tables.orders["amount"].tolist() == [10.5, 0.0, 99.99, 5.0]
    assert tables.orders["item_count"].isna().tolist() == [False, True, False, False]
    assert str(tables.orders["ordered_at"].dtype) == "datetime64[ns]"


def test_read_raw_tables_accepts_integer_ids_from_parquet(tmp_path: Path) -> None:
    customers = CUSTOMERS.assign(customer_id=[1, 2, 3])
    orders = ORDERS.assign(customer_id=[1, 1, 2, 3])
    _write(tmp_path, customers, orders, "parquet")
    tables = read_raw_tables(tmp_path)
    assert tables.orders["customer_id"].tolist() == ["1", "1", "2", "3"]


# Each case: which file/column breaks, the rule named in the error, how many rows break it.
CASES = [
    # a null primary key
    ("customers", _with(CUSTOMERS, "customer_id", 1, None), "customer_id", "not null", 1),
    # a duplicated primary key: both rows count
    ("customers", _with(CUSTOMERS, "customer_id", 2, "c1"), "customer_id", "unique", 2),
    # a signup date that is not a date
    ("customers", _with(CUSTOMERS, "signup_at", 0, "yesterday"), "signup_at", "ISO 8601", 1),
    ("orders", _with(ORDERS, "order_id", 0, None), "order_id", "not null", 1),
    ("orders", _with(ORDERS, "order_id", 3, "o1"), "order_id", "unique", 2),
    # an order for a customer who does not exist
    ("orders", _with(ORDERS, "customer_id", 2, "ghost"), "customer_id", "exists in customers", 1),
    ("orders", _with(ORDERS, "ordered_at", 1, None), "ordered_at", "not null", 1),
    ("orders", _with(ORDERS, "ordered_at", 1, "31/12/2024"), "ordered_at", "ISO 8601", 1),
    ("orders", _with(ORDERS, "amount", 0, "-3"), "amount", "amount >= 0", 1),
    ("orders", _with(ORDERS, "amount", 0, "ten"), "amount", "numeric", 1),
    ("orders", _with(ORDERS, "amount", 2, None), "amount", "not null", 1),
    ("orders", _with(ORDERS, "item_count", 0, "0"), "item_count", "item_count >= 1", 1),
    ("orders", _with(ORDERS, "item_count", 0, "1.5"), "item_count", "integer", 1),
    # a required column that is missing altogether
    ("orders", ORDERS.drop(columns=["amount"]), "amount", "column present", 0),
    ("customers", CUSTOMERS.drop(columns=["email"]), "email", "column present", 0),
]


@pytest.mark.parametrize(("table", "frame", "column", "rule", "bad_rows"), CASES)
def test_read_raw_tables_names_file_column_rule_and_row_count(
    tmp_path: Path, table: str, frame: pd.DataFrame, column: str, rule: str, bad_rows: int
) -> None:
    customers = frame if table == "customers" else CUSTOMERS
    orders = frame if table == "orders" else ORDERS
    _write(tmp_path, customers, orders)
    with pytest.raises(RawDataContractError) as excinfo:
        read_raw_tables(tmp_path)
    matching = [v for v in excinfo.value.violations if v.column == column and rule in v.rule]
    assert matching, f"expected a '{rule}' violation on {column}: {excinfo.value}"
    violation = matching[0]
    assert violation.file == f"{table}.csv"
    assert violation.bad_rows == bad_rows
    message = str(excinfo.value)
    assert f"{table}.csv" in message and column in message and "nothing was loaded" in message
    if bad_rows:
        assert violation.examples and violation.examples[0].startswith("row ")


def test_read_raw_tables_reports_every_violation_at_once(tmp_path: Path) -> None:
    orders = _with(_with(ORDERS, "amount", 0, "-1"), "customer_id", 1, "ghost")
    _write(tmp_path, CUSTOMERS, orders)
    with pytest.raises(RawDataContractError) as excinfo:
        read_raw_tables(tmp_path)
    assert {v.rule for v in excinfo.value.violations} == {
        "amount >= 0",
        "exists in customers.customer_id",
    }


def test_read_raw_tables_examples_show_the_offending_values(tmp_path: Path) -> None:
    _write(tmp_path, CUSTOMERS, _with(ORDERS, "amount", 3, "-42"))
    with pytest.raises(RawDataContractError) as excinfo:
        read_raw_tables(tmp_path)
    assert excinfo.value.violations[0].examples == ("row 4: '-42'",)


def test_read_raw_tables_rejects_an_empty_table(tmp_path: Path) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS.iloc[0:0])
    with pytest.raises(RawDataContractError, match="at least one data row"):
        read_raw_tables(tmp_path)


def test_read_raw_tables_names_the_missing_file(tmp_path: Path) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS)
    (tmp_path / "orders.csv").unlink()
    with pytest.raises(RawDataContractError, match=r"orders\.csv or orders\.parquet"):
        read_raw_tables(tmp_path)


def test_read_raw_tables_refuses_two_files_for_one_table(tmp_path: Path) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS)
    ORDERS.to_parquet(tmp_path / "orders.parquet")
    with pytest.raises(RawDataContractError, match="exactly one file for table 'orders'"):
        read_raw_tables(tmp_path)


def test_read_raw_tables_reports_an_unreadable_file(tmp_path: Path) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS, "parquet")
    (tmp_path / "orders.parquet").write_bytes(b"not parquet")
    with pytest.raises(RawDataContractError, match=r"orders\.parquet breaks rule 'readable"):
        read_raw_tables(tmp_path)


def test_has_raw_files_sees_either_table(tmp_path: Path) -> None:
    assert not has_raw_files(tmp_path)
    (tmp_path / "orders.parquet").write_bytes(b"")
    assert has_raw_files(tmp_path)
