"""Holdout metrics, the oracle comparison, gains and lift, and the diagnostic plots (ROC,
calibration, gains)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from churn_assets.ml.features import ID

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


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes at 100 dpi."""
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
    return figure_png(fig)


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
    return figure_png(fig)


@dataclass(frozen=True)
class Calibration:
    """Whether the probabilities read as churn rates, measured on the holdout.

    ``ece`` is the expected calibration error over ``n_bins`` equal-width bins
    ([0, 0.1), ..., [0.9, 1.0] for 10): the row-weighted mean, over non-empty bins, of
    |mean predicted probability - observed churn rate|. ``mean_predicted`` against
    ``observed_rate`` is the same question for the whole holdout.
    """

    ece: float
    mean_predicted: float
    observed_rate: float
    n_bins: int
    n: int


def calibration_summary(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> Calibration:
    """ECE and mean predicted vs observed rate of ``y_prob`` for ``y_true`` (0/1)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y, p = _validated(y_true, y_prob)
    # floor(p * n_bins) puts 0.1 in bin 1 as written; p = 1.0 joins the last bin.
    bins = np.minimum(np.floor(p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, p, n_bins) - np.bincount(bins, y, n_bins))
    # Per bin |sum(p) - sum(y)| / n_b is |mean p - mean y|; weighting by n_b / N cancels n_b.
    ece = float(gap[count > 0].sum() / y.size)
    return Calibration(
        ece=ece,
        mean_predicted=float(p.mean()),
        observed_rate=float(y.mean()),
        n_bins=n_bins,
        n=int(y.size),
    )


@dataclass(frozen=True)
class GainsRow:
    """One group of the holdout, customers ranked by predicted probability (highest first).

    ``gain`` is cumulative: the share of all churners caught by contacting this group and
    every group above it. ``lift`` is this group's churn rate over the whole holdout's.
    """

    group: int  # 1 = the highest probabilities
    customers: int
    churners: int
    churn_rate: float
    mean_probability: float
    gain: float
    lift: float


@dataclass(frozen=True)
class Gains:
    """Gains and lift per group (deciles for ``n_groups`` 10) of the holdout.

    Customers are sorted by probability, highest first (ties keep the holdout's order, so
    the table is deterministic), and cut into ``n_groups`` groups of sizes differing by at
    most one (the larger first). The first group is what a campaign contacting the top
    ``1 / n_groups`` of customers reaches: ``top_churners`` of the ``churners``.
    """

    rows: tuple[GainsRow, ...]
    n: int
    churners: int

    @property
    def n_groups(self) -> int:
        return len(self.rows)

    @property
    def top_customers(self) -> int:
        return self.rows[0].customers

    @property
    def top_churners(self) -> int:
        return self.rows[0].churners

    @property
    def top_gain(self) -> float:
        """Share of all churners in the first group."""
        return self.rows[0].gain

    @property
    def top_lift(self) -> float:
        return self.rows[0].lift

    def headline(self) -> str:
        """ "The top 10% (100 customers) catch 31 of 198 churners (15.7%)" in words."""
        return (
            f"The top {1 / self.n_groups:.0%} ({self.top_customers:,} customers) catch "
            f"{self.top_churners:,} of {self.churners:,} churners ({self.top_gain:.1%}); "
            f"lift {self.top_lift:.2f}."
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Gains:
        return cls(
            rows=tuple(GainsRow(**row) for row in raw["rows"]),
            n=int(raw["n"]),
            churners=int(raw["churners"]),
        )


def gains_table(y_true: ArrayLike, y_prob: ArrayLike, n_groups: int = 10) -> Gains:
    """Gains and lift of ``y_prob`` for ``y_true`` (0/1) per ``n_groups`` groups by score."""
    y, p = _validated(y_true, y_prob)
    if not 1 <= n_groups <= y.size:
        raise ValueError(f"n_groups must be between 1 and the {y.size} rows, got {n_groups}")
    order = np.argsort(-p, kind="stable")
    total = int(y.sum())
    base_rate = total / y.size
    rows: list[GainsRow] = []
    caught = 0
    for group, index in enumerate(np.array_split(order, n_groups), start=1):
        churners = int(y[index].sum())
        caught += churners
        rate = churners / index.size
        rows.append(
            GainsRow(
                group=group,
                customers=int(index.size),
                churners=churners,
                churn_rate=rate,
                mean_probability=float(p[index].mean()),
                gain=caught / total,
                lift=rate / base_rate,
            )
        )
    return Gains(rows=tuple(rows), n=int(y.size), churners=total)


def gains_png(gains: Gains) -> bytes:
    """Cumulative gains curve (share of churners caught against share of customers
    contacted) and lift per group, as PNG bytes (8x3 in at 100 dpi)."""
    fig = Figure(figsize=(8, 3), layout="constrained")
    left, right = fig.subplots(1, 2)
    contacted = np.cumsum([0] + [row.customers for row in gains.rows]) / gains.n
    caught = [0.0] + [row.gain for row in gains.rows]
    left.plot(contacted, caught, marker="o", label="model")
    left.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    left.set(
        xlabel="share of customers contacted (highest risk first)",
        ylabel="share of churners caught",
        title="Cumulative gains (holdout)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    left.legend(loc="lower right", fontsize=8)
    groups = [row.group for row in gains.rows]
    right.bar(groups, [row.lift for row in gains.rows])
    right.axhline(1.0, linestyle="--", color="grey", label="random")
    right.set(
        xlabel="group (1 = highest risk)", ylabel="lift", title="Lift per group", xticks=groups
    )
    right.legend(loc="upper right", fontsize=8)
    return figure_png(fig)
