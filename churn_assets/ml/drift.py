"""Feature drift between the training reference and current features: PSI plus a test.

Each feature gets a population stability index (PSI, scale-free, rule of thumb: >= 0.2 is a
significant shift) and a two-sample test (KS for numerics, chi-square for the email class).
The drift gate fails when too large a share of the features drifted.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    FEATURE_DESCRIPTIONS,
    NUMERIC_FEATURES,
)
from churn_assets.ml.metrics import figure_png
from churn_assets.policy import Policy

# Floor for a bin's share before taking logs. An empty bin would make PSI infinite; 1e-4 is
# below the share of a single row for samples up to 10,000 rows, so it only stands in for
# truly empty bins there (filled bins keep their exact share, and identical samples give
# exactly 0), and it caps an emptied bin's term at r * ln(r / 1e-4), ~0.69 for r = 0.1:
# large enough to flag, small enough not to drown the other features.
PSI_EPSILON = 1e-4
# Mirrors model.LOG1P_FEATURES (not imported: model imports torch). Only for the plot axes.
_LOG_SCALE_FEATURES = frozenset(NUMERIC_FEATURES) - {"cart_diversity"}
# Values outside the category vocabulary (or missing) are counted here, so a new email
# class shows up as drift instead of vanishing.
_OTHER = "(other)"
_HEADERS = (
    "feature", "kind", "PSI", "statistic", "p-value", "reference mean", "current mean", "drifted",
)  # fmt: skip


@dataclass(frozen=True)
class DriftPolicy:
    """When a feature counts as drifted, and when the drift gate fails."""

    psi_threshold: float  # "significant shift" rule of thumb
    ks_pvalue_threshold: float  # also used for the chi-square p-value
    drift_share_threshold: float  # the gate fails when share of drifted features >= this
    n_bins: int = 10  # a method setting, not a threshold: deciles of the reference

    @classmethod
    def from_policy(cls, policy: Policy) -> DriftPolicy:
        return cls(
            psi_threshold=policy.drift_psi_threshold,
            ks_pvalue_threshold=policy.drift_p_value,
            drift_share_threshold=policy.drift_share_threshold,
        )

    def __post_init__(self) -> None:
        if self.psi_threshold < 0:
            raise ValueError(f"psi_threshold must be >= 0, got {self.psi_threshold}")
        if not 0.0 < self.ks_pvalue_threshold <= 1.0:
            raise ValueError(
                f"ks_pvalue_threshold must be in (0, 1], got {self.ks_pvalue_threshold}"
            )
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")
        if not 0.0 < self.drift_share_threshold <= 1.0:
            raise ValueError(
                f"drift_share_threshold must be in (0, 1], got {self.drift_share_threshold}"
            )


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature.

    ``drifted`` needs both a PSI of at least ``psi_threshold`` and a p-value below
    ``ks_pvalue_threshold``: PSI measures how large the shift is but is noisy on small
    samples (a few hundred rows give PSI ~0.05-0.1 by chance), which the test guards against;
    on large samples the test alone flags shifts too small to matter, which PSI guards
    against.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float
    statistic: float  # KS statistic (numeric) or chi-square statistic (categorical)
    p_value: float  # KS two-sample p-value or chi-square contingency p-value
    drifted: bool
    reference_mean: float | None  # None for the categorical feature
    current_mean: float | None


def drift_gate_passes(drift_share: float, threshold: float) -> bool:
    """The drift gate's one rule: it fails once the share of drifted features reaches the
    threshold (``CHURN_DRIFT_SHARE_THRESHOLD``)."""
    return drift_share < threshold


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift and the gate verdict."""

    features: tuple[FeatureDrift, ...]
    drift_share: float  # drifted features / all features
    threshold: float  # the gate fails when drift_share >= threshold
    n_reference: int
    n_current: int

    @property
    def gate_passed(self) -> bool:
        return drift_gate_passes(self.drift_share, self.threshold)

    @property
    def n_drifted(self) -> int:
        return sum(f.drifted for f in self.features)

    @property
    def verdict(self) -> str:
        """One sentence, e.g. "drift gate FAILED: 3 of 8 features drifted (a, b, c), share
        37.5% >= threshold 30.0%"."""
        drifted = [f.feature for f in self.features if f.drifted]
        names = f" ({', '.join(drifted)})" if drifted else ""
        comparison = "<" if self.gate_passed else ">="
        return (
            f"drift gate {'passed' if self.gate_passed else 'FAILED'}: {len(drifted)} of "
            f"{len(self.features)} features drifted{names}, share {self.drift_share:.1%} "
            f"{comparison} threshold {self.threshold:.1%}"
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per feature, columns as the ``FeatureDrift`` fields."""
        columns = [f.name for f in fields(FeatureDrift)]
        return pd.DataFrame([asdict(f) for f in self.features], columns=columns)

    def markdown_table(self) -> str:
        """The per-feature table in markdown, for Dagster metadata or a run summary."""
        lines = ["| " + " | ".join(_HEADERS) + " |", "|---|---|---:|---:|---:|---:|---:|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in _rows(self)]
        return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def _rows(report: DriftReport) -> list[list[str]]:
    return [
        [
            f.feature,
            f.kind,
            f"{f.psi:.4f}",
            f"{f.statistic:.4g}",
            f"{f.p_value:.3g}",
            _fmt(f.reference_mean),
            _fmt(f.current_mean),
            "yes" if f.drifted else "no",
        ]
        for f in report.features
    ]


def _numeric(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return array


def _psi_from_shares(reference: npt.NDArray[np.float64], current: npt.NDArray[np.float64]) -> float:
    ref = np.maximum(reference, PSI_EPSILON)
    cur = np.maximum(current, PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, n_bins: int = 10) -> float:
    """Population stability index, sum over bins of (c - r) * ln(c / r) with bin shares r, c.

    Bin edges are the reference's interior quantiles (1/n_bins, ..., (n_bins-1)/n_bins),
    de-duplicated, so each bin holds ~1/n_bins of the reference; bins are right-closed
    (edge_i-1, edge_i], which gives a point mass at the minimum (e.g. zero revenue) its own
    bin instead of merging it with the values above. The outer bins are open, so current
    values outside the reference range land in the first or last bin. Shares below
    ``PSI_EPSILON`` are floored to it so empty bins stay finite.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    ref = _numeric(reference, "reference")
    cur = _numeric(current, "current")
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    # side="left": x equal to an edge goes to the bin that edge closes.
    ref_bins = np.searchsorted(edges, ref, side="left")
    cur_bins = np.searchsorted(edges, cur, side="left")
    n_out = edges.size + 1
    return _psi_from_shares(
        np.bincount(ref_bins, minlength=n_out) / ref.size,
        np.bincount(cur_bins, minlength=n_out) / cur.size,
    )


def _category_counts(
    values: Sequence[str] | pd.Series, categories: Sequence[str]
) -> npt.NDArray[np.int64]:
    """Counts per category, plus a last "other" count for values outside ``categories``."""
    codes = pd.Categorical(pd.Series(values, dtype=object), categories=list(categories)).codes
    codes = np.where(codes < 0, len(categories), codes)
    return np.bincount(codes, minlength=len(categories) + 1).astype(np.int64)


def categorical_psi(
    reference: Sequence[str] | pd.Series,
    current: Sequence[str] | pd.Series,
    categories: Sequence[str],
) -> float:
    """PSI over the shares of ``categories``; values outside them (and missing values) are
    pooled into one extra "other" bin, so a new category counts as drift."""
    if len(categories) == 0 or len(set(categories)) != len(categories):
        raise ValueError(f"categories must be non-empty and unique, got {list(categories)}")
    if len(reference) == 0 or len(current) == 0:
        raise ValueError("reference and current must be non-empty")
    ref = _category_counts(reference, categories)
    cur = _category_counts(current, categories)
    return _psi_from_shares(ref / ref.sum(), cur / cur.sum())


def numeric_drift(
    feature: str,
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    policy: DriftPolicy,
) -> FeatureDrift:
    """PSI and the two-sample KS test (``scipy.stats.ks_2samp``) of one numeric feature."""
    ref = _numeric(reference, f"reference {feature}")
    cur = _numeric(current, f"current {feature}")
    value = psi(ref, cur, policy.n_bins)
    ks = stats.ks_2samp(ref, cur)
    statistic, p_value = float(ks.statistic), float(ks.pvalue)
    return FeatureDrift(
        feature=feature,
        kind="numeric",
        psi=value,
        statistic=statistic,
        p_value=p_value,
        drifted=value >= policy.psi_threshold and p_value < policy.ks_pvalue_threshold,
        reference_mean=float(ref.mean()),
        current_mean=float(cur.mean()),
    )


def categorical_drift(
    feature: str,
    reference: Sequence[str] | pd.Series,
    current: Sequence[str] | pd.Series,
    categories: Sequence[str],
    policy: DriftPolicy,
) -> FeatureDrift:
    """PSI and the chi-square test of homogeneity (``scipy.stats.chi2_contingency``) on the
    2 x categories table of counts; categories absent from both samples are left out (their
    expected count is 0), and a single remaining category means no evidence of a shift."""
    value = categorical_psi(reference, current, categories)
    table = np.vstack(
        [_category_counts(reference, categories), _category_counts(current, categories)]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        statistic, p_value = 0.0, 1.0
    else:
        result = stats.chi2_contingency(table)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return FeatureDrift(
        feature=feature,
        kind="categorical",
        psi=value,
        statistic=statistic,
        p_value=p_value,
        drifted=value >= policy.psi_threshold and p_value < policy.ks_pvalue_threshold,
        reference_mean=None,
        current_mean=None,
    )


def _check_frames(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    required = (*NUMERIC_FEATURES, CATEGORICAL_FEATURE)
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} features are missing column(s): {', '.join(missing)}")
        if frame.empty:
            raise ValueError(f"{name} features are empty: drift needs rows on both sides")


def compute_drift(
    reference: pd.DataFrame, current: pd.DataFrame, policy: DriftPolicy
) -> DriftReport:
    """Drift of every model feature: ``NUMERIC_FEATURES`` in order, then the email class
    over ``EMAIL_DOMAIN_CLASSES``.

    Raises ``ValueError`` naming missing columns (per frame), on an empty frame, and on
    missing or infinite numeric values.
    """
    _check_frames(reference, current)
    features = [
        numeric_drift(
            name,
            reference[name].to_numpy(dtype=np.float64, na_value=np.nan),
            current[name].to_numpy(dtype=np.float64, na_value=np.nan),
            policy,
        )
        for name in NUMERIC_FEATURES
    ]
    features.append(
        categorical_drift(
            CATEGORICAL_FEATURE,
            reference[CATEGORICAL_FEATURE],
            current[CATEGORICAL_FEATURE],
            EMAIL_DOMAIN_CLASSES,
            policy,
        )
    )
    return DriftReport(
        features=tuple(features),
        drift_share=sum(f.drifted for f in features) / len(features),
        threshold=policy.drift_share_threshold,
        n_reference=len(reference),
        n_current=len(current),
    )


def _hist_edges(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Small counts (cart_diversity) get one bar per integer; 30 even bins would leave gaps.
    if values.size and np.array_equal(values, np.round(values)) and np.ptp(values) <= 40:
        return np.arange(values.min() - 0.5, values.max() + 1.5)
    return np.histogram_bin_edges(values, bins=30)


def histograms_png(reference: pd.DataFrame, current: pd.DataFrame) -> bytes:
    """Reference vs current distributions, one panel per feature, as PNG bytes (12x6 in).

    Numeric panels overlay density histograms on shared bins (log1p of x for the skewed
    features, so the bulk is not squeezed into one bar); the email class panel shows shares
    side by side.
    """
    _check_frames(reference, current)
    panels = (*NUMERIC_FEATURES, CATEGORICAL_FEATURE)
    fig = Figure(figsize=(12, 6), layout="constrained")
    axes = fig.subplots(2, (len(panels) + 1) // 2).ravel()
    style = {"reference": {"color": "tab:blue"}, "current": {"color": "tab:orange"}}
    for ax, name in zip(axes, panels, strict=False):
        if name == CATEGORICAL_FEATURE:
            positions = np.arange(len(EMAIL_DOMAIN_CLASSES) + 1)
            for offset, (label, frame) in zip(
                (-0.2, 0.2), (("reference", reference), ("current", current)), strict=True
            ):
                counts = _category_counts(frame[name], EMAIL_DOMAIN_CLASSES)
                shares = counts / counts.sum()
                ax.bar(positions + offset, shares, width=0.4, label=label, **style[label])
            ax.set_xticks(positions, [*EMAIL_DOMAIN_CLASSES, _OTHER], fontsize=7)
            ax.set_ylabel("share", fontsize=8)
        else:
            ref = reference[name].to_numpy(dtype=np.float64, na_value=np.nan)
            cur = current[name].to_numpy(dtype=np.float64, na_value=np.nan)
            ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
            log_scale = (
                name in _LOG_SCALE_FEATURES and min(ref.min(initial=0), cur.min(initial=0)) >= 0
            )
            if log_scale:
                ref, cur = np.log1p(ref), np.log1p(cur)
            edges = _hist_edges(np.concatenate([ref, cur]))
            for label, values in (("reference", ref), ("current", cur)):
                ax.hist(values, bins=edges, density=True, alpha=0.5, label=label, **style[label])
            ax.set_xlabel(f"log1p({name})" if log_scale else name, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return figure_png(fig)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 75em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, td:nth-child(2), th { text-align: left; }
tr.drifted { background: #fde2e1; }
.verdict { font-size: 1.2em; font-weight: bold; padding: 0.5em 0.8em; display: inline-block; }
.pass { background: #dff3e3; color: #1b5e20; }
.fail { background: #fde2e1; color: #b71c1c; }
img { max-width: 100%; }
"""


def html_report(
    report: DriftReport, histograms: bytes, *, title: str, context: Mapping[str, str]
) -> str:
    """A standalone HTML page: verdict, context (e.g. reference model version, as_of dates),
    the per-feature table and the histograms embedded as a base64 PNG. All text is escaped."""
    esc = html.escape
    context_rows = "".join(
        f"<tr><th>{esc(str(key))}</th><td>{esc(str(value))}</td></tr>"
        for key, value in context.items()
    )
    header = "".join(f"<th>{h}</th>" for h in _HEADERS)
    body = "".join(
        f'<tr class="{"drifted" if f.drifted else "stable"}" '
        f'title="{esc(FEATURE_DESCRIPTIONS.get(f.feature, ""))}">'
        + "".join(f"<td>{esc(cell)}</td>" for cell in row)
        + "</tr>"
        for f, row in zip(report.features, _rows(report), strict=True)
    )
    image = base64.b64encode(histograms).decode("ascii")
    verdict_class = "pass" if report.gate_passed else "fail"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p class="verdict {verdict_class}">{esc(report.verdict)}</p>
<p>{report.n_reference:,} reference rows, {report.n_current:,} current rows. A feature drifted
when its PSI and its two-sample test (KS for numerics, chi-square for the email class) both
flag a shift; the gate fails when the share of drifted features reaches the threshold.</p>
<h2>Context</h2>
<table>{context_rows}</table>
<h2>Features</h2>
<table>
<thead><tr>{header}</tr></thead>
<tbody>{body}</tbody>
</table>
<h2>Distributions</h2>
<img alt="reference vs current histograms" src="data:image/png;base64,{image}">
</body>
</html>
"""
