"""``scoring.online_predictions``: the table the scorer logs every served prediction to, as
every engine sees it (its columns, the line format the scorer writes, the retention rule and
the shadow comparison's shapes). How Postgres stores, indexes and prunes it:
:mod:`churn_assets.tables.postgres.online_predictions`.

Two sides create it (:meth:`~churn_assets.tables.warehouse.Warehouse.create_prediction_log`):
the scorer's log writer (before its first insert) and the platform (before the analyst
models that read it are built), so ``dbt build`` never meets a missing source on a
warehouse no scorer has written to yet.

Row semantics: ``model_*``, ``churn_probability`` and ``risk_band`` are the model that
answered the request; ``served_by`` says which alias that was (``champion``, or ``canary``
for the challenger's share of customers). ``shadow_*`` hold the other model's result when
the champion and the challenger differ (the challenger's on a champion row, the champion's
on a canary row); null when there was no second model. ``read_shadow_results`` turns the
rows with a second model back into champion and challenger (:data:`SHADOW_COLUMNS`), for the
shadow comparison. ``batch_item`` is null for ``/predict`` and the item's index for
``/predict/batch``, whose items share the batch's request id; ``request_id`` and
``batch_item`` together are the key (unique by construction: a fresh uuid per request, and
the writer never retries a batch; the analyst model's dbt test checks it).

Retention: rows older than ``CHURN_PREDICTION_LOG_RETENTION_DAYS`` (policy rule
``prediction_log_retention_days``) are deleted by the scorer's log writer, a batch of
:data:`PRUNE_BATCH_ROWS` at a time between its writes, in a pass at most once an hour
(:mod:`churn_assets.serving.prediction_log`); ``prune_prediction_log`` is the same for
anyone else. The rule must cover the label window plus a period (:func:`check_retention`):
``analytics.online_predictions_realized`` joins a prediction to its customer's label for
``features_as_of``, and that label only exists once the period's window has closed *and*
the data that closes it has been loaded (up to a period later), so a shorter retention
would delete predictions before they could ever be judged. A prediction is in that view
from its label's arrival until the retention deletes it; keep a copy to judge it later.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from churn_assets.periods import Period, longest_period
from churn_assets.policy import PolicyError, env_name

# The table's columns in table order.
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

# The columns of a line the scorer writes, in line order: what a request knows first, the
# shadow's four columns last (the writer appends them to the line the request made).
# A line is text: these fields tab-separated, ``\N`` for null, backslash escapes for a
# backslash, tab, newline or carriage return in a value, ending with a newline (the text
# format of Postgres's COPY, which also reads as a tab-separated file). Requests format
# their own line because that is the cheapest place to (see serving/prediction_log.py).
SHADOW_FIELDS = (
    "shadow_model_version",
    "shadow_model_sha256",
    "shadow_probability",
    "shadow_risk_band",
)
LINE_FIELDS = (*(name for name in COLUMNS if name not in SHADOW_FIELDS), *SHADOW_FIELDS)

# Rows one delete of the retention removes: one short transaction (~8 ms at 1M rows).
PRUNE_BATCH_ROWS = 5_000

# The shadow results oriented as champion and challenger, whichever of the two answered
# (on a champion row the answering model is the champion and the shadow the challenger, on
# a canary row the other way round), then when the row was scored.
SHADOW_COLUMNS = (
    "champion_version",
    "challenger_version",
    "champion_probability",
    "challenger_probability",
    "champion_band",
    "challenger_band",
    "scored_at",
)


def min_retention_days(window_days: int, period: Period) -> int:
    """The shortest retention that keeps every prediction until its label can exist: the
    label window, plus the longest period (the data closing the window may arrive a period
    later). See the module docstring."""
    return window_days + longest_period(period).days


def check_retention(retention_days: float, window_days: int, period: Period) -> None:
    """Raise :class:`~churn_assets.policy.PolicyError` when the retention would delete
    predictions before their labels mature, naming the variables that move it."""
    shortest = min_retention_days(window_days, period)
    if retention_days < shortest:
        variable = env_name("prediction_log_retention_days")
        raise PolicyError(
            f"{variable}={retention_days:g} is shorter than the label window plus a {period} "
            f"(CHURN_WINDOW_DAYS={window_days} + {shortest - window_days} days): predictions "
            "would be deleted from the log before their labels mature, and "
            f"analytics.online_predictions_realized could never judge them. Set {variable} "
            f"to at least {shortest}, or shorten CHURN_WINDOW_DAYS."
        )


class ShadowGroup(NamedTuple):
    """The shadow results of one (champion, challenger) pair, as the comparison needs them:
    the band agreements counted and the times bounded, the two probabilities row by row (the
    rank correlation needs every one; their length is the pair's rows), both in the same,
    unspecified order."""

    champion_version: str
    challenger_version: str
    same_band: int  # rows where both models gave the same risk band
    first_scored_at: datetime  # UTC
    last_scored_at: datetime  # UTC
    champion_probability: npt.NDArray[np.float64]
    challenger_probability: npt.NDArray[np.float64]
