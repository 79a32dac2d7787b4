"""``scoring.online_predictions``: the table the scorer logs every served prediction to.

Its definition lives here, not in the scorer, because two sides create it: the scorer's log
writer (before its first insert) and the platform (before the analyst models that read it
are built), so ``dbt build`` never meets a missing source on a warehouse no scorer has
written to yet.

Row semantics: ``model_*``, ``churn_probability`` and ``risk_band`` are the model that
answered the request; ``served_by`` says which alias that was (``champion``, or ``canary``
for the challenger's share of customers). ``shadow_*`` hold the other model's result when
the champion and the challenger differ (the challenger's on a champion row, the champion's
on a canary row); null when there was no second model. :func:`read_shadow_results` turns
the rows with a second model back into champion and challenger, for the shadow comparison.
``batch_item`` is null for ``/predict`` and the item's index for ``/predict/batch``, whose
items share the batch's request id; ``request_id`` and ``batch_item`` together are the key.

The table has no index: the key is unique by construction (a fresh uuid per request; the
writer never retries a batch), and a unique index on random uuids cost Postgres more than
the rest of the insert (~3 of ~5 ms per 500 rows at 360,000 rows), CPU the scorer's host may
share. The analyst model's dbt test checks the key. Index it if you look requests up by id.
"""

from __future__ import annotations

import pandas as pd
import psycopg2.extensions

from churn_assets.schema import ONLINE_PREDICTIONS_TABLE

# The table's columns in table order (the log names them in its COPY, in its own order).
COLUMNS = (
    "request_id",
    "scored_at",
    "customer_id",
    "input_hash",
    "features_as_of",
    "model_name",
    "model_version",
    "model_sha256",
    "churn_probability",
    "risk_band",
    "latency_ms",
    "served_by",
    "shadow_model_version",
    "shadow_model_sha256",
    "shadow_probability",
    "shadow_risk_band",
    "batch_item",
)

# The unique index on (request_id, batch_item) an older scorer created; dropped since.
LEGACY_UNIQUE_INDEX = "online_predictions_request_item"

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
"""


def create_table(conn: psycopg2.extensions.connection) -> None:
    """Create the schema and table if missing (idempotent; the caller commits)."""
    with conn.cursor() as cur:
        cur.execute(CREATE_TABLE)


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
SHADOW_COLUMNS = tuple(_SHADOW_SELECT)


def read_shadow_results(conn: psycopg2.extensions.connection) -> pd.DataFrame:
    """Every logged prediction that has a shadow result, as champion and challenger
    (:data:`SHADOW_COLUMNS`), oldest first, in one query. Empty when no scorer has created
    the table yet: reading creates nothing."""
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
