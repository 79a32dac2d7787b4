"""Realized performance: how the served scores did once their labels matured.

A holdout AUC is a promise made at training time; the scores a version actually served are
the proof. Once a scored period's label window has closed, its customers' labels exist and
the served probabilities can be judged like a holdout: per version and period, the AUC
(ranking), the Brier score, and mean predicted against observed churn (calibration). A
version whose realized AUC falls clearly below its own holdout AUC has stopped being the
model it was evaluated as, which is a reason to retrain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from churn_assets.ml.features import LABEL, labels
from churn_assets.policy import env_name

VERSION = "model_version"
AS_OF = "as_of"
PROBABILITY = "churn_probability"
REALIZED_COLUMNS = (
    VERSION,
    AS_OF,
    "rows",
    "auc",
    "brier",
    "mean_predicted",
    "observed_rate",
)


def _version_key(version: str) -> tuple[int, int, str]:
    # Registry versions are numbers in strings: "10" sorts after "9", not before "2".
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def realized_performance(scored: pd.DataFrame) -> pd.DataFrame:
    """One row per (model_version, as_of) of ``scored``, sorted by as_of then version.

    ``scored`` has one row per scored customer whose label exists: ``model_version``,
    ``as_of``, ``churn_probability`` (the served score) and ``churned``. ``auc`` is NaN when
    a group holds a single class (no ranking to judge); ``brier`` is the mean squared
    difference between probability and label.
    """
    required = (VERSION, AS_OF, PROBABILITY, LABEL)
    missing = [c for c in required if c not in scored.columns]
    if missing:
        raise ValueError(f"scored frame is missing column(s): {', '.join(missing)}")
    y = labels(scored)
    p = scored[PROBABILITY].to_numpy(dtype=np.float64)
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError(f"{PROBABILITY} must be finite probabilities in [0, 1]")
    frame = pd.DataFrame(
        {
            VERSION: scored[VERSION].astype(str).to_numpy(),
            AS_OF: scored[AS_OF].map(str).to_numpy(),
            "p": p,
            "y": y,
        }
    )
    records: list[dict[str, Any]] = []
    for (version, as_of), group in frame.groupby([VERSION, AS_OF], sort=False):
        version, as_of = str(version), str(as_of)
        gy, gp = group["y"].to_numpy(), group["p"].to_numpy()
        one_class = gy.min() == gy.max()
        records.append(
            {
                VERSION: version,
                AS_OF: as_of,
                "rows": int(gy.size),
                "auc": math.nan if one_class else float(skm.roc_auc_score(gy, gp)),
                "brier": float(np.mean((gp - gy) ** 2)),
                "mean_predicted": float(gp.mean()),
                "observed_rate": float(gy.mean()),
            }
        )
    records.sort(key=lambda r: (r[AS_OF], _version_key(r[VERSION])))
    return pd.DataFrame.from_records(records, columns=list(REALIZED_COLUMNS))


def _version_label(version: str) -> str:
    return f"v{version}" if version.isdigit() else version


def realized_failures(
    realized: pd.DataFrame, holdout_auc: Mapping[str, float], tolerance: float
) -> list[str]:
    """One message per row of ``realized`` whose AUC is below its version's holdout AUC by
    more than ``tolerance``. A row with NaN AUC (one class) or a version without a holdout
    AUC cannot be judged, so it is not a failure."""
    variable = env_name("realized_auc_tolerance")
    failures: list[str] = []
    for row in realized.to_dict("records"):
        version = str(row[VERSION])
        expected = holdout_auc.get(version)
        auc = float(row["auc"])
        if expected is None or math.isnan(auc) or math.isnan(expected):
            continue
        drop = expected - auc
        if drop > tolerance:
            failures.append(
                f"{_version_label(version)} at {row[AS_OF]}: realized AUC {auc:.3f} "
                f"is {drop:.3f} below its holdout AUC {expected:.3f} (tolerance "
                f"{tolerance:g}, {variable}); {int(row['rows']):,} customers"
            )
    return failures
