"""``scoring.online_predictions`` in Postgres: its DDL and migrations, the scorer's COPY
writer, the retention's batched DELETE and the shadow comparison's reads. What the table
means, its line format and the retention rule: :mod:`churn_assets.tables.online_predictions`.

The key (``request_id``, ``batch_item``) has no index: a unique index on random uuids cost
Postgres more than the rest of the insert (~3 of ~5 ms per 500 rows at 360,000 rows), CPU
the scorer's host may share. Index it if you look requests up by id. The one index is on
``scored_at``, for the retention: the scorer's clock only moves forward, so each insert
lands on the rightmost leaf page (a 500-row COPY into a 1M-row log took 1.5-1.8 ms with or
without it, benchmarks/RESULTS.md).

Why a batched DELETE and not a table partitioned by day (where dropping a day is cheap):

* Locks. A DELETE takes the same table lock as the scorer's COPY (ROW EXCLUSIVE): it never
  waits for, or blocks, the writer, ``churn status``, the analytics view or an analyst's
  long query. Dropping (or detaching) a partition takes ACCESS EXCLUSIVE on the parent: it
  waits for every running reader of the log, and while it waits every new COPY and read
  queues behind it. (DETACH ... CONCURRENTLY avoids that, in two transactions outside any
  transaction block, waiting for all older snapshots.)
* No DDL in the steady state. A partitioned log needs each day's partition before its
  first row: a COPY whose row has no partition fails whole (its batch is lost), so the
  scorer would create partitions ahead, and a default partition for stragglers blocks
  creating the partition of any day it holds rows for.
* Old homes. An existing log cannot become partitioned in place: a migration renames it and
  attaches it as a partition (scanning it under an exclusive lock), and the analytics view,
  bound to the table's identity rather than its name, would keep reading the renamed table
  until the next analytics run. Here an existing log only gains the ``scored_at`` index
  (built in ~0.6 s at 1M rows) and keeps every row.
* The cost is small at this scale: at 1M rows, deleting the 250,000 older than 180 days took
  0.38 s in 5,000-row batches (~8 ms each), a pass with nothing to delete 15 ms
  (benchmarks/RESULTS.md). Deleted rows leave dead tuples for
  (auto)vacuum; the file does not shrink, but its free space is reused, so the table stays
  at about the retention's worth of rows (plus autovacuum's slack) instead of growing.

Partition by day instead if the log takes tens of millions of rows a day, where deleting a
day's rows (and vacuuming them) costs more than writing them did.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extensions

from churn_assets.infra.warehouse import WarehouseError, unreachable
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.tables.online_predictions import (
    LINE_FIELDS,
    PRUNE_BATCH_ROWS,
    SHADOW_COLUMNS,
    ShadowGroup,
)

# The unique index on (request_id, batch_item) an older scorer created; dropped since.
LEGACY_UNIQUE_INDEX = "online_predictions_request_item"
# The index the retention's DELETE finds old rows by (see the module docstring).
SCORED_AT_INDEX = "online_predictions_scored_at"

CREATE_TABLE = f"""
create schema if not exists {ONLINE_PREDICTIONS_TABLE.split(".")[0]};
create table if not exists {ONLINE_PREDICTIONS_TABLE} (
    request_id text not null,
    scored_at timestamptz not null,
    customer_id text,
    input_hash text not null,
    features_as_of text,
    model_name text not null,
    model_version text not null,
    model_sha256 text not null,
    churn_probability double precision not null,
    risk_band text not null,
    latency_ms double precision not null,
    served_by text not null,
    shadow_model_version text,
    shadow_model_sha256 text,
    shadow_probability double precision,
    shadow_risk_band text,
    batch_item integer
);
-- Added with /predict/batch logging: a batch's items share its request id.
alter table {ONLINE_PREDICTIONS_TABLE} add column if not exists batch_item integer;
alter table {ONLINE_PREDICTIONS_TABLE} drop constraint if exists online_predictions_pkey;
-- Its unique index came and went with that change too (see the module docstring).
drop index if exists {ONLINE_PREDICTIONS_TABLE.split(".")[0]}.{LEGACY_UNIQUE_INDEX};
-- Added with the retention: an older log gains it and keeps its rows.
create index if not exists {SCORED_AT_INDEX} on {ONLINE_PREDICTIONS_TABLE} (scored_at);
"""


def create_table(conn: psycopg2.extensions.connection) -> None:
    """Create the schema and table if missing (idempotent; the caller commits)."""
    with conn.cursor() as cur:
        cur.execute(CREATE_TABLE)


_PRUNE_BATCH = f"""
delete from {ONLINE_PREDICTIONS_TABLE} where ctid = any(array(
    select ctid from {ONLINE_PREDICTIONS_TABLE} where scored_at < %(cutoff)s limit %(rows)s
))
"""


def prune_batch(
    conn: psycopg2.extensions.connection, cutoff: datetime, rows: int = PRUNE_BATCH_ROWS
) -> int:
    """Delete up to ``rows`` rows scored before ``cutoff`` (the caller commits); returns how
    many went. Fewer than ``rows`` means none older is left. The table must exist."""
    with conn.cursor() as cur:
        cur.execute(_PRUNE_BATCH, {"cutoff": cutoff, "rows": rows})
        return int(cur.rowcount)


def prune(
    conn: psycopg2.extensions.connection, cutoff: datetime, batch_rows: int = PRUNE_BATCH_ROWS
) -> int:
    """Delete every row scored before ``cutoff``, ``batch_rows`` at a time, committing each
    batch (short transactions: vacuum can reclaim the first batches while the rest run);
    returns how many went. No table, nothing to delete: pruning creates nothing."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (ONLINE_PREDICTIONS_TABLE,))
        if cur.fetchone()[0] is None:
            return 0
    deleted = 0
    while True:
        batch = prune_batch(conn, cutoff, batch_rows)
        conn.commit()
        deleted += batch
        if batch < batch_rows:
            return deleted


# The shadow results oriented as champion and challenger, whichever of the two answered:
# on a champion row the answering model is the champion and the shadow the challenger, on
# a canary row the other way round. (name, answering model's column, shadow's column):
_ORIENTED = (
    ("version", "model_version", "shadow_model_version"),
    ("probability", "churn_probability", "shadow_probability"),
    ("band", "risk_band", "shadow_risk_band"),
)
_SHADOW_SELECT = {
    f"{side}_{name}": f"case when served_by = 'champion' then {first} else {second} end"
    for name, answered, shadow in _ORIENTED
    for side, first, second in (
        ("champion", answered, shadow),
        ("challenger", shadow, answered),
    )
} | {"scored_at": "scored_at"}
if tuple(_SHADOW_SELECT) != SHADOW_COLUMNS:
    raise RuntimeError("_SHADOW_SELECT is out of sync with SHADOW_COLUMNS")


def read_shadow_results(conn: psycopg2.extensions.connection) -> pd.DataFrame:
    """Every logged prediction that has a shadow result, as champion and challenger
    (:data:`SHADOW_COLUMNS`), oldest first, in one query. Empty when no scorer has created
    the table yet: reading creates nothing.

    Row by row, for analysis and as the reference of :func:`read_shadow_groups`, which the
    platform reads instead: at a million rows this took 3.5 s (benchmarks/RESULTS.md)."""
    select = ", ".join(f"{sql} as {column}" for column, sql in _SHADOW_SELECT.items())
    with conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (ONLINE_PREDICTIONS_TABLE,))
        if cur.fetchone()[0] is None:
            return pd.DataFrame(columns=list(SHADOW_COLUMNS))
        cur.execute(
            f"select {select} from {ONLINE_PREDICTIONS_TABLE} "
            "where shadow_model_version is not null order by scored_at, request_id"
        )
        return pd.DataFrame(cur.fetchall(), columns=list(SHADOW_COLUMNS))


# Per (served_by, model, shadow model): the rows whose bands agree, the first and last
# time, and each row's two probabilities as 16 bytes (float8send: big-endian IEEE 754,
# exact), answered first, concatenated by one aggregate so the two sides cannot come
# apart. A missing probability reads as NaN, as in the row-by-row frame. Grouping by the
# raw columns and orienting the few groups in Python is ~10 % cheaper than the CASE per row.
_NAN = "float8send('NaN'::float8)"
_SHADOW_GROUPS = f"""
select served_by, model_version, shadow_model_version,
    count(*) filter (where risk_band is not distinct from shadow_risk_band),
    min(scored_at), max(scored_at),
    string_agg(
        coalesce(float8send(churn_probability), {_NAN})
        || coalesce(float8send(shadow_probability), {_NAN}),
        ''::bytea
    )
from {ONLINE_PREDICTIONS_TABLE}
where shadow_model_version is not null
group by 1, 2, 3
"""


def read_shadow_groups(conn: psycopg2.extensions.connection) -> list[ShadowGroup]:
    """:func:`read_shadow_results` aggregated per (champion, challenger) pair in one query
    (one scan of the log): what :func:`churn_assets.ml.shadow.pairs_from_groups` compares,
    with the same results as the row-by-row frame. Rather than a million rows of seven
    columns as Python objects, Postgres sends a few counts and one packed array of
    probabilities per group (16 bytes a row: a group would need some 60 million rows to
    reach Postgres's 1 GB limit on a value). Empty when no scorer has created the table
    yet: reading creates nothing."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (ONLINE_PREDICTIONS_TABLE,))
        if cur.fetchone()[0] is None:
            return []
        cur.execute(_SHADOW_GROUPS)
        rows = cur.fetchall()
    # Oriented as in _SHADOW_SELECT: a champion row's shadow is the challenger, any other
    # row (canary) the other way round; a pair's champion and canary groups are merged.
    parts: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for served_by, version, shadow_version, same_band, first, last, packed in rows:
        both = np.frombuffer(packed, dtype=">f8").astype(np.float64).reshape(-1, 2)
        answered, shadow = both[:, 0], both[:, 1]
        if served_by == "champion":
            key, champion_p, challenger_p = (version, shadow_version), answered, shadow
        else:
            key, champion_p, challenger_p = (shadow_version, version), shadow, answered
        parts.setdefault((str(key[0]), str(key[1])), []).append(
            (same_band, first, last, champion_p, challenger_p)
        )
    return [
        ShadowGroup(
            champion_version=champion,
            challenger_version=challenger,
            same_band=sum(int(part[0]) for part in group),
            first_scored_at=min(part[1] for part in group).astimezone(UTC),
            last_scored_at=max(part[2] for part in group).astimezone(UTC),
            champion_probability=np.concatenate([part[3] for part in group]),
            challenger_probability=np.concatenate([part[4] for part in group]),
        )
        for (champion, challenger), group in parts.items()
    ]


# COPY in the text format costs ~10 us a row, all in, where execute_values' INSERT (mogrify
# per row, then the server parsing it) cost ~30 us (benchmarks/RESULTS.md). Request ids are
# fresh uuids, so COPY's lack of ON CONFLICT loses nothing. The lines are already in COPY's
# text format (tables/online_predictions.py: LINE_FIELDS).
_COPY = f"copy {ONLINE_PREDICTIONS_TABLE} ({', '.join(LINE_FIELDS)}) from stdin"


class PostgresPredictionLogWriter:
    """The scorer's log writer's session: one connection of its own, opened (and the table
    created) on first use, reopened after a failure. Used by one thread at a time.

    A commit need not wait for its WAL flush (``synchronous_commit=off``): a warehouse crash
    may lose the last fraction of a second of log rows, never their consistency."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg2.extensions.connection | None = None

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg2.connect(
                    self._url, connect_timeout=10, options="-c synchronous_commit=off"
                )
            except psycopg2.Error as exc:
                raise unreachable(self._url, exc) from None
            with self._conn:
                create_table(self._conn)
        return self._conn

    def append(self, lines: Sequence[str]) -> None:
        """Write ``lines`` (each one row, in the line format) in one COPY, one transaction.
        Raises :class:`WarehouseError` when they were not written (the next call reconnects)."""
        if not lines:
            return
        try:
            conn = self._connection()
            with conn, conn.cursor() as cur:
                cur.copy_expert(_COPY, io.StringIO("".join(lines)))
        except psycopg2.Error as exc:
            self.close()
            raise WarehouseError(str(exc)) from exc

    def prune_before(self, cutoff: datetime, rows: int = PRUNE_BATCH_ROWS) -> int:
        """One batch of the retention: delete up to ``rows`` rows scored before ``cutoff``, in
        one transaction; returns how many went (fewer than ``rows``: none older is left)."""
        try:
            conn = self._connection()
            with conn:
                return prune_batch(conn, cutoff, rows)
        except psycopg2.Error as exc:
            self.close()
            raise WarehouseError(str(exc)) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
