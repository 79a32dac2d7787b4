"""The raw-data contract: read ``customers`` and ``orders`` files and prove they are usable.

Bring-your-own data fails here, before anything is written, with an error that names the
file, the column, the rule and how many rows break it. Every rule is checked and all
violations are reported together, so a user fixes a file once rather than once per rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ("customers", "orders")
SUPPORTED_SUFFIXES = (".csv", ".parquet")
CUSTOMER_COLUMNS = ("customer_id", "signup_at", "email")
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "amount", "item_count", "category")
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Violation:
    """One broken rule: where, which rule, how many rows, and a few offending examples."""

    file: str
    column: str
    rule: str
    bad_rows: int
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.file}: column '{self.column}'" if self.column else self.file
        rows = f" in {self.bad_rows} row(s)" if self.bad_rows else ""
        examples = f"; e.g. {', '.join(self.examples)}" if self.examples else ""
        return f"{where} breaks rule '{self.rule}'{rows}{examples}"


class RawDataContractError(ValueError):
    """Raw files break the contract; nothing was loaded."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        lines = "\n".join(f"  - {v}" for v in violations)
        super().__init__(
            f"raw data breaks the contract ({len(violations)} violation(s)); nothing was loaded:\n"
            f"{lines}"
        )


@dataclass(frozen=True)
class RawTables:
    """Validated, normalised raw tables and the files they came from."""

    customers: pd.DataFrame
    orders: pd.DataFrame
    customers_file: Path
    orders_file: Path


def find_table_file(raw_dir: Path, table: str) -> Path:
    """The one ``<table>.csv`` or ``<table>.parquet`` in ``raw_dir``."""
    candidates = [raw_dir / f"{table}{suffix}" for suffix in SUPPORTED_SUFFIXES]
    present = [path for path in candidates if path.is_file()]
    if not present:
        raise RawDataContractError(
            [Violation(str(raw_dir), "", f"a file {table}.csv or {table}.parquet exists", 0)]
        )
    if len(present) > 1:
        raise RawDataContractError(
            [Violation(str(raw_dir), "", f"exactly one file for table '{table}'", 0)]
        )
    return present[0]


def has_raw_files(raw_dir: Path) -> bool:
    """Whether ``raw_dir`` holds any customers or orders file (used to decide on generating)."""
    return any(
        (raw_dir / f"{table}{suffix}").is_file()
        for table in TABLES
        for suffix in SUPPORTED_SUFFIXES
    )


def read_raw_tables(raw_dir: Path) -> RawTables:
    """Reads and validates both tables; raises :class:`RawDataContractError` listing every break."""
    customers_file = find_table_file(raw_dir, "customers")
    orders_file = find_table_file(raw_dir, "orders")
    customers_raw = _read_file(customers_file)
    orders_raw = _read_file(orders_file)
    violations: list[Violation] = []
    customers = _validate_customers(customers_raw, customers_file.name, violations)
    orders = _validate_orders(orders_raw, orders_file.name, violations, customers)
    if violations:
        raise RawDataContractError(violations)
    assert customers is not None and orders is not None
    return RawTables(customers, orders, customers_file, orders_file)


def _read_file(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            # Everything as text first: ids keep leading zeros and each column is parsed by
            # its own rule below, so a bad value is reported instead of silently coerced.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:
        raise RawDataContractError(
            [Violation(path.name, "", f"readable as {path.suffix[1:]} ({exc})", 0)]
        ) from exc
    # An empty or blank text cell means "missing" in either format.
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            text = frame[column].astype("string").str.strip()
            frame[column] = text.mask(text == "")
    return frame


def _validate_customers(
    df: pd.DataFrame, file: str, violations: list[Violation]
) -> pd.DataFrame | None:
    if not _has_columns(df, CUSTOMER_COLUMNS, file, violations):
        return None
    out = pd.DataFrame(
        {
            "customer_id": _as_id(df["customer_id"]),
            "signup_at": _as_timestamp(df["signup_at"]),
            "email": df["email"].astype("string"),
        }
    )
    _require_rows(out, file, violations)
    _require_not_null(out, "customer_id", file, violations)
    _require_unique(out, "customer_id", file, violations)
    _require_parsed(
        df["signup_at"], out["signup_at"], "signup_at", file, violations, "ISO 8601 date/timestamp"
    )
    return out


def _validate_orders(
    df: pd.DataFrame,
    file: str,
    violations: list[Violation],
    customers: pd.DataFrame | None,
) -> pd.DataFrame | None:
    if not _has_columns(df, ORDER_COLUMNS, file, violations):
        return None
    amount = pd.to_numeric(df["amount"], errors="coerce").astype("float64")
    item_count = pd.to_numeric(df["item_count"], errors="coerce").astype("float64")
    out = pd.DataFrame(
        {
            "order_id": _as_id(df["order_id"]),
            "customer_id": _as_id(df["customer_id"]),
            "ordered_at": _as_timestamp(df["ordered_at"]),
            "amount": amount,
            "item_count": item_count,
            "category": df["category"].astype("string"),
        }
    )
    _require_rows(out, file, violations)
    for column in ("order_id", "customer_id"):
        _require_not_null(out, column, file, violations)
    for column in ("ordered_at", "amount"):
        _require_not_null(out, column, file, violations, original=df[column])
    _require_unique(out, "order_id", file, violations)
    _require_parsed(
        df["ordered_at"],
        out["ordered_at"],
        "ordered_at",
        file,
        violations,
        "ISO 8601 date/timestamp",
    )
    _require_parsed(df["amount"], amount, "amount", file, violations, "numeric")
    _require(df, "amount", amount < 0, "amount >= 0", file, violations)
    _require_parsed(df["item_count"], item_count, "item_count", file, violations, "integer")
    fractional = item_count.notna() & (item_count != np.floor(item_count))
    _require(df, "item_count", fractional, "integer", file, violations)
    _require(df, "item_count", item_count < 1, "item_count >= 1", file, violations)
    if customers is not None:
        known = out["customer_id"].isna() | out["customer_id"].isin(customers["customer_id"])
        _require(out, "customer_id", ~known, "exists in customers.customer_id", file, violations)
    if not violations:
        out["item_count"] = item_count.astype("Int64")
    return out


def _has_columns(
    df: pd.DataFrame, required: tuple[str, ...], file: str, violations: list[Violation]
) -> bool:
    missing = [column for column in required if column not in df.columns]
    for column in missing:
        violations.append(
            Violation(file, column, f"column present (found: {', '.join(map(str, df.columns))})", 0)
        )
    return not missing


def _as_id(series: pd.Series) -> pd.Series:
    """Ids may be int or str in the files; they are text in the warehouse."""
    if pd.api.types.is_float_dtype(series):
        # Parquet writes integer ids with nulls as float; 17.0 means id "17".
        as_int = series.astype("Int64")
        return as_int.astype("string")
    text = series.astype("string").str.strip()
    return text.mask(text == "")


def _as_timestamp(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        parsed = pd.to_datetime(series, utc=True)
    else:
        parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    # Stored as UTC without a zone: comparisons against as_of dates stay unambiguous.
    return parsed.dt.tz_convert(None)


def _require_rows(df: pd.DataFrame, file: str, violations: list[Violation]) -> None:
    if len(df) == 0:
        violations.append(Violation(file, "", "at least one data row", 0))


def _require_not_null(
    df: pd.DataFrame,
    column: str,
    file: str,
    violations: list[Violation],
    original: pd.Series | None = None,
) -> None:
    # Only values missing in the file itself: unparseable values are reported by their own rule.
    source = df[column] if original is None else original
    _require(df, column, source.isna(), "not null", file, violations, show_values=False)


def _require_unique(df: pd.DataFrame, column: str, file: str, violations: list[Violation]) -> None:
    values = df[column]
    duplicated = values.notna() & values.duplicated(keep=False)
    _require(df, column, duplicated, "unique", file, violations)


def _require_parsed(
    original: pd.Series,
    parsed: pd.Series,
    column: str,
    file: str,
    violations: list[Violation],
    rule: str,
) -> None:
    bad = original.notna() & parsed.isna()
    if bad.any():
        _add(violations, file, column, rule, bad, original)


def _require(
    df: pd.DataFrame,
    column: str,
    bad: pd.Series,
    rule: str,
    file: str,
    violations: list[Violation],
    *,
    show_values: bool = True,
) -> None:
    bad = bad.fillna(False).astype(bool)
    if bad.any():
        _add(violations, file, column, rule, bad, df[column] if show_values else None)


def _add(
    violations: list[Violation],
    file: str,
    column: str,
    rule: str,
    bad: pd.Series,
    values: pd.Series | None,
) -> None:
    positions = np.flatnonzero(bad.to_numpy())
    describe: Callable[[int], str]
    if values is None:
        describe = lambda i: f"row {i + 1}"  # noqa: E731
    else:
        describe = lambda i: f"row {i + 1}: {_show(values.iloc[i])}"  # noqa: E731
    examples = tuple(describe(int(i)) for i in positions[:_MAX_EXAMPLES])
    violations.append(Violation(file, column, rule, len(positions), examples))


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)
