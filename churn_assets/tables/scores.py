"""Batch scores and their realized performance, as every engine sees them.

Analysts read ``scoring.churn_scores`` (one row per customer: the newest period's scores)
and ``scoring.churn_scores_history`` (every period's scores, per model version: re-scoring a
period with the same version replaces its rows, another version's scores sit beside them).
A write changes both at once: a failure half-way leaves the previous scores and history
exactly as they were. ``scoring.realized_performance`` holds one row per (model version,
matured period), replaced whole by each write. How Postgres does it:
:mod:`churn_assets.tables.postgres.scores`.
"""

from __future__ import annotations

import pandas as pd

from churn_assets.schema import CHURN_LABELS_TABLE, REALIZED_TABLE

SCORES_SCHEMA = "scoring"
SCORES_TABLE = f"{SCORES_SCHEMA}.churn_scores"
SCORES_HISTORY_TABLE = f"{SCORES_SCHEMA}.churn_scores_history"
SCORE_COLUMNS = (
    "customer_id",
    "churn_probability",
    "risk_band",
    "model_name",
    "model_version",
    "model_sha256",
    "feature_as_of",
    "scored_at",
    "dagster_run_id",
    "model_data_through",
)
# What realized performance reads: a period's scores with their matured labels, only those
# of a model trained on data up to the period (plain SQL that every engine runs as it is).
MATURED_SCORE_COLUMNS = ("model_version", "as_of", "churn_probability", "churned")
MATURED_SCORES_SQL = f"""
select history.model_version, history.feature_as_of as as_of,
       history.churn_probability, labels.churned
from {SCORES_HISTORY_TABLE} as history
inner join {CHURN_LABELS_TABLE} as labels
    on labels.customer_id = history.customer_id
    and labels.as_of = history.feature_as_of
where history.model_data_through <= history.feature_as_of
"""
REALIZED_COLUMNS = (
    "model_version",
    "as_of",
    "rows",
    "auc",
    "brier",
    "mean_predicted",
    "observed_rate",
    "holdout_auc",
)
__all__ = [
    "MATURED_SCORES_SQL",
    "MATURED_SCORE_COLUMNS",
    "REALIZED_COLUMNS",
    "REALIZED_TABLE",
    "SCORES_HISTORY_TABLE",
    "SCORES_SCHEMA",
    "SCORES_TABLE",
    "SCORE_COLUMNS",
    "score_frame",
]


def score_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with exactly :data:`SCORE_COLUMNS`, in that order; raises ``ValueError``
    naming the missing ones."""
    missing = [column for column in SCORE_COLUMNS if column not in scores.columns]
    if missing:
        raise ValueError(f"scores frame is missing column(s): {', '.join(missing)}")
    return scores.loc[:, list(SCORE_COLUMNS)]
