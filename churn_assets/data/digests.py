"""Per-period digests of a delivery: which periods' data a new file changed.

A load records, for every calendar period, a digest of the orders dated in it and one of
the customers whose first order falls in it (:class:`~churn_assets.periods.PeriodDigests`);
the next load compares its own with them to rebuild only the periods it can have changed
(:func:`churn_assets.periods.periods_to_rebuild`).

They are computed from the files, in Python, not from the loaded tables in Postgres:
``churn run`` must know the periods its one run builds before that run (whose first step
is the load) starts, so it reads them from the files too, and one implementation in both
places is what makes the two agree. (A Postgres digest of ``raw.orders`` would need a
Python twin reproducing Postgres' text forms of timestamps and numerics to the byte.)
``churn run``'s load reuses the digests the command computed a moment before (same files,
same size, mtime and inode), so a run pays for them once.

A row's digest is a 64-bit hash of its values, computed with numpy over Arrow's buffers
(no Python object per value: ~1 s per million orders); a period's is its row count and
two independent sums of those hashes. Sums do not depend on row order, so a re-exported
file with the same rows in another order changes nothing. Timestamps are hashed as the
UTC instant the contract loads (an offset or a Parquet time zone is resolved), other
values as the file holds them: ``12.50`` and ``12.5`` differ, which can only rebuild more.
It tells changed data from unchanged, not a forged file from a real one.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from churn_assets.data.contract import CUSTOMER_COLUMNS, ORDER_COLUMNS, find_table_file
from churn_assets.periods import Period, PeriodDigests

U64 = npt.NDArray[np.uint64]
_TIMESTAMPS = ("ordered_at", "signup_at")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x5BD1E9955BD1E995)  # a missing value's hash
_CHUNK_ROWS = 1_000_000  # strings are hashed a million at a time (bounded scratch memory)
_EPOCH = date(1970, 1, 1)


def digest_raw_files(raw_dir: Path, period: Period, window_days: int) -> PeriodDigests | None:
    """The digests of the ``customers`` and ``orders`` files in ``raw_dir``; ``None`` when
    they cannot be read as the contract's columns (the load reports why) or hold no order:
    then nothing compares, and every period is rebuilt."""
    try:
        customers = find_table_file(raw_dir, "customers")
        orders = find_table_file(raw_dir, "orders")
        stamps = (_stamp(customers), _stamp(orders))
    except (OSError, ValueError):  # RawDataContractError is a ValueError
        return None
    try:
        last, by_orders, by_customers = _file_digests(customers, orders, stamps, period)
    except Exception:  # unreadable, a missing column, a value no rule foresaw
        return None
    return PeriodDigests(period, window_days, last, dict(by_orders), dict(by_customers))


def _stamp(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns, info.st_ino


Digests = tuple[tuple[str, str], ...]


@lru_cache(maxsize=2)
def _file_digests(
    customers_path: Path,
    orders_path: Path,
    stamps: tuple[tuple[int, int, int], tuple[int, int, int]],  # the cache key's part
    period: Period,
) -> tuple[date, Digests, Digests]:
    orders = _read(orders_path, ORDER_COLUMNS)
    customers = _read(customers_path, CUSTOMER_COLUMNS)
    if orders.num_rows == 0:
        raise ValueError("no orders")
    ordered_at = _instants(orders.column("ordered_at"))
    days = _days(ordered_at)
    order_buckets = period_end_days(days, period)
    order_hashes = _row_hashes(orders, {"ordered_at": ordered_at})
    # A customer belongs to the period of their first order: the first one whose
    # population (and so whose features) they are in.
    first = (
        pa.table({"customer_id": _ids(orders.column("customer_id")), "day": days})
        .group_by("customer_id")
        .aggregate([("day", "min")])
    )
    position = customers.column_names.index("customer_id")
    customers = customers.set_column(position, "customer_id", _ids(customers.column("customer_id")))
    joined = customers.join(first, "customer_id", join_type="inner")
    customer_hashes = _row_hashes(
        joined.select(list(CUSTOMER_COLUMNS)),
        {"signup_at": _instants(joined.column("signup_at"))},
    )
    customer_buckets = period_end_days(joined.column("day_min").to_numpy(), period)
    last = _EPOCH + timedelta(days=int(days.max()))
    return (
        last,
        _by_period(order_buckets, order_hashes),
        _by_period(customer_buckets, customer_hashes),
    )


def _read(path: Path, columns: tuple[str, ...]) -> pa.Table:
    """The contract's columns of one file, as the file holds them (CSV: all text)."""
    import pyarrow.parquet as pq
    from pyarrow import csv

    # Opened without following a link, as the contract reads it.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        if path.suffix == ".parquet":
            return pq.read_table(handle, columns=list(columns))
        options = csv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()),
            include_columns=list(columns),
            null_values=[""],
            strings_can_be_null=True,
        )
        return csv.read_csv(handle, convert_options=options)


def _ids(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Ids as text: a customer's orders and their row join whatever the files' types."""
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def _instants(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps as the contract loads them: naive UTC, microseconds."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return pc.cast(column, pa.timestamp("us"))  # a zoned timestamp keeps its UTC value
    try:
        return pc.cast(column, pa.timestamp("us"))
    except pa.ArrowInvalid:  # offsets (Z, +02:00) or mixed forms: the contract's own parse
        import pandas as pd

        parsed = pd.to_datetime(column.to_pandas(), errors="coerce", utc=True, format="ISO8601")
        return pa.chunked_array([pa.array(parsed.dt.tz_convert(None), pa.timestamp("us"))])


def _days(instants: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 of each timestamp (none may be missing)."""
    days = pc.cast(pc.cast(instants, pa.date32()), pa.int32())
    if days.null_count:
        raise ValueError("an order without a date")
    return days.to_numpy().astype(np.int64)


def period_end_days(days: npt.NDArray[np.int64], period: Period) -> npt.NDArray[np.int64]:
    """:func:`churn_assets.periods.period_end` of each day, as days since 1970-01-01."""
    if period is Period.WEEK:
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
        return days + 6 - weekday
    if len(days) == 0:
        return days
    # A history spans a few hundred distinct days: compute each once, then look them up.
    first = int(days.min())
    span = np.arange(first, int(days.max()) + 1, dtype=np.int64)
    month = span.astype("datetime64[D]").astype("datetime64[M]")
    ends = ((month + 1).astype("datetime64[D]") - 1).astype(np.int64)
    return ends[days - first]


def _by_period(buckets: npt.NDArray[np.int64], hashes: U64) -> Digests:
    """Each period's row count and two sums of its rows' hashes, as text."""
    if len(buckets) == 0:
        return ()
    order = np.argsort(buckets, kind="stable")
    buckets, hashes = buckets[order], hashes[order]
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    counts = np.diff(np.r_[starts, len(buckets)])
    with np.errstate(over="ignore"):
        first = np.add.reduceat(hashes, starts, dtype=np.uint64)
        second = np.add.reduceat(_mix(hashes ^ _GOLDEN), starts, dtype=np.uint64)
    return tuple(
        ((_EPOCH + timedelta(days=int(day))).isoformat(), f"{count}:{a:016x}{b:016x}")
        for day, count, a, b in zip(buckets[starts], counts, first, second, strict=True)
    )


def _row_hashes(table: pa.Table, replaced: dict[str, pa.ChunkedArray]) -> U64:
    """One hash per row over every column in order (``replaced`` columns by those values)."""
    row = np.zeros(table.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for position, name in enumerate(table.column_names):
            column = replaced.get(name, table.column(name))
            row = _mix(row * _GOLDEN + _column_hashes(column) + np.uint64(position))
    return row


def _column_hashes(column: pa.ChunkedArray) -> U64:
    kind = column.type
    if pa.types.is_timestamp(kind):
        values = pc.cast(column, pa.int64())
        return _with_nulls(values, _mix(_filled(values, 0).view(np.uint64)))
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = pc.cast(column, pa.float64())
        bits = _filled(values, 0.0).astype(np.float64).view(np.uint64)
        return _with_nulls(values, _mix(bits ^ _GOLDEN))
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        column = pc.cast(column, pa.large_string())
    parts: list[U64] = []
    repeats = True  # until a chunk shows mostly distinct values (an order id)
    for piece in column.chunks:
        for start in range(0, len(piece), _CHUNK_ROWS):
            chunk = piece.slice(start, _CHUNK_ROWS)
            if repeats:
                # A customer id or a category repeats: hash each distinct value once.
                encoded = pc.dictionary_encode(chunk)
                repeats = 2 * len(encoded.dictionary) <= len(chunk)
                if repeats:
                    indices = pc.fill_null(encoded.indices, 0).to_numpy()
                    parts.append(_string_hashes(encoded.dictionary)[indices])
                    continue
            parts.append(_string_hashes(chunk))
    hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    return _with_nulls(column, hashes)


def _filled(values: pa.ChunkedArray | pa.Array, zero: float) -> npt.NDArray[np.generic]:
    return pc.fill_null(values, zero).to_numpy()


def _with_nulls(values: pa.ChunkedArray | pa.Array, hashes: U64) -> U64:
    if values.null_count:
        hashes = np.where(pc.is_null(values).to_numpy(zero_copy_only=False), _NULL, hashes)
    return hashes


# Powers of the polynomial hash's base modulo 2**64, one per byte position.
_BASE = np.uint64(0x100000001B3)


@lru_cache(maxsize=4)
def _powers(length: int) -> U64:
    """``base**i`` for ``i < length``; asked for in powers of two, so rarely computed."""
    powers = np.ones(length, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(1, length):
            powers[i] = powers[i - 1] * _BASE
    return powers


def _string_hashes(text: pa.Array) -> U64:
    """A hash of each string (a string or large_string array): a polynomial over its bytes
    (mod 2**64), then mixed with its length. Vectorised over Arrow's offsets and data
    buffers."""
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[
        text.offset : text.offset + len(text) + 1
    ].astype(np.int64)
    data_buffer = text.buffers()[2]
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
        if data_buffer is not None
        else np.zeros(0, dtype=np.uint8)
    )
    starts, ends = offsets[:-1] - offsets[0], offsets[1:] - offsets[0]
    lengths = ends - starts
    longest = int(lengths.max()) if len(lengths) else 0
    powers = _powers(1 << longest.bit_length())
    with np.errstate(over="ignore"):
        if len(lengths) and int(lengths.min()) == longest:
            # Ids of one width (the usual case): a byte column at a time, no per-byte index.
            rows = data.reshape(len(lengths), longest).astype(np.uint64) + np.uint64(1)
            sums = rows @ powers[:longest]
        else:
            position = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
            terms = powers[position] * (data.astype(np.uint64) + np.uint64(1))
            running = np.zeros(len(data) + 1, dtype=np.uint64)
            np.cumsum(terms, out=running[1:])
            sums = running[ends] - running[starts]
        return _mix(sums + lengths.astype(np.uint64) * _GOLDEN)


def _mix(x: U64) -> U64:
    """splitmix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
