"""Where ``customer_id`` requests get their features: ``marts.current_features``, the table
batch scoring and the drift monitor read, so online and batch scores agree. Either an online
copy of it in memory (:class:`OnlineFeatureSource`, what the scorer serves from: no
warehouse round trip per request, and it outlives a warehouse outage), the table itself over
a small connection pool (:class:`WarehouseFeatureSource`), or a mapping for tests. The copy
is loaded from the table on Postgres (:func:`warehouse_loader`) and from the Parquet file
the platform exports for the scorer on Spark (:func:`parquet_loader`)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

# The one place outside the warehouse interface (churn_assets.tables.warehouse) that talks
# to Postgres itself: the scorer's own feature store, on its request path, not an operation
# of the platform. The pooled lookup answers a customer in ~0.2 ms over a long-lived
# connection with its own retry and discard rules (the interface's operations open a
# connection per call: a connection set-up on every request). The online copy's loader
# streams the table through a server-side cursor, in chunks (a million rows never exist as
# one frame), in one read-only repeatable-read transaction with the fingerprint (filenode,
# xmin) that tells a poll whether anything changed. On another engine the scorer does not
# read the warehouse: its copy is loaded from the Parquet file the platform exports for it
# (issue 26, item 3; :func:`parquet_loader`), so the scorer never needs a JVM.
import psycopg2
import psycopg2.extensions
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg2.pool import ThreadedConnectionPool

from churn_assets.infra.warehouse import WarehouseError, unreachable
from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    NUMERIC_FEATURES,
)
from churn_assets.schema import CURRENT_FEATURES_TABLE
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.model_store import DEFAULT_POLL_SECONDS
from churn_assets.serving.poller import Poller
from churn_assets.tables.feature_export import EXPORT_ASSET

log = logging.getLogger(__name__)

FEATURE_TABLE = CURRENT_FEATURES_TABLE  # the table batch scoring and the drift monitor read
_T = TypeVar("_T")

# --- features ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceError:
    """The latest lookup that failed for a warehouse reason (kept after recovery)."""

    message: str
    at: datetime


@dataclass(frozen=True)
class SourceState:
    """What ``/health`` shows of the feature store: whether it can answer lookups and, for
    an online copy, which period it holds and whether the latest refresh reached the table."""

    table: str
    available: bool
    last_error: SourceError | None
    as_of: date | None = None  # the online copy's period (its newest as_of); None: no copy
    rows: int | None = None  # customers in the online copy
    refreshed_at: datetime | None = None  # latest refresh that reached the table
    refresh_failed: bool = False  # the latest refresh failed: answering from an older copy


class FeatureSource(Protocol):
    """Where ``customer_id`` requests get their features; must be safe to call from many
    threads at once. Rows hold the eight features (plus ``as_of`` when known).

    ``get``/``get_many`` raise :class:`WarehouseError` when the store cannot answer (503)
    and ``ValueError`` for an id the store cannot even be asked about (422). ``blocking``:
    a lookup waits on I/O, so the app calls it from a worker thread, not the event loop."""

    blocking: bool

    def get(self, customer_id: str) -> dict[str, Any] | None: ...

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def state(self) -> SourceState: ...


class InMemoryFeatureSource:
    """Rows from a mapping (tests, benchmarks); read-only, hence thread-safe."""

    blocking = False  # a dict lookup

    def __init__(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        self._rows = {key: dict(row) for key, row in rows.items()}

    def get(self, customer_id: str) -> dict[str, Any] | None:
        row = self._rows.get(customer_id)
        return dict(row) if row is not None else None

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {c: dict(self._rows[c]) for c in customer_ids if c in self._rows}

    def state(self) -> SourceState:
        return SourceState(table="(in memory)", available=True, last_error=None)


_COLUMNS = ("as_of", "customer_id", *NUMERIC_FEATURES, CATEGORICAL_FEATURE)
_SELECT = f"select {', '.join(_COLUMNS)} from {FEATURE_TABLE}"


class WarehouseFeatureSource:
    """Feature rows from ``marts.current_features`` over a small connection pool.

    psycopg2 connections must not be shared by concurrent threads, so each lookup borrows
    one from a ``ThreadedConnectionPool``. That pool raises instead of waiting when it is
    exhausted, hence the semaphore with one slot per connection in front of it. Every
    borrowed connection goes back on every path (a leaked one would exhaust the pool for
    good): a connection broken by a server restart is discarded and the lookup retried once
    on a fresh one, and after an error that is not a database error (e.g. the driver
    refusing a parameter) the connection is discarded too, since its state is unknown.

    One connection by default: a lookup is ~0.2 ms of mostly CPU, and on the 2-core
    reference machine more concurrent lookups only oversubscribe the cores (4 connections
    cut throughput 2-3x under 4 concurrent clients; see ``benchmarks/RESULTS.md``).
    Raise it for a remote warehouse, where concurrency hides network round trips.
    """

    blocking = True  # a round trip to Postgres

    def __init__(self, url: str, max_connections: int = 1) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._url = url
        self._slots = threading.BoundedSemaphore(max_connections)
        self._state = SourceState(table=FEATURE_TABLE, available=True, last_error=None)
        self._state_lock = threading.Lock()
        try:  # one connection up front: a wrong URL fails at startup, not on first request
            self._pool = ThreadedConnectionPool(1, max_connections, dsn=url, connect_timeout=10)
        except psycopg2.Error as exc:
            raise unreachable(url, exc) from None

    def get(self, customer_id: str) -> dict[str, Any] | None:
        rows = self._fetch(f"{_SELECT} where customer_id = %s", (customer_id,))
        return rows[0] if rows else None

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not customer_ids:
            return {}
        rows = self._fetch(f"{_SELECT} where customer_id = any(%s)", (list(customer_ids),))
        return {row["customer_id"]: row for row in rows}

    def state(self) -> SourceState:
        return self._state

    def close(self) -> None:
        self._pool.closeall()

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            rows = self._fetch_pooled(sql, params)
        except WarehouseError as exc:
            with self._state_lock:
                failed = SourceError(message=str(exc), at=datetime.now(UTC))
                self._state = replace(self._state, available=False, last_error=failed)
            raise
        if not self._state.available:  # one attribute read on the normal path
            with self._state_lock:
                self._state = replace(self._state, available=True)
        return rows

    def _fetch_pooled(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._slots:
            for attempt in (1, 2):
                try:
                    conn = self._pool.getconn()
                except psycopg2.Error as exc:
                    raise unreachable(self._url, exc) from None
                discard = True  # unless the query ran or failed inside the database
                try:
                    rows = _run_query(conn, sql, params)
                    discard = False
                    return rows
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    if attempt == 2:
                        raise WarehouseError(f"feature lookup failed: {exc}") from exc
                except psycopg2.Error as exc:
                    discard = bool(conn.closed)  # autocommit: a failed query leaves it usable
                    raise WarehouseError(f"feature lookup failed: {exc}") from exc
                finally:
                    self._pool.putconn(conn, close=discard)
        raise AssertionError("unreachable")  # pragma: no cover


def _run_query(
    conn: psycopg2.extensions.connection, sql: str, params: tuple[Any, ...]
) -> list[dict[str, Any]]:
    conn.autocommit = True  # plain reads: no transaction left idle between requests
    with conn.cursor() as cur:
        cur.execute(sql, params)
        names = [column.name for column in cur.description or ()]
        # numeric columns arrive as Decimal; the model and the input hash want floats
        return [
            {n: float(v) if isinstance(v, Decimal) else v for n, v in zip(names, row, strict=True)}
            for row in cur.fetchall()
        ]


# --- the online copy --------------------------------------------------------------------

# Postgres types whose values psycopg2 returns as int / float (numeric: see _NUMERIC_AS_FLOAT);
# every other column (the id aside) is stored as codes into its distinct values.
_INTEGER_OIDS = frozenset({20, 21, 23})  # int8, int2, int4
_FLOAT_OIDS = frozenset({700, 701, 1700})  # float4, float8, numeric
# float(text) and WarehouseFeatureSource's float(Decimal(text)) both round correctly, so the
# copy's floats are the pooled lookup's, without a Decimal per value while loading.
_NUMERIC_AS_FLOAT = psycopg2.extensions.new_type(
    (1700,), "NUMERIC_AS_FLOAT", lambda text, cursor: None if text is None else float(text)
)
_LOAD_CHUNK_ROWS = 50_000  # rows per fetch: bounds the Python objects alive while loading
_REFRESH_TIMEOUT_MS = 60_000  # a hung warehouse fails the refresh instead of the poller

# Changes whenever the table's rows could have: dbt swaps in a new table (new filenode),
# and any insert or update writes row versions with a newer xmin. One scan of the table
# per poll (measured in benchmarks/online_features.py), no trigger or column to maintain.
_FINGERPRINT_SQL = (
    "select pg_relation_filenode(%s::regclass), count(*), max(as_of), "
    f"max(xmin::text::bigint) from {FEATURE_TABLE}"
)

Fingerprint = tuple[Any, ...]


@dataclass(frozen=True)
class _Column:
    """One feature column: numbers (ints or floats, plus a NULL mask when any is NULL), or
    codes into ``levels``, the column's distinct values (dates, strings, None)."""

    values: np.ndarray[Any, Any]
    levels: tuple[Any, ...] | None = None
    nulls: np.ndarray[Any, Any] | None = None

    def item(self, row: int) -> Any:
        if self.levels is not None:
            return self.levels[self.values.item(row)]
        if self.nulls is not None and self.nulls.item(row):
            return None
        return self.values.item(row)  # a Python int or float, as psycopg2 returns them

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + (self.nulls.nbytes if self.nulls is not None else 0)


class FeatureSnapshot:
    """One load of the feature table, immutable: a column array per feature and an index
    from customer id to row. Requests read the snapshot reference once, so a refresh that
    swaps in the next one never mixes two periods in a response."""

    def __init__(
        self,
        index: dict[str, int],
        columns: Mapping[str, _Column | None],
        fingerprint: Fingerprint | None = None,
    ) -> None:
        self._index = index
        self._columns = tuple(columns.items())  # the table's order; None marks the id
        self.fingerprint = fingerprint
        as_of = columns.get("as_of")
        dates = [d for d in as_of.levels or () if d is not None] if as_of is not None else []
        self.as_of: date | None = max(dates) if dates else None
        self.rows = len(index)

    @classmethod
    def from_rows(
        cls,
        names: Sequence[str],
        rows: Sequence[Sequence[Any]],
        fingerprint: Fingerprint | None = None,
    ) -> FeatureSnapshot:
        """A snapshot of plain rows (``names`` includes ``customer_id``); column kinds are
        taken from the values. For tests and benchmarks; the warehouse load streams."""
        builder = _SnapshotBuilder(names, _kinds_of_values(names, rows))
        builder.add(rows)
        return builder.finish(fingerprint)

    def row(self, customer_id: str) -> dict[str, Any] | None:
        i = self._index.get(customer_id)
        if i is None:
            return None
        return {
            name: customer_id if column is None else column.item(i)
            for name, column in self._columns
        }

    @property
    def nbytes(self) -> int:
        """Bytes of the column arrays (the index dict and its strings come on top)."""
        return sum(column.nbytes for _, column in self._columns if column is not None)


_Kind = str  # "int", "float" or "levels"


def _kinds_of_values(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[_Kind]:
    def kind(j: int) -> _Kind:
        types = {type(r[j]) for r in rows if r[j] is not None}
        return "int" if types == {int} else "float" if types <= {float} and types else "levels"

    return [kind(j) for j in range(len(names))]


class _SnapshotBuilder:
    """Builds a snapshot chunk by chunk, so a million rows never exist as Python tuples at
    once: each chunk becomes arrays, concatenated at the end."""

    def __init__(self, names: Sequence[str], kinds: Sequence[_Kind]) -> None:
        self._names = list(names)
        self._kinds = list(kinds)
        self._id = self._names.index("customer_id")
        self._index: dict[str, int] = {}
        self._chunks: list[list[np.ndarray[Any, Any]]] = [[] for _ in names]
        self._nulls: list[list[np.ndarray[Any, Any]]] = [[] for _ in names]
        self._codes: list[dict[Any, int]] = [{} for _ in names]

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        start = len(self._index)
        for offset, row in enumerate(rows):
            self._index.setdefault(row[self._id], start + offset)
        if len(self._index) != start + len(rows):
            raise ValueError(f"{FEATURE_TABLE} holds a customer_id more than once")
        for j, kind in enumerate(self._kinds):
            if j == self._id:
                continue
            values = [row[j] for row in rows]
            if kind == "levels":
                codes = self._codes[j]
                self._chunks[j].append(
                    np.fromiter((codes.setdefault(v, len(codes)) for v in values), np.int32)
                )
                continue
            nulls = np.fromiter((v is None for v in values), bool, count=len(values))
            if nulls.any():
                values = [0 if v is None else v for v in values]
            self._chunks[j].append(np.array(values, np.int64 if kind == "int" else np.float64))
            self._nulls[j].append(nulls)

    def finish(self, fingerprint: Fingerprint | None) -> FeatureSnapshot:
        columns: dict[str, _Column | None] = {}
        for j, (name, kind) in enumerate(zip(self._names, self._kinds, strict=True)):
            if j == self._id:
                columns[name] = None
                continue
            values = _concat(self._chunks[j], np.int32 if kind == "levels" else np.float64)
            if kind == "levels":
                columns[name] = _Column(_narrow(values), levels=tuple(self._codes[j]))
                continue
            nulls = _concat(self._nulls[j], np.bool_)
            columns[name] = _Column(
                _narrow(values) if kind == "int" else values,
                nulls=nulls if nulls.any() else None,
            )
        return FeatureSnapshot(self._index, columns, fingerprint)


def _concat(chunks: list[np.ndarray[Any, Any]], empty: type) -> np.ndarray[Any, Any]:
    return np.concatenate(chunks) if chunks else np.empty(0, empty)


def _narrow(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The smallest integer type that holds ``values`` (``item()`` gives the same int)."""
    if values.size == 0:
        return values.astype(np.int8)
    low, high = int(values.min()), int(values.max())
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return values.astype(dtype)
    return values


def _give_back_freed_memory() -> None:
    """Return the pages a load freed to the OS (glibc only; elsewhere a no-op).

    A load builds each chunk's Python rows before they become arrays; glibc keeps those
    freed pages, so without this the scorer's RSS stays ~3x the copy's size after a load
    (measured at a million customers in benchmarks/online_features.py)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


Loader = Callable[[Fingerprint | None], FeatureSnapshot | None]
"""Given the fingerprint of the copy held (None: none yet), returns the table's next
snapshot, or None when the table has not changed. Raises when the table cannot be read."""


def warehouse_loader(url: str, chunk_rows: int = _LOAD_CHUNK_ROWS) -> Loader:
    """Loads ``marts.current_features`` from the warehouse at ``url``, one connection per
    refresh (nothing to keep alive between polls, nothing to reconnect after an outage).

    The fingerprint and the rows are read in one read-only repeatable-read transaction, so
    they describe the same rows; its lock on the table holds off dbt's swap until the load
    is done, instead of the swap hiding the rows halfway through."""

    def load(held: Fingerprint | None) -> FeatureSnapshot | None:
        try:
            conn = psycopg2.connect(
                url, connect_timeout=10, options=f"-c statement_timeout={_REFRESH_TIMEOUT_MS}"
            )
        except psycopg2.Error as exc:
            raise unreachable(url, exc) from None
        try:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            psycopg2.extensions.register_type(_NUMERIC_AS_FLOAT, conn)
            with conn.cursor() as cur:
                cur.execute(_FINGERPRINT_SQL, (FEATURE_TABLE,))
                fingerprint = tuple(cur.fetchone() or ())
            if fingerprint == held:
                return None
            with conn.cursor(name="online_features") as cur:  # server side: fetched in chunks
                cur.itersize = chunk_rows
                cur.execute(_SELECT)
                rows = cur.fetchmany(chunk_rows)
                names = [column.name for column in cur.description or ()]
                kinds = [
                    "int"
                    if c.type_code in _INTEGER_OIDS
                    else "float"
                    if c.type_code in _FLOAT_OIDS
                    else "levels"
                    for c in cur.description or ()
                ]
                builder = _SnapshotBuilder(names, kinds)
                while rows:
                    builder.add(rows)
                    rows = cur.fetchmany(chunk_rows)
            return builder.finish(fingerprint)
        except psycopg2.Error as exc:
            raise WarehouseError(f"cannot read {FEATURE_TABLE}: {exc}") from exc
        finally:
            conn.close()

    return load


def parquet_loader(path: Path, chunk_rows: int = _LOAD_CHUNK_ROWS) -> Loader:
    """Loads the features from the Parquet file at ``path`` that the asset
    ``current_features_export`` writes (:mod:`churn_assets.tables.feature_export`), with
    pyarrow alone: the scorer's copy on an engine it cannot query without a JVM (Spark).

    The fingerprint is the file's (modification time, size, inode), taken from the open
    file: the asset replaces the file by a rename, so an equal fingerprint is the same file
    (nothing is read), and the rows loaded are those of the file it describes, whatever
    replaces it meanwhile. Rows are read one batch of ``chunk_rows`` at a time into the same
    builder as the warehouse's, so both loaders give the same copy of the same rows. A
    missing or unreadable file raises :class:`WarehouseError` naming it and the asset that
    writes it: the copy held keeps answering, as through a warehouse outage."""
    names = list(_COLUMNS)

    def load(held: Fingerprint | None) -> FeatureSnapshot | None:
        try:
            with path.open("rb") as file:
                stat = os.fstat(file.fileno())
                fingerprint = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
                if fingerprint == held:
                    return None
                parquet = pq.ParquetFile(file)
                schema = parquet.schema_arrow
                builder = _SnapshotBuilder(names, [_kind_of(schema.field(n).type) for n in names])
                for batch in parquet.iter_batches(batch_size=chunk_rows, columns=names):
                    columns = [batch.column(name).to_pylist() for name in names]
                    builder.add(list(zip(*columns, strict=True)))
                return builder.finish(fingerprint)
        except FileNotFoundError:
            raise WarehouseError(
                f"no online features file at {path} (the asset {EXPORT_ASSET} writes it)"
            ) from None
        except (OSError, KeyError, pa.ArrowException) as exc:
            reason = " ".join(str(exc).split())  # one line: Arrow's messages may span several
            raise WarehouseError(
                f"cannot read the online features file {path} (the asset {EXPORT_ASSET} "
                f"writes it): {reason}"
            ) from exc

    return load


def _kind_of(column: pa.DataType) -> _Kind:
    """How the builder stores a file's column: as the warehouse loader stores the same
    column of the table (integers as ints, other numbers as floats, the rest as levels)."""
    if pa.types.is_integer(column):
        return "int"
    if pa.types.is_floating(column) or pa.types.is_decimal(column):
        return "float"
    return "levels"


class OnlineFeatureSource:
    """The current period's rows of ``marts.current_features`` in memory, following the
    table: the :class:`FeatureSource` the scorer serves ``customer_id`` requests from.

    :meth:`refresh` (every ``poll_seconds`` once :meth:`start` ed, like the champion
    poller) checks the table's fingerprint; when it changed (a new period, a rebuild) it
    loads the whole table aside and publishes it with one reference assignment. Lookups read
    that reference once and never touch the warehouse. A failed refresh keeps the copy
    answering and says so in :meth:`state` (``refresh_failed``, with the reason); the next
    poll that reaches the table catches up, no restart.

    ``metrics`` (optional) counts refreshes and shows the copy's ``as_of``; ``table`` is
    what ``/health`` names as the copy's origin (the file, for a Parquet export).
    """

    blocking = False  # microseconds in memory: a thread hop would cost more

    def __init__(
        self,
        loader: Loader,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        metrics: ServingMetrics | None = None,
        table: str = FEATURE_TABLE,
    ) -> None:
        self._loader = loader
        self._metrics = metrics
        self._snapshot: FeatureSnapshot | None = None
        self._state = SourceState(table=table, available=False, last_error=None)
        self._lock = threading.Lock()  # guards _snapshot/_state swaps
        self._refresh_lock = threading.Lock()  # one refresh at a time (poller vs callers)
        self._poller = Poller(self.refresh, poll_seconds, "online features")
        self._last_logged: str | None = None

    @classmethod
    def from_warehouse(
        cls,
        url: str,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        metrics: ServingMetrics | None = None,
    ) -> OnlineFeatureSource:
        """A copy of the table at ``url``; empty until :meth:`refresh`."""
        return cls(warehouse_loader(url), poll_seconds=poll_seconds, metrics=metrics)

    @classmethod
    def from_export(
        cls,
        path: Path,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        metrics: ServingMetrics | None = None,
    ) -> OnlineFeatureSource:
        """A copy of the Parquet export at ``path`` (``/health`` names the file); empty until
        :meth:`refresh`."""
        return cls(
            parquet_loader(path), poll_seconds=poll_seconds, metrics=metrics, table=str(path)
        )

    def get(self, customer_id: str) -> dict[str, Any] | None:
        return self._current().row(customer_id)

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        snapshot = self._current()  # once: every row of a batch from the same period
        rows = ((c, snapshot.row(c)) for c in customer_ids)
        return {c: row for c, row in rows if row is not None}

    def state(self) -> SourceState:
        with self._lock:
            return self._state

    def close(self) -> None:
        self.stop()

    def _current(self) -> FeatureSnapshot:
        snapshot = self._snapshot
        if snapshot is None:
            error = self._state.last_error
            reason = f": {error.message}" if error is not None else ""
            raise WarehouseError(f"no copy of {FEATURE_TABLE} loaded yet{reason}")
        return snapshot

    def refresh(self) -> bool:
        """Load the table if it changed; True when a new copy replaced the old one.

        Never raises for a warehouse problem: it is recorded in :meth:`state` instead, and
        the copy (if any) keeps answering."""
        with self._refresh_lock:
            held = self._snapshot
            old_as_of = held.as_of if held is not None else None
            try:
                new = self._loader(held.fingerprint if held is not None else None)
            except Exception as exc:  # any failure: keep answering, report on /health
                # a WarehouseError's message says it all (and is redacted); others need a name
                message = str(exc) if isinstance(exc, WarehouseError) else f"{exc!r}"
                self._finish(None, SourceError(message, datetime.now(UTC)))
                return False
            self._finish(new, None)
            if new is not None:
                del held  # the old copy goes with the last request still reading it
                _give_back_freed_memory()
                log.info(
                    "online features: %d customers as of %s (was %s)",
                    new.rows,
                    new.as_of,
                    old_as_of,
                )
            return new is not None

    def _finish(self, new: FeatureSnapshot | None, error: SourceError | None) -> None:
        now = datetime.now(UTC)
        with self._lock:
            snapshot = new if new is not None else self._snapshot
            self._snapshot = snapshot  # the single assignment that publishes a new copy
            self._state = replace(
                self._state,
                available=snapshot is not None,
                last_error=error or self._state.last_error,  # kept after recovery
                as_of=snapshot.as_of if snapshot is not None else None,
                rows=snapshot.rows if snapshot is not None else None,
                refreshed_at=self._state.refreshed_at if error is not None else now,
                refresh_failed=error is not None,
            )
        if self._metrics is not None:
            result = "failure" if error else "success" if new is not None else "unchanged"
            self._metrics.features_refresh.labels(result).inc()
            if new is not None and new.as_of is not None:
                midnight = datetime.combine(new.as_of, datetime.min.time(), UTC)
                self._metrics.features_as_of.set(midnight.timestamp())
        message = error.message if error is not None else None
        if message != self._last_logged:  # a failure once, not on every poll of an outage
            if error is not None:
                log.warning("online features not refreshed (serving the last copy): %s", message)
            elif self._last_logged is not None:
                log.info("online features: the warehouse is back")
            self._last_logged = message

    def start(self) -> None:
        """Start refreshing every ``poll_seconds`` in a daemon thread."""
        self._poller.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the poller and wait for it (a refresh in progress finishes first)."""
        self._poller.stop(timeout)

    @property
    def polling(self) -> bool:
        return self._poller.running
