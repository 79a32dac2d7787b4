"""Where ``customer_id`` requests get their features: the warehouse (``marts.current_features``,
the table batch scoring and the drift monitor read, so online and batch scores agree) over a
small connection pool, or an in-memory mapping for tests and benchmarks."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2.pool import ThreadedConnectionPool

from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    NUMERIC_FEATURES,
)
from churn_assets.schema import CURRENT_FEATURES_TABLE
from churn_assets.warehouse import WarehouseError, redact

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
    """What ``/health`` shows of the feature store: whether the latest lookup reached it."""

    table: str
    available: bool
    last_error: SourceError | None


class FeatureSource(Protocol):
    """Where ``customer_id`` requests get their features; must be safe to call from many
    threads at once. Rows hold the eight features (plus ``as_of`` when known).

    ``get``/``get_many`` raise :class:`WarehouseError` when the store cannot answer (503)
    and ``ValueError`` for an id the store cannot even be asked about (422)."""

    def get(self, customer_id: str) -> dict[str, Any] | None: ...

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def state(self) -> SourceState: ...


class InMemoryFeatureSource:
    """Rows from a mapping (tests, benchmarks); read-only, hence thread-safe."""

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
            message = f"cannot connect to the warehouse at {redact(url)}: {exc}"
            raise WarehouseError(message) from exc

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
                    raise WarehouseError(
                        f"cannot connect to the warehouse at {redact(self._url)}: {exc}"
                    ) from exc
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
