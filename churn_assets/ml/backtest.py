"""Backtest: how a model trained the way production trains would have done, period by period.

One out-of-time AUC says little: a period can be easy or hard, and a few hundred customers
make its AUC noisy. Replaying history answers "is the model stable over time, and does it
beat the logistic-regression reference in most periods?". For each of the newest labelled
periods ``h`` a fresh model is trained on the cohorts production would have had at ``h``
(``periods.training_cohorts``: only label windows that closed by ``h``, so no training label
looks past ``h``) and scored on ``h``'s customers; the reference is fitted on the same rows.

Deterministic: the training rows are sorted by (as_of, customer_id) and every model is
seeded, so the same snapshot and seed give the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm

from churn_assets.ml.features import ID, labels, to_model_inputs
from churn_assets.ml.metrics import figure_png
from churn_assets.ml.model import predict_proba
from churn_assets.ml.pipeline import AS_OF, period_keyed
from churn_assets.ml.reference import fit_reference
from churn_assets.ml.train import TrainConfig, train
from churn_assets.periods import as_key, training_cohorts


@dataclass(frozen=True)
class BacktestRow:
    """One evaluated period: its out-of-time numbers, or why it was skipped.

    ``training_periods`` are the cohorts the model of this period was trained on (ISO
    dates, oldest first); ``skipped`` is None for an evaluated period, otherwise the reason
    (with every metric None).
    """

    as_of: str
    rows: int
    label_rate: float
    auc: float | None
    brier: float | None
    reference_auc: float | None
    training_periods: tuple[str, ...]
    skipped: str | None = None


def _period(value: Any) -> date:
    # as_of arrives as date objects, ISO strings or timestamps; all print an ISO date first.
    return date.fromisoformat(str(value)[:10])


def run_backtest(
    snapshot: pd.DataFrame,
    *,
    evaluate_periods: int,
    training_periods: int,
    window_days: int,
    seed: int,
    max_epochs: int,
) -> list[BacktestRow]:
    """Evaluate the newest ``evaluate_periods`` periods of ``snapshot``, oldest first.

    ``snapshot`` holds every labelled period (one row per customer and period). For period
    ``h`` the model trains on the rows of the newest ``training_periods`` periods whose
    label windows (``window_days``) closed by ``h``. A period with no such cohort, or whose
    own rows or training rows hold a single class, becomes a row with ``skipped`` set.
    """
    if min(evaluate_periods, training_periods, max_epochs) < 1 or window_days < 0:
        raise ValueError(
            "evaluate_periods, training_periods and max_epochs must be >= 1, window_days >= 0"
        )
    if snapshot.empty:
        return []
    period_of_row = snapshot[AS_OF].map(_period)
    labelled = sorted(set(period_of_row))
    config = TrainConfig(seed=seed, max_epochs=max_epochs)
    out: list[BacktestRow] = []
    for holdout in labelled[-evaluate_periods:]:
        rows = snapshot.loc[(period_of_row == holdout).to_numpy()]
        rows = rows.sort_values(ID, kind="mergesort").reset_index(drop=True)
        cohorts = training_cohorts(labelled, holdout, training_periods, window_days)
        keys = tuple(as_key(p) for p in cohorts)
        y = labels(rows)
        base = BacktestRow(
            as_of=as_key(holdout),
            rows=len(rows),
            label_rate=float(y.mean()),
            auc=None,
            brier=None,
            reference_auc=None,
            training_periods=keys,
        )
        skipped = _skip_reason(snapshot, period_of_row, cohorts, y, window_days)
        if skipped is not None:
            out.append(replace(base, skipped=skipped))
            continue
        training = snapshot.loc[period_of_row.isin(cohorts).to_numpy()]
        training = period_keyed(training).sort_values(ID, kind="mergesort")
        training = training.reset_index(drop=True)
        result = train(training, config)
        inputs = to_model_inputs(rows)
        probabilities = predict_proba(result.model, inputs).astype(np.float64)
        reference = fit_reference(training, seed).predict_proba(inputs)
        out.append(
            replace(
                base,
                auc=float(skm.roc_auc_score(y, probabilities)),
                brier=float(skm.brier_score_loss(y, probabilities)),
                reference_auc=float(skm.roc_auc_score(y, reference)),
            )
        )
    return out


def _skip_reason(
    snapshot: pd.DataFrame,
    period_of_row: pd.Series,
    cohorts: Sequence[date],
    y_holdout: npt.NDArray[np.int64],
    window_days: int,
) -> str | None:
    if not cohorts:
        return (
            f"no training period: no earlier period's {window_days}-day label window closed "
            "by this period"
        )
    if y_holdout.min() == y_holdout.max():
        return f"single class: all {y_holdout.size:,} customers have churned = {y_holdout[0]}"
    y_train = labels(snapshot.loc[period_of_row.isin(cohorts).to_numpy()])
    if y_train.min() == y_train.max():
        return f"single class in the training periods: all {y_train.size:,} rows are {y_train[0]}"
    return None


def backtest_frame(rows: Sequence[BacktestRow]) -> pd.DataFrame:
    """One row per period with every field; ``training_periods`` comma-joined (a table cell)."""
    columns = [name for name in BacktestRow.__dataclass_fields__]
    records = [{**asdict(r), "training_periods": ",".join(r.training_periods)} for r in rows]
    return pd.DataFrame.from_records(records, columns=columns)


def as_json(rows: Sequence[BacktestRow]) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts (metadata, MLflow): ``skipped`` only when set."""
    out: list[dict[str, Any]] = []
    for row in rows:
        item: dict[str, Any] = {
            "as_of": row.as_of,
            "rows": row.rows,
            "label_rate": row.label_rate,
            "auc": row.auc,
            "brier": row.brier,
            "reference_auc": row.reference_auc,
        }
        if row.skipped is not None:
            item["skipped"] = row.skipped
        out.append(item)
    return out


def backtest_png(rows: Sequence[BacktestRow]) -> bytes:
    """AUC and reference AUC per period (skipped periods are gaps), chance dashed; PNG bytes."""
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(rows))

    def values(name: str) -> list[float]:
        return [math.nan if getattr(r, name) is None else getattr(r, name) for r in rows]

    ax.plot(x, values("auc"), marker="o", label="MLP")
    ax.plot(x, values("reference_auc"), marker="s", label="logistic regression reference")
    ax.axhline(0.5, linestyle="--", color="grey", label="chance")
    ax.set_xticks(x, [r.as_of for r in rows], rotation=45, ha="right", fontsize=7)
    ax.set(xlabel="evaluated period (as_of)", ylabel="ROC AUC", title="Backtest (out of time)")
    ax.set_ylim(0.0, 1.0)
    ax.legend(loc="lower right", fontsize=7)
    return figure_png(fig)
