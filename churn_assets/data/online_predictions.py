"""``scoring.online_predictions``: the table the scorer logs every served prediction to.

Its definition lives here, not in the scorer, because two sides create it: the scorer's log
writer (before its first insert) and the platform (before the analyst models that read it
are built), so ``dbt build`` never meets a missing source on a warehouse no scorer has
written to yet.

Row semantics: ``model_*``, ``churn_probability`` and ``risk_band`` are the model that
answered the request; ``served_by`` says which alias that was (``champion``, or ``canary``
for the challenger's share of customers). ``shadow_*`` hold the other model's result when
the champion and the challenger differ (the challenger's on a champion row, the champion's
on a canary row); null when there was no second model.
"""

from __future__ import annotations

import psycopg2.extensions

from churn_assets.schema import ONLINE_PREDICTIONS_TABLE

# Column order is the insert order of ``serving.prediction_log.LoggedPrediction``.
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
)

CREATE_TABLE = f"""
create schema if not exists {ONLINE_PREDICTIONS_TABLE.split(".")[0]};
create table if not exists {ONLINE_PREDICTIONS_TABLE} (
    request_id text primary key,
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
    shadow_risk_band text
);
"""


def create_table(conn: psycopg2.extensions.connection) -> None:
    """Create the schema and table if missing (idempotent; the caller commits)."""
    with conn.cursor() as cur:
        cur.execute(CREATE_TABLE)
