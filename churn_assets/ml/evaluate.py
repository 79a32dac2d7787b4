"""Holdout metrics, the oracle comparison, diagnostic plots and the model card."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    FEATURE_DESCRIPTIONS,
    ID,
    NUMERIC_FEATURES,
)

if TYPE_CHECKING:  # train imports this module; a runtime import would be circular
    from churn_assets.ml.train import TrainResult

ArrayLike = npt.ArrayLike


@dataclass(frozen=True)
class Metrics:
    """Holdout metrics. ``f1`` is at ``threshold``; the others are threshold-free."""

    roc_auc: float
    pr_auc: float  # average precision; a random ranking scores the positive rate
    brier: float
    log_loss: float
    f1: float
    threshold: float
    n: int
    positives: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _validated(
    y_true: ArrayLike, y_prob: ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"y_true and y_prob must be 1-D of equal length: {y.shape} vs {p.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("y_prob must be finite probabilities in [0, 1]")
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("y_true needs both classes for ROC/PR AUC")
    return y.astype(np.int64), p


def evaluate(y_true: ArrayLike, y_prob: ArrayLike, threshold: float) -> Metrics:
    """Metrics of probabilities ``y_prob`` for labels ``y_true`` (0/1); F1 at ``threshold``."""
    y, p = _validated(y_true, y_prob)
    return Metrics(
        roc_auc=float(skm.roc_auc_score(y, p)),
        pr_auc=float(skm.average_precision_score(y, p)),
        brier=float(skm.brier_score_loss(y, p)),
        log_loss=float(skm.log_loss(y, p, labels=[0, 1])),
        f1=float(skm.f1_score(y, (p >= threshold).astype(np.int64), zero_division=0.0)),
        threshold=float(threshold),
        n=int(y.size),
        positives=int(y.sum()),
    )


def best_f1_threshold(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """The score threshold (predict churn when ``prob >= threshold``) with the highest F1.

    Ties go to the lowest such threshold, so the choice is deterministic.
    """
    y, p = _validated(y_true, y_prob)
    precision, recall, thresholds = skm.precision_recall_curve(y, p)
    # The last (precision=1, recall=0) point has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(thresholds[int(np.argmax(f1))])


def oracle_auc(holdout_ids: Sequence[str] | pd.Series, ground_truth: pd.DataFrame) -> float | None:
    """ROC AUC of the generator's hidden ``churn_probability`` on exactly the holdout ids.

    That is the best AUC any model can reach on those rows (the remaining churn is noise).
    Returns None when ground truth does not cover every holdout id (e.g. real data, or a
    different ``as_of``) or the holdout has a single class, since no fair comparison exists.
    """
    required = {ID, "churn_probability", "churned"}
    missing = required - set(ground_truth.columns)
    if missing:
        raise ValueError(f"ground_truth is missing column(s): {', '.join(sorted(missing))}")
    ids = pd.Index(pd.Series(holdout_ids, dtype=object).unique())
    if ids.empty:
        return None
    truth = ground_truth.drop_duplicates(ID).set_index(ID)
    if not ids.isin(truth.index).all():
        return None
    rows = truth.loc[ids]
    y = rows["churned"].to_numpy()
    if y.min() == y.max():
        return None
    return float(skm.roc_auc_score(y, rows["churn_probability"].to_numpy()))


def _png(fig: Figure) -> bytes:
    # An explicit Agg canvas: no pyplot, so no global backend or figure registry is touched.
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def roc_curve_png(y_true: ArrayLike, y_prob: ArrayLike) -> bytes:
    """ROC curve with its AUC, as PNG bytes (4x3 in at 100 dpi)."""
    y, p = _validated(y_true, y_prob)
    fpr, tpr, _ = skm.roc_curve(y, p)
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label=f"model (AUC {skm.roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def calibration_png(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> bytes:
    """Reliability diagram (mean predicted vs observed churn rate per bin), as PNG bytes.

    Bins are quantiles of the scores so each holds about the same number of customers.
    """
    y, p = _validated(y_true, y_prob)
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed churn rate",
        title="Calibration (holdout)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


@dataclass(frozen=True)
class Gate:
    """A release gate as the caller defines it, e.g. ``Gate("holdout ROC AUC", 0.60)``.

    ``observed`` is optional so a card can list gates before they are evaluated.
    """

    name: str
    threshold: float
    comparison: Literal[">=", "<="] = ">="
    observed: float | None = None

    @property
    def passed(self) -> bool | None:
        if self.observed is None:
            return None
        if self.comparison == ">=":
            return self.observed >= self.threshold
        return self.observed <= self.threshold


def _fmt(value: float | None) -> str:
    # 4 significant digits: AUCs read 0.7981, parity differences 1.192e-07.
    return "n/a" if value is None else f"{value:.4g}"


def model_card(
    result: TrainResult,
    metrics: Metrics,
    *,
    as_of: date | str,
    n_rows: int,
    label_rate: float,
    n_holdout: int | None = None,
    label_window_days: int | None = None,
    oracle: float | None = None,
    gates: Sequence[Gate] = (),
    title: str = "Churn model",
) -> str:
    """A markdown model card: data, features, architecture, training, metrics, gates, use.

    ``n_rows`` and ``label_rate`` describe the whole training snapshot; ``metrics`` are the
    holdout metrics; ``oracle`` is ``oracle_auc`` on the same holdout (None if unknown).
    """
    from churn_assets.ml.model import count_parameters  # model imports torch; keep it local

    spec = result.model.spec
    config = result.config
    n_holdout = metrics.n if n_holdout is None else n_holdout
    window = "" if label_window_days is None else f", label window {label_window_days} days"
    layers = " -> ".join(str(x) for x in (spec.n_inputs, *spec.hidden_sizes, 1))
    lines = [
        f"# {title}",
        "",
        "## Data",
        "",
        f"- Training snapshot at as_of **{as_of}**{window}: churned = no order in "
        "(as_of, as_of + window].",
        f"- Rows: {n_rows:,} customers, label rate {label_rate:.1%}.",
        f"- Split: {result.n_train:,} fit / {result.n_val:,} validation (early stopping, "
        f"threshold) / {n_holdout:,} holdout (metrics below), stratified by label.",
        "",
        "## Features",
        "",
        "| feature | meaning | preprocessing |",
        "|---|---|---|",
    ]
    for name in NUMERIC_FEATURES:
        prep = "log1p, standardised" if name in spec.log1p_features else "standardised"
        lines.append(f"| `{name}` | {FEATURE_DESCRIPTIONS[name]} | {prep} |")
    lines += [
        f"| `{CATEGORICAL_FEATURE}` | {FEATURE_DESCRIPTIONS[CATEGORICAL_FEATURE]} | one-hot over "
        f"{', '.join(EMAIL_DOMAIN_CLASSES)}; other values -> unknown |",
        "",
        "## Model",
        "",
        f"- MLP {layers} (ReLU, dropout {spec.dropout}), sigmoid output; "
        f"{count_parameters(result.model)} trainable parameters.",
        "- Preprocessing is inside the network, so the ONNX export takes raw feature values.",
        "",
        "## Training",
        "",
        f"- Adam, lr {config.lr}, weight decay {config.weight_decay}, batch size "
        f"{config.batch_size}, seed {config.seed}.",
        f"- BCE with pos_weight {result.pos_weight:.3f} (n_neg / n_pos) against class imbalance.",
        f"- Early stopping on validation loss, patience {config.patience}, max "
        f"{config.max_epochs} epochs: best epoch {result.best_epoch} of "
        f"{len(result.history)} (validation ROC AUC {result.val_roc_auc:.4f}).",
        f"- Decision threshold {result.threshold:.4f}, chosen to maximise F1 on validation.",
        "",
        "## Holdout metrics",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| ROC AUC | {metrics.roc_auc:.4f} |",
        f"| PR AUC (average precision) | {metrics.pr_auc:.4f} |",
        f"| Brier score | {metrics.brier:.4f} |",
        f"| log loss | {metrics.log_loss:.4f} |",
        f"| F1 @ {metrics.threshold:.4f} | {metrics.f1:.4f} |",
        f"| rows / churners | {metrics.n:,} / {metrics.positives:,} |",
        "",
    ]
    if oracle is None:
        lines.append("Oracle AUC: n/a (no ground truth for these customers).")
    else:
        lines.append(
            f"Oracle AUC (hidden churn probability, same holdout): {oracle:.4f}; "
            f"gap to the model: {oracle - metrics.roc_auc:+.4f}."
        )
    lines += ["", "## Gates", ""]
    if gates:
        lines += ["| gate | threshold | observed | result |", "|---|---:|---:|---|"]
        for gate in gates:
            verdict = {True: "pass", False: "FAIL", None: "not evaluated"}[gate.passed]
            lines.append(
                f"| {gate.name} | {gate.comparison} {gate.threshold:g} | "
                f"{_fmt(gate.observed)} | {verdict} |"
            )
    else:
        lines.append("No gates were passed in.")
    lines += [
        "",
        "## Intended use",
        "",
        "Rank existing customers (>= 1 order by as_of) by their risk of placing no order in "
        "the next label window, to prioritise retention outreach. Scores come from the same "
        "dbt features at the scoring as_of.",
        "",
        "## Limitations",
        "",
        "- pos_weight inflates probabilities: use them to rank or with the chosen threshold, "
        "not as calibrated churn rates (see the calibration plot).",
        "- Trained on one as_of snapshot; behaviour drift (spend, order rate, email mix) "
        "degrades it, so monitor feature drift and retrain.",
        "- Holdout metrics on a few hundred rows have a standard error of several AUC points.",
        "- Customers with no order by as_of are outside the population and get no score.",
        "",
    ]
    return "\n".join(lines)
