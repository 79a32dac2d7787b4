"""The raw-data contract: read ``customers`` and ``orders`` files and prove they are usable.

Bring-your-own data fails here, before anything is written, with an error that names the
file, the column, the rule and how many rows break it. Every rule is checked and all
violations are reported together, so a user fixes a file once rather than once per rule.

Values are bounded (``churn_assets.limits``) so that whatever passes also fits the
warehouse types and keeps the features finite, and every failure, however odd the file, is
a :class:`RawDataContractError`: never a pandas, numpy or database driver exception at load
time.

Errors end up in the Dagster event log, so they quote as little of a file as possible: raw
files must be regular files in the raw directory (a symbolic link is refused without being
read), and every quoted value is cut to ``MAX_QUOTED_CHARS`` characters.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from churn_assets.limits import (
    FUTURE_TOLERANCE,
    ID_FORBIDDEN_CHARACTERS,
    MAX_AMOUNT,
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_ITEM_COUNT,
    MAX_TEXT_LENGTH,
    MIN_DATE,
)

TABLES = ("customers", "orders")
SUPPORTED_SUFFIXES = (".csv", ".parquet")
CUSTOMER_COLUMNS = ("customer_id", "signup_at", "email")
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "amount", "item_count", "category")
_MAX_EXAMPLES = 5

MAX_QUOTED_CHARS = 40
"""Longest excerpt of a value or column name from a file quoted in an error (then "…")."""
MAX_ERROR_CHARS = 100
"""Longest excerpt of a reader's (pandas/pyarrow) error text, which may hold file content."""
MAX_LISTED_COLUMNS = 10
"""Most column names listed when a required column is missing."""

# The rules' names, shared with the check of warehouse tables (``tables/source.py`` and
# each engine's SQL), so a bad table gets the same words as a bad file.
ISO_8601 = "ISO 8601 date/timestamp"
FINITE = "finite (not inf, -inf or NaN)"
NOT_BOOLEAN = "numeric, not boolean"
NOT_NULL = "not null"
UNIQUE = "unique"
ID_RULE = "text or integer id"
NO_CONTROL_CHARACTERS = "no control characters"
KNOWN_CUSTOMER = "exists in customers.customer_id"
AT_LEAST_ONE_ROW = "at least one data row"
NOT_BEFORE = f"not before {MIN_DATE.isoformat()}"


def at_most_rule(limit: int) -> str:
    return f"at most {limit} characters"


def minimum_rule(column: str, minimum: int) -> str:
    return f"{column} >= {minimum}"


def maximum_rule(column: str, maximum: int) -> str:
    return f"{column} <= {maximum:,}"


def latest_allowed(now: datetime | None = None) -> pd.Timestamp:
    """The latest date a value may hold when validated at ``now`` (default: the current
    time; a naive ``now`` is UTC), as naive UTC: ``now`` + ``FUTURE_TOLERANCE``."""
    return _utc_naive(now or datetime.now(UTC)) + pd.Timedelta(FUTURE_TOLERANCE)


def future_rule(latest: pd.Timestamp) -> str:
    limit = f"{latest:%Y-%m-%d %H:%M} UTC, validation time + {FUTURE_TOLERANCE.days} day"
    return f"not in the future (after {limit})"


def column_present_rule(found_columns: list[str]) -> str:
    """The rule a missing column breaks, listing (cut short) the columns found."""
    names = [_show(str(column)) for column in found_columns[:MAX_LISTED_COLUMNS]]
    more = len(found_columns) - MAX_LISTED_COLUMNS
    found = ", ".join(names) + (f", … ({more} more)" if more > 0 else "")
    return f"column present (found: {found})"


# A plain decimal literal. pandas gives up (NA) on one whose magnitude overflows float64
# (1e400, 400 nines): those are out of range, not "not numeric". ASCII digits only, since
# Python's \d also matches other scripts' digits, which pandas does not parse.
DECIMAL_PATTERN = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_DECIMAL = DECIMAL_PATTERN
_NAN_TEXT = r"[+-]?nan"
# An ISO 8601 date split into its year and the rest, to tell a date outside pandas'
# nanosecond range (year 2999, 0001) from text that is no date at all.
_ISO_YEAR = r"^([+-]?[0-9]{4,9})(-[0-9]{2}.*)$"
# pandas' datetime64[ns] spans 1677-09-21 to 2262-04-11; years within are parsed directly.
_PANDAS_MIN_YEAR = 1677
# Never follow a link; never block opening a FIFO (both flags are absent on Windows).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_SYMLINK_RULE = "a regular file in the raw directory, not a symbolic link (not followed)"


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
    """The one ``<table>.csv`` or ``<table>.parquet`` in ``raw_dir``, a regular file."""
    violations: list[Violation] = []
    path = _locate(raw_dir, table, violations)
    if path is None:
        raise RawDataContractError(violations)
    return path


def has_raw_files(raw_dir: Path) -> bool:
    """Whether ``raw_dir`` holds any customers or orders entry (used to decide on generating).

    Any entry counts, even a broken symbolic link: generating would write through it.
    """
    return any(
        os.path.lexists(raw_dir / f"{table}{suffix}")
        for table in TABLES
        for suffix in SUPPORTED_SUFFIXES
    )


def file_sha256(path: Path) -> str:
    """sha256 of a raw file, opened without following a symlink (the contract refuses them;
    one swapped in after validation must not be hashed as if it were the file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_raw_tables(raw_dir: Path, *, now: datetime | None = None) -> RawTables:
    """Reads and validates both tables; raises :class:`RawDataContractError` listing every break.

    ``now`` is the validation time that dates may not be later than (plus
    ``FUTURE_TOLERANCE``); it defaults to the current time, and tests pin it. A naive ``now``
    is taken as UTC.
    """
    latest = latest_allowed(now)
    violations: list[Violation] = []
    # Both files are located and read before any raises, so file-level problems of both
    # tables are reported together, as are column rules of whichever files could be read.
    customers_file = _locate(raw_dir, "customers", violations)
    orders_file = _locate(raw_dir, "orders", violations)
    customers = _checked(
        customers_file,
        violations,
        lambda df, file: _validate_customers(df, file, violations, latest),
    )
    orders = _checked(
        orders_file,
        violations,
        lambda df, file: _validate_orders(df, file, violations, latest, customers),
    )
    if violations:
        raise RawDataContractError(violations)
    assert customers is not None and orders is not None
    assert customers_file is not None and orders_file is not None
    return RawTables(customers, orders, customers_file, orders_file)


def _locate(raw_dir: Path, table: str, violations: list[Violation]) -> Path | None:
    """The table's file, or None after recording why there is no usable one.

    A symbolic link is refused, not followed: it could point anywhere (``orders.csv ->
    ~/.ssh/id_rsa``) and the error would quote the target's first line. ``lexists`` sees the
    link itself, so a broken link is refused too instead of reported as missing.
    """
    present = [
        path
        for path in (raw_dir / f"{table}{suffix}" for suffix in SUPPORTED_SUFFIXES)
        if os.path.lexists(path)
    ]
    if not present:
        rule = f"a file {table}.csv or {table}.parquet exists"
        violations.append(Violation(str(raw_dir), "", rule, 0))
        return None
    if len(present) > 1:
        violations.append(Violation(str(raw_dir), "", f"exactly one file for table '{table}'", 0))
        return None
    path = present[0]
    if path.is_symlink():
        violations.append(Violation(path.name, "", _SYMLINK_RULE, 0))
        return None
    return path


def _read_file(path: Path, violations: list[Violation]) -> pd.DataFrame | None:
    """The file as a frame, or None after recording why it cannot be read.

    Opened without following links and read from that descriptor, so a file swapped for a
    link after ``_locate`` looked is still refused; a FIFO or device is refused before a read
    could block or never end.
    """
    fmt = path.suffix[1:]
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        refused = exc.errno == errno.ELOOP  # O_NOFOLLOW met a symbolic link
        rule = _SYMLINK_RULE if refused else _unreadable(fmt, exc)
        violations.append(Violation(path.name, "", rule, 0))
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        rule = "a regular file (found a directory, FIFO or device)"
        violations.append(Violation(path.name, "", rule, 0))
        return None
    with os.fdopen(fd, "rb") as handle:
        if info.st_size == 0:
            detail = "no header row" if fmt == "csv" else "0 bytes"
            violations.append(Violation(path.name, "", f"not empty (file is empty: {detail})", 0))
            return None
        try:
            if fmt == "csv":
                # Everything as text first: ids keep leading zeros and each column is parsed
                # by its own rule below, so a bad value is reported instead of silently coerced.
                frame = pd.read_csv(handle, dtype=str, keep_default_na=False, na_values=[""])
            else:
                frame = pd.read_parquet(handle)
        except pd.errors.EmptyDataError:  # only blank lines: no header to read
            violations.append(Violation(path.name, "", "not empty (no header row)", 0))
            return None
        except Exception as exc:  # the reader's own error, cut short: it may quote content
            violations.append(Violation(path.name, "", _unreadable(fmt, exc), 0))
            return None
    return frame


def _blank_as_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """An empty or blank text cell means "missing" in either format.

    Object columns (text, Parquet dates or decimals) become text; each rule then parses its
    column from that.
    """
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            text = frame[column].astype("string").str.strip()
            frame[column] = text.mask(text == "")
    return frame


def _unreadable(fmt: str, exc: BaseException) -> str:
    return f"readable as {fmt} ({type(exc).__name__}: {_excerpt(str(exc), MAX_ERROR_CHARS)})"


def _checked(
    path: Path | None,
    violations: list[Violation],
    validate: Callable[[pd.DataFrame, str], pd.DataFrame | None],
) -> pd.DataFrame | None:
    """Reads and validates one file; a value type no rule foresaw becomes a violation."""
    frame = None if path is None else _read_file(path, violations)
    if frame is None or path is None:
        return None
    try:
        return validate(_blank_as_missing(frame), path.name)
    except Exception as exc:  # safety net: the contract promises a readable error, not a crash
        rule = f"values the contract can check ({type(exc).__name__}: "
        violations.append(Violation(path.name, "", rule + f"{_excerpt(str(exc))})", 0))
        return None


def _validate_customers(
    df: pd.DataFrame, file: str, violations: list[Violation], latest: pd.Timestamp
) -> pd.DataFrame | None:
    if not _has_columns(df, CUSTOMER_COLUMNS, file, violations):
        return None
    _require_rows(df, file, violations)
    checks = _Checks(df, file, violations)
    out = pd.DataFrame(
        {
            "customer_id": checks.id_column("customer_id"),
            "signup_at": checks.timestamp_column("signup_at", latest, nullable=True),
            "email": checks.text_column("email", MAX_EMAIL_LENGTH),
        }
    )
    checks.unique(out["customer_id"], "customer_id")
    return out


def _validate_orders(
    df: pd.DataFrame,
    file: str,
    violations: list[Violation],
    latest: pd.Timestamp,
    customers: pd.DataFrame | None,
) -> pd.DataFrame | None:
    if not _has_columns(df, ORDER_COLUMNS, file, violations):
        return None
    _require_rows(df, file, violations)
    checks = _Checks(df, file, violations)
    out = pd.DataFrame(
        {
            "order_id": checks.id_column("order_id"),
            "customer_id": checks.id_column("customer_id"),
            "ordered_at": checks.timestamp_column("ordered_at", latest, nullable=False),
            "amount": checks.number_column("amount", 0, MAX_AMOUNT, nullable=False),
            "item_count": checks.number_column(
                "item_count", 1, MAX_ITEM_COUNT, nullable=True, integer=True
            ),
            "category": checks.text_column("category", MAX_TEXT_LENGTH),
        }
    )
    checks.unique(out["order_id"], "order_id")
    if customers is not None:
        known = out["customer_id"].isna() | out["customer_id"].isin(customers["customer_id"])
        checks.report("customer_id", KNOWN_CUSTOMER, ~known, out["customer_id"])
    if not violations:
        out["item_count"] = out["item_count"].astype("Int64")
    return out


def _has_columns(
    df: pd.DataFrame, required: tuple[str, ...], file: str, violations: list[Violation]
) -> bool:
    missing = [column for column in required if column not in df.columns]
    if missing:
        rule = column_present_rule([str(column) for column in df.columns])
        for column in missing:
            violations.append(Violation(file, column, rule, 0))
    return not missing


def _require_rows(df: pd.DataFrame, file: str, violations: list[Violation]) -> None:
    if len(df) == 0:
        violations.append(Violation(file, "", AT_LEAST_ONE_ROW, 0))


class _Checks:
    """The column rules of one file. Each ``*_column`` method records its violations and
    returns the column parsed, with values that broke a rule as missing.

    A value is reported under one rule only: a too-long cell is not parsed, an unparseable
    one is not range-checked, and "not null" counts cells missing in the file itself.
    """

    def __init__(self, df: pd.DataFrame, file: str, violations: list[Violation]) -> None:
        self.df = df
        self.file = file
        self.violations = violations

    def report(
        self, column: str, rule: str, bad: pd.Series, values: pd.Series | None = None
    ) -> None:
        """Adds a violation if any row is ``bad``; examples quote ``values`` (default: the file)."""
        flags = bad.fillna(False).to_numpy(dtype=bool)
        if not flags.any():
            return
        positions = np.flatnonzero(flags)
        shown = self.df[column] if values is None else values
        examples = tuple(
            f"row {i + 1}: {_show(shown.iloc[i])}" for i in positions[:_MAX_EXAMPLES].tolist()
        )
        self.violations.append(Violation(self.file, column, rule, len(positions), examples))

    def not_null(self, column: str) -> None:
        missing = self.df[column].isna()
        if missing.any():
            positions = np.flatnonzero(missing.to_numpy())
            examples = tuple(f"row {i + 1}" for i in positions[:_MAX_EXAMPLES].tolist())
            self.violations.append(Violation(self.file, column, NOT_NULL, len(positions), examples))

    def unique(self, values: pd.Series, column: str) -> None:
        duplicated = values.notna() & values.duplicated(keep=False)
        self.report(column, UNIQUE, duplicated, values)

    def text_column(self, column: str, limit: int) -> pd.Series:
        """The column as text with cells over ``limit`` characters reported and masked."""
        text = self.df[column].astype("string")
        too_long = text.str.len() > limit
        self.report(column, at_most_rule(limit), too_long)
        return text.mask(too_long.fillna(False))

    def id_column(self, column: str) -> pd.Series:
        """Ids may be int or text in the files; they are text in the warehouse."""
        series = self.df[column]
        self.not_null(column)
        if pd.api.types.is_bool_dtype(series):
            self.report(column, f"{ID_RULE}, not boolean", series.notna())
            return pd.Series(pd.NA, index=series.index, dtype="string")
        if pd.api.types.is_float_dtype(series):
            # Parquet writes integer ids with nulls as float; 17.0 means id "17".
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            with np.errstate(invalid="ignore"):
                whole = np.isfinite(values) & (values == np.floor(values))
                whole &= np.abs(values) < 2.0**53  # beyond, floats skip integers
            bad = series.notna() & ~whole
            self.report(column, ID_RULE, bad)
            return series.mask(bad).astype("Int64").astype("string")
        if pd.api.types.is_integer_dtype(series):
            return series.astype("string")
        if not pd.api.types.is_string_dtype(series):
            self.report(column, ID_RULE, series.notna())
            return pd.Series(pd.NA, index=series.index, dtype="string")
        text = self.text_column(column, MAX_ID_LENGTH)
        # The scoring API refuses such ids, so a customer holding one could never be scored by id.
        forbidden = text.str.contains(ID_FORBIDDEN_CHARACTERS, regex=True)
        self.report(column, NO_CONTROL_CHARACTERS, forbidden, text)
        return text.mask(forbidden.fillna(False))

    def timestamp_column(self, column: str, latest: pd.Timestamp, *, nullable: bool) -> pd.Series:
        """ISO 8601 text or a Parquet timestamp, as naive UTC, within the allowed dates.

        Stored as UTC without a zone: comparisons against as_of dates stay unambiguous.
        """
        series = self.df[column]
        if not nullable:
            self.not_null(column)
        overflow_year = pd.Series(np.nan, index=series.index)
        if pd.api.types.is_datetime64_any_dtype(series):
            parsed = pd.to_datetime(series, utc=True).dt.tz_convert(None)
        elif pd.api.types.is_string_dtype(series):
            text = self.text_column(column, MAX_TEXT_LENGTH)
            parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
            parsed = parsed.dt.tz_convert(None)
            failed = text.notna() & parsed.isna()
            overflow_year = _overflow_years(text, failed)
            self.report(column, ISO_8601, failed & overflow_year.isna())
        else:  # numbers or booleans: no date at all
            self.report(column, ISO_8601, series.notna())
            return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
        future = (parsed > latest) | (overflow_year >= _PANDAS_MIN_YEAR)
        self.report(column, future_rule(latest), future)
        early = (parsed < pd.Timestamp(MIN_DATE)) | (overflow_year < _PANDAS_MIN_YEAR)
        self.report(column, NOT_BEFORE, early)
        return parsed.mask(future | early)

    def number_column(
        self,
        column: str,
        minimum: int,
        maximum: int,
        *,
        nullable: bool,
        integer: bool = False,
    ) -> pd.Series:
        """A finite number in ``[minimum, maximum]`` (whole if ``integer``), as float64."""
        series = self.df[column]
        kind = "integer" if integer else "numeric"
        if not nullable:
            self.not_null(column)
        nowhere = pd.Series(False, index=series.index)
        if pd.api.types.is_bool_dtype(series):
            # Parquet booleans would otherwise be read as 1/0 without a word.
            self.report(column, NOT_BOOLEAN, series.notna())
            return pd.Series(np.nan, index=series.index)
        if pd.api.types.is_numeric_dtype(series):
            values = series.astype("float64")
            unparsed, nan_text, too_big, too_small = nowhere, nowhere, nowhere, nowhere
        elif pd.api.types.is_string_dtype(series):
            text = self.text_column(column, MAX_TEXT_LENGTH)
            values = pd.to_numeric(text, errors="coerce").astype("float64")
            failed = text.notna() & values.isna()
            nan_text = _matches(text, failed, _NAN_TEXT)
            overflow = _matches(text, failed, _DECIMAL)
            negative = _matches(text, overflow, "-.*")
            too_big, too_small = overflow & ~negative, negative
            unparsed = failed & ~nan_text & ~overflow
        else:  # timestamps, durations: not amounts
            self.report(column, kind, series.notna())
            return pd.Series(np.nan, index=series.index)
        finite = np.isfinite(values)
        fractional = finite & (values != np.floor(values)) if integer else nowhere
        self.report(column, kind, unparsed | fractional)
        self.report(column, FINITE, nan_text | np.isinf(values))
        self.report(
            column, minimum_rule(column, minimum), too_small | (finite & (values < minimum))
        )
        self.report(column, maximum_rule(column, maximum), too_big | (finite & (values > maximum)))
        return values.where(finite & ~fractional & values.between(minimum, maximum))


def _overflow_years(text: pd.Series, failed: pd.Series) -> pd.Series:
    """The year of each ``failed`` value that is a valid ISO date outside pandas' range.

    Such a value is re-parsed with its year replaced by one of the same leap-ness (2000 or
    2001), so "2999-02-29" stays invalid while "2999-01-01" is recognised as a date. Only the
    failed rows are examined; the rest get NaN.
    """
    years = pd.Series(np.nan, index=text.index)
    if not failed.any():
        return years
    parts = text[failed].str.extract(_ISO_YEAR)
    year = pd.to_numeric(parts[0], errors="coerce").astype("float64")
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    stand_in = pd.Series(np.where(leap, "2000", "2001"), index=parts.index) + parts[1]
    valid = pd.to_datetime(stand_in, errors="coerce", utc=True, format="ISO8601").notna()
    years.loc[parts.index] = year.where(valid)
    return years


def _matches(text: pd.Series, rows: pd.Series, pattern: str) -> pd.Series:
    """Which of ``rows`` fully match ``pattern`` (case-insensitive); a regex on those only,
    since they are the few failed values, not the whole column."""
    matched = pd.Series(False, index=text.index)
    if rows.any():
        hits = text[rows].str.fullmatch(pattern, case=False)
        matched.loc[hits.index] = hits.fillna(False).astype(bool)
    return matched


def _utc_naive(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def _excerpt(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with "…" and the full length."""
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[:limit]}… ({len(text)} chars)"


def quote_value(value: object) -> str:
    """A found value as an error quotes it (a file's cell or a table's value)."""
    return _show(value)


def _show(value: object) -> str:
    """A found value for an error: strings quoted and escaped, at most ``MAX_QUOTED_CHARS``."""
    if not isinstance(value, str):
        return _excerpt(str(value))
    if len(value) <= MAX_QUOTED_CHARS:
        return repr(value)
    return f"{value[:MAX_QUOTED_CHARS]!r}… ({len(value)} chars)"
