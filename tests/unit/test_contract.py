"""Every raw-data contract rule gives an error naming file, column, rule, row count, examples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churn_assets.data import contract
from churn_assets.data.contract import (
    FINITE,
    ISO_8601,
    MAX_ERROR_CHARS,
    MAX_LISTED_COLUMNS,
    MAX_QUOTED_CHARS,
    RawDataContractError,
    Violation,
    has_raw_files,
    read_raw_tables,
)
from churn_assets.limits import MAX_AMOUNT, MAX_ID_LENGTH, MAX_ITEM_COUNT, MAX_TEXT_LENGTH

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


# --------------------------------------------------------------- hostile-review regressions

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
"""Validation time pinned for date rules; every date in CUSTOMERS and ORDERS is before it."""


def _violations(raw_dir: Path, now: datetime = NOW) -> list[Violation]:
    with pytest.raises(RawDataContractError) as excinfo:
        read_raw_tables(raw_dir, now=now)
    return excinfo.value.violations


def _only(violations: list[Violation], column: str, table: str = "") -> Violation:
    on_column = [v for v in violations if v.column == column and v.file.startswith(table)]
    assert len(on_column) == 1, "\n".join(map(str, violations))
    return on_column[0]


# Bug: inf/Infinity amounts passed and were loaded (raw.orders and marts.customer_features
# held Infinity, the GX suite passed, training failed late); item_count inf or 99999999999
# passed and failed at load as a raw OverflowError / NumericValueOutOfRange; NaN and 1e400
# were reported as "numeric" although they are numbers, just not usable ones.
# Each case: column, value in the CSV, the one rule it must break.
NUMBER_CASES = [
    ("amount", "inf", FINITE),  # text inf, as Python and pandas write it
    ("amount", "Infinity", FINITE),  # JavaScript/JSON spelling
    ("amount", "-inf", FINITE),  # reported as non-finite, not also as "amount >= 0"
    ("amount", "NaN", FINITE),  # NaN given as text is not "missing"
    ("amount", "1000000000000.01", "amount <= 1,000,000,000,000"),  # just above MAX_AMOUNT
    ("amount", "1e400", "amount <= 1,000,000,000,000"),  # overflows float64: too big, not text
    ("amount", "-1e400", "amount >= 0"),  # overflows negatively
    ("item_count", "inf", FINITE),  # was an OverflowError at load time
    ("item_count", "nan", FINITE),
    ("item_count", "99999999999", "item_count <= 1,000,000"),  # was NumericValueOutOfRange
    ("item_count", "1000001", "item_count <= 1,000,000"),  # just above MAX_ITEM_COUNT
    ("item_count", "2e308", "item_count <= 1,000,000"),  # just past float64's largest
]


@pytest.mark.parametrize(("column", "value", "rule"), NUMBER_CASES)
def test_read_raw_tables_rejects_non_finite_and_out_of_range_numbers(
    tmp_path: Path, column: str, value: str, rule: str
) -> None:
    _write(tmp_path, CUSTOMERS, _with(ORDERS, column, 2, value))
    violation = _only(_violations(tmp_path), column)
    assert (violation.rule, violation.bad_rows) == (rule, 1)
    assert violation.examples == (f"row 3: {value!r}",)


def test_read_raw_tables_accepts_values_at_the_limits(tmp_path: Path) -> None:
    # Every limit is inclusive: the largest allowed value of each kind loads.
    longest_id = "c" * MAX_ID_LENGTH
    customers = _with(_with(CUSTOMERS, "customer_id", 0, longest_id), "email", 0, "e" * 254)
    orders = ORDERS.assign(customer_id=[longest_id, "c1", "c2", "c3"])
    orders = _with(orders, "amount", 0, str(MAX_AMOUNT))
    orders = _with(orders, "item_count", 0, str(MAX_ITEM_COUNT))
    orders = _with(orders, "category", 0, "k" * MAX_TEXT_LENGTH)
    orders = _with(orders, "customer_id", 1, longest_id)
    # 23:59 UTC on the next day is within the one-day tolerance; so is a +10:00 offset.
    orders = _with(orders, "ordered_at", 0, "2025-06-02T11:59:00Z")
    orders = _with(orders, "ordered_at", 1, "2025-06-02T21:00:00+10:00")
    customers = _with(customers, "signup_at", 2, "1900-01-01")
    _write(tmp_path, customers, orders)
    tables = read_raw_tables(tmp_path, now=NOW)
    assert tables.orders["amount"].iloc[0] == MAX_AMOUNT
    assert tables.orders["item_count"].iloc[0] == MAX_ITEM_COUNT


# Bug: Parquet booleans in amount/item_count were silently read as 1/0.
@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("amount", [True, False, True, True]),  # False would have become a free order
        ("item_count", [True, True, None, True]),  # nulls stay "not given", only bools count
    ],
)
def test_read_raw_tables_rejects_booleans_where_numbers_are_expected(
    tmp_path: Path, column: str, values: list[bool | None]
) -> None:
    orders = ORDERS.assign(**{column: pd.array(values, dtype="boolean")})
    _write(tmp_path, CUSTOMERS, orders, "parquet")
    violation = _only(_violations(tmp_path), column)
    assert violation.rule == "numeric, not boolean"
    assert violation.bad_rows == sum(value is not None for value in values)
    assert violation.file == "orders.parquet"


# Bug: a date after the time of validation was accepted (2027) or, beyond pandas' range,
# reported as "not ISO 8601" (2999). Each case: file, column, value, rule fragment.
DATE_CASES = [
    ("orders", "ordered_at", "2999-01-01", "not in the future"),  # beyond pandas' year 2262
    ("orders", "ordered_at", "2262-04-12", "not in the future"),  # first day beyond pandas
    ("orders", "ordered_at", "2025-06-02T12:01:00Z", "not in the future"),  # tolerance + 1 min
    ("customers", "signup_at", "2025-07-01", "not in the future"),  # a month ahead
    ("customers", "signup_at", "0001-01-01", "not before 1900-01-01"),  # a sentinel date
    ("orders", "ordered_at", "1899-12-31", "not before 1900-01-01"),  # inside pandas' range
    ("orders", "ordered_at", "2999-02-29", ISO_8601),  # no such day, in any year 2999
    ("orders", "ordered_at", "2999-13-01", ISO_8601),  # no 13th month: not a date at all
]


@pytest.mark.parametrize(("table", "column", "value", "rule"), DATE_CASES)
def test_read_raw_tables_rejects_dates_outside_the_allowed_range(
    tmp_path: Path, table: str, column: str, value: str, rule: str
) -> None:
    customers = _with(CUSTOMERS, column, 1, value) if table == "customers" else CUSTOMERS
    orders = _with(ORDERS, column, 1, value) if table == "orders" else ORDERS
    _write(tmp_path, customers, orders)
    violation = _only(_violations(tmp_path), column)
    assert rule in violation.rule
    assert violation.examples == (f"row 2: {value!r}",)  # the date seen, as written


def test_read_raw_tables_future_rule_names_the_latest_allowed_time(tmp_path: Path) -> None:
    _write(tmp_path, CUSTOMERS, _with(ORDERS, "ordered_at", 0, "2999-01-01"))
    violation = _only(_violations(tmp_path), "ordered_at")
    assert violation.rule == (
        "not in the future (after 2025-06-02 12:00 UTC, validation time + 1 day)"
    )


def test_read_raw_tables_rejects_future_parquet_timestamps(tmp_path: Path) -> None:
    # Parquet timestamps in seconds hold year 2999 without overflowing; still in the future.
    stamps = pd.Series(pd.to_datetime(ORDERS["ordered_at"], format="ISO8601")).dt.as_unit("s")
    stamps = stamps.where(stamps.index != 3, pd.Timestamp("2999-01-01").as_unit("s"))
    _write(tmp_path, CUSTOMERS, ORDERS.assign(ordered_at=stamps), "parquet")
    violation = _only(_violations(tmp_path), "ordered_at")
    assert "not in the future" in violation.rule
    assert violation.examples == ("row 4: 2999-01-01 00:00:00",)


# Bug: any field of any length was accepted and stored (a 50 MB cell included).
# Each case: file, column, a value one character over its limit.
LENGTH_CASES = [
    ("customers", "customer_id", "c" * (MAX_ID_LENGTH + 1)),  # MAX_ID_LENGTH, as the API
    ("orders", "order_id", "o" * (MAX_ID_LENGTH + 1)),
    ("customers", "email", "e" * 243 + "@example.com"),  # 255 > 254 (RFC 5321)
    ("orders", "category", "k" * (MAX_TEXT_LENGTH + 1)),
    ("orders", "amount", "1" * (MAX_TEXT_LENGTH + 1)),  # numbers as text are text too
    ("orders", "ordered_at", "2024-01-01" + " " * 300 + "x"),  # so are dates
]


@pytest.mark.parametrize(("table", "column", "value"), LENGTH_CASES)
def test_read_raw_tables_rejects_fields_over_the_length_limit(
    tmp_path: Path, table: str, column: str, value: str
) -> None:
    customers = _with(CUSTOMERS, column, 0, value) if table == "customers" else CUSTOMERS
    orders = _with(ORDERS, column, 0, value) if table == "orders" else ORDERS
    _write(tmp_path, customers, orders)
    violation = _only(_violations(tmp_path), column, table)  # one rule only, not also "numeric"
    assert violation.rule.startswith("at most ") and violation.rule.endswith(" characters")
    assert violation.examples == (f"row 1: {value[:MAX_QUOTED_CHARS]!r}… ({len(value)} chars)",)


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        # NUL: Postgres text cannot hold it and the scoring API refuses it
        ("customers", "customer_id", "c\x001"),
        # a tab inside an order id (stripping only removes it at the ends)
        ("orders", "order_id", "o\t1"),
        # a C1 control character
        ("customers", "customer_id", "c\x851"),
    ],
)
def test_read_raw_tables_rejects_ids_the_scoring_api_would_refuse(
    tmp_path: Path, table: str, column: str, value: str
) -> None:
    # Bug: the contract took ids with control characters that `churn serve` answers with 422,
    # so such a customer could be loaded but never scored by id.
    customers = _with(CUSTOMERS, column, 0, value) if table == "customers" else CUSTOMERS
    orders = _with(ORDERS, column, 0, value) if table == "orders" else ORDERS
    _write(tmp_path, customers, orders, "parquet")
    violation = _only(_violations(tmp_path), column, table)
    assert violation.rule == "no control characters"
    assert violation.bad_rows == 1


def test_read_raw_tables_quotes_only_an_excerpt_of_a_huge_field(tmp_path: Path) -> None:
    # Bug: a 50 MB cell was accepted; quoting it whole would flood the Dagster event log.
    huge = "x" * 5_000_000
    _write(tmp_path, CUSTOMERS, _with(ORDERS, "category", 1, huge))
    with pytest.raises(RawDataContractError) as excinfo:
        read_raw_tables(tmp_path, now=NOW)
    assert "(5000000 chars)" in str(excinfo.value)
    assert len(str(excinfo.value)) < 400


# Bug: orders.csv -> some-secret-file was followed and its first line quoted in the error
# ("column present (found: TOPSECRET…)"), and so in the Dagster event log.
@pytest.mark.parametrize(
    "target",
    [
        "outside",  # a file outside the raw directory
        "inside",  # even a link to a valid file next to it: one simple rule
        "dangling",  # a broken link is refused, not reported as a missing file
    ],
)
def test_read_raw_tables_refuses_a_symlinked_file_without_reading_it(
    tmp_path: Path, target: str
) -> None:
    raw_dir = tmp_path / "raw"
    _write(raw_dir, CUSTOMERS, ORDERS)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET=hunter2\n")
    ORDERS.to_csv(raw_dir / "orders_copy.csv", index=False)
    targets = {"outside": secret, "inside": raw_dir / "orders_copy.csv"}
    (raw_dir / "orders.csv").unlink()
    (raw_dir / "orders.csv").symlink_to(targets.get(target, tmp_path / "gone.csv"))
    with pytest.raises(RawDataContractError) as excinfo:
        read_raw_tables(raw_dir, now=NOW)
    assert [(v.file, v.rule) for v in excinfo.value.violations] == [
        ("orders.csv", "a regular file in the raw directory, not a symbolic link (not followed)")
    ]
    assert "TOPSECRET" not in str(excinfo.value)
    assert has_raw_files(raw_dir)  # the demo must not generate data through the link


def test_read_raw_tables_refuses_a_link_swapped_in_after_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is opened without following links, so a link that appears between the check
    # and the read is refused too (simulated: the check does not see the link).
    raw_dir = tmp_path / "raw"
    _write(raw_dir, CUSTOMERS, ORDERS)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET=hunter2\n")
    (raw_dir / "orders.csv").unlink()
    (raw_dir / "orders.csv").symlink_to(secret)
    monkeypatch.setattr(Path, "is_symlink", lambda self: False)
    violations = _violations(raw_dir)
    assert [v.rule for v in violations] == [
        "a regular file in the raw directory, not a symbolic link (not followed)"
    ]
    assert "TOPSECRET" not in str(violations[0])


def test_read_raw_tables_refuses_a_directory_named_like_a_table(tmp_path: Path) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS)
    (tmp_path / "orders.csv").unlink()
    (tmp_path / "orders.csv").mkdir()
    violation = _only(_violations(tmp_path), "")
    assert violation.rule == "a regular file (found a directory, FIFO or device)"


# Bug: a zero-byte CSV gave pandas' "No columns to parse from file" with its stack trace.
# Each case: file name, content, the one rule it must break.
EMPTY_CASES = [
    ("orders.csv", b"", "not empty (file is empty: no header row)"),  # zero bytes
    ("orders.csv", b"\n\n  \n", "not empty (no header row)"),  # blank lines only
    ("orders.parquet", b"", "not empty (file is empty: 0 bytes)"),
]


@pytest.mark.parametrize(("name", "content", "rule"), EMPTY_CASES)
def test_read_raw_tables_reports_an_empty_file_as_one_violation(
    tmp_path: Path, name: str, content: bytes, rule: str
) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS)
    (tmp_path / "orders.csv").unlink()
    (tmp_path / name).write_bytes(content)
    with pytest.raises(RawDataContractError) as excinfo:
        read_raw_tables(tmp_path, now=NOW)
    assert [(v.file, v.rule) for v in excinfo.value.violations] == [(name, rule)]
    assert excinfo.value.__cause__ is None  # no pandas exception chained into the log


def test_read_raw_tables_lists_at_most_ten_found_columns_each_cut_short(tmp_path: Path) -> None:
    # Bug: every found column name was quoted whole; a data line read as a header (or a
    # secret file) then appeared in full in the error.
    wide = pd.DataFrame({f"{i:02d}" + "z" * 60: ["1"] for i in range(30)})
    _write(tmp_path, CUSTOMERS, wide)
    violation = _only(_violations(tmp_path), "order_id")
    found = violation.rule.removeprefix("column present (found: ").removesuffix(")")
    assert found.count("… (62 chars)") == MAX_LISTED_COLUMNS
    assert found.endswith(", … (20 more)")
    assert f"'00{'z' * (MAX_QUOTED_CHARS - 2)}'…" in found


def test_read_raw_tables_cuts_the_readers_error_short(tmp_path: Path) -> None:
    # The reader's own message may quote file content: at most MAX_ERROR_CHARS of it.
    _write(tmp_path, CUSTOMERS, ORDERS, "parquet")
    (tmp_path / "orders.parquet").write_bytes(b"not parquet " * 100)
    violation = _only(_violations(tmp_path), "")
    message = violation.rule.removeprefix("readable as parquet (").removesuffix(")")
    assert message.startswith("ArrowInvalid: ")
    excerpt, _, length = message.removeprefix("ArrowInvalid: ").rpartition("… (")
    assert len(excerpt) == MAX_ERROR_CHARS
    assert length.removesuffix(" chars)").isdigit()


# Every odd value type ends as a contract violation, never a pandas/numpy exception.
# Each case: column, Parquet values, the rule they break.
ODD_TYPE_CASES = [
    ("order_id", [1.5, 2.0, 3.0, float("inf")], "text or integer id"),  # was a TypeError
    ("order_id", [True, False, True, False], "text or integer id, not boolean"),
    ("ordered_at", [1, 2, 3, 4], ISO_8601),  # numbers are no dates
    ("amount", [pd.Timestamp("2024-01-01")] * 4, "numeric"),  # dates are no amounts
    ("item_count", [1.0, 2.5, float("-inf"), None], "integer"),  # 2.5 (and -inf, see below)
]


@pytest.mark.parametrize(("column", "values", "rule"), ODD_TYPE_CASES)
def test_read_raw_tables_reports_odd_parquet_types_as_violations(
    tmp_path: Path, column: str, values: list[Any], rule: str
) -> None:
    _write(tmp_path, CUSTOMERS, ORDERS.assign(**{column: values}), "parquet")
    rules = {v.rule for v in _violations(tmp_path) if v.column == column}
    assert rule in rules


def test_read_raw_tables_turns_an_unforeseen_crash_into_a_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Safety net: whatever a rule trips over is reported as a violation, cut short.
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom " + "x" * 500)

    monkeypatch.setattr(contract._Checks, "unique", explode)
    _write(tmp_path, CUSTOMERS, ORDERS)
    violations = _violations(tmp_path)
    assert [v.file for v in violations] == ["customers.csv", "orders.csv"]
    assert violations[0].rule.startswith("values the contract can check (RuntimeError: boom x")
    assert len(violations[0].rule) < 100


def test_read_raw_tables_reports_problems_of_both_files_together(tmp_path: Path) -> None:
    # Reading stops at neither file: a missing customers file and a bad orders value show up
    # in one error, so the user fixes both at once.
    _write(tmp_path, CUSTOMERS, _with(ORDERS, "amount", 0, "inf"))
    (tmp_path / "customers.csv").unlink()
    assert {(v.file, v.rule) for v in _violations(tmp_path)} == {
        (str(tmp_path), "a file customers.csv or customers.parquet exists"),
        ("orders.csv", FINITE),
    }
