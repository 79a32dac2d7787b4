"""Champion/challenger: promote a new model only when it is reliably better than the current one.

A higher holdout AUC alone is not enough: on a few hundred rows two models of equal quality
differ by several AUC points by chance. The decision therefore asks for a minimum gain, a
paired bootstrap interval of the AUC difference that excludes 0, and no real loss of
calibration (Brier score), in that order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from churn_assets.ml.metrics import Metrics, evaluate
from churn_assets.policy import Policy
from churn_assets.schema import PROMOTION_TAG_PREFIX

# A class with k rows is missing from a resample with probability ~e^-k, so this rejects
# evaluation sets with only 1-2 rows of a class (~37% / ~14% of resamples invalid), where the
# skipped resamples would bias the interval towards the lucky draws that kept both classes.
_MIN_VALID_SHARE = 0.9
# Resample-by-row weight matrices are processed in chunks of about this many cells, so
# memory stays bounded (~100 MB) for large evaluation sets.
_CHUNK_CELLS = 2_000_000
# Above this many rows the resamples are drawn from a seeded subsample: a whole period at a
# million customers would cost ~40 s per interval, and on 200,000 rows the interval is
# already a few thousandths wide (a subsample only widens it: conservative for promotion).
_MAX_BOOTSTRAP_ROWS = 200_000


@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger replaces the champion; see :func:`should_promote` for the rules.
    The thresholds come from :class:`churn_assets.policy.Policy` (:meth:`from_policy`)."""

    min_auc_gain: float  # challenger AUC must beat champion AUC by at least this
    brier_tolerance: float  # challenger Brier may be worse by at most this
    n_bootstrap: int
    confidence: float  # two-sided interval of the paired bootstrap
    seed: int = 42  # not a threshold: the bootstrap's resamples, fixed for reproducibility

    @classmethod
    def from_policy(cls, policy: Policy, seed: int = 42) -> PromotionPolicy:
        return cls(
            min_auc_gain=policy.promotion_min_auc_gain,
            brier_tolerance=policy.promotion_brier_tolerance,
            n_bootstrap=policy.promotion_bootstrap_resamples,
            confidence=policy.promotion_confidence,
            seed=seed,
        )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_auc_gain) and self.min_auc_gain >= 0):
            raise ValueError(f"min_auc_gain must be finite and >= 0, got {self.min_auc_gain}")
        if not (math.isfinite(self.brier_tolerance) and self.brier_tolerance >= 0):
            raise ValueError(f"brier_tolerance must be finite and >= 0, got {self.brier_tolerance}")
        _check_bootstrap_args(self.n_bootstrap, self.confidence)


# eq=False: the generated __eq__/__hash__ would compare arrays, which numpy cannot turn into
# a single bool.
@dataclass(frozen=True, eq=False)
class Candidate:
    """A model version with its scores on the evaluation rows.

    ``probabilities`` must be on the same rows, in the same order, for every candidate
    compared; it is stored as a read-only float64 copy so the decision cannot change later.
    """

    version: str
    gates_passed: bool  # AUC gate and ONNX parity gate both passed
    probabilities: npt.NDArray[np.float64] = field(repr=False)

    def __post_init__(self) -> None:
        values = np.array(self.probabilities, dtype=np.float64)
        values.setflags(write=False)
        object.__setattr__(self, "probabilities", values)


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome and every number it was based on (None where a rule was not evaluated)."""

    promote: bool
    reason: str  # one human sentence naming the first rule that failed, or all that held
    challenger_version: str
    champion_version: str | None
    challenger_auc: float
    champion_auc: float | None
    auc_diff: float | None
    ci_low: float | None
    ci_high: float | None
    challenger_brier: float
    champion_brier: float | None
    n_rows: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def as_tags(self, prefix: str = PROMOTION_TAG_PREFIX) -> dict[str, str]:
        """MLflow tags (string values): floats as ``repr`` so they parse back exactly,
        booleans as ``true``/``false``, missing values as ``none``."""
        return {f"{prefix}{key}": _tag_value(value) for key, value in self.as_dict().items()}


def _tag_value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _check_bootstrap_args(n_bootstrap: int, confidence: float) -> None:
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _labels(y_true: npt.ArrayLike) -> npt.NDArray[np.int64]:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if y.min() == y.max():
        raise ValueError("y_true needs both classes (0 and 1) to compare AUCs")
    return y.astype(np.int64)


def _probabilities(p: npt.ArrayLike, n_rows: int, name: str) -> npt.NDArray[np.float64]:
    values = np.asarray(p, dtype=np.float64)
    if values.shape != (n_rows,):
        raise ValueError(
            f"{name} probabilities must be 1-D with one value per label ({n_rows}), "
            f"got shape {values.shape}"
        )
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
        raise ValueError(f"{name} probabilities must be finite and in [0, 1]")
    return values


def _resampled_aucs(
    y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], counts: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """ROC AUC of ``p`` for each row of ``counts`` (how often each row was drawn); NaN where
    a resample lacks a class.

    Mann-Whitney with multiplicities: sort the scores once, then per resample AUC =
    sum over positives of (negatives scored lower + half the negatives tied) / (n_pos n_neg).
    Tied scores form one group, so ties count 1/2 exactly as in ``roc_auc_score``.
    """
    order = np.argsort(p, kind="mergesort")
    p_sorted = p[order]
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
    weights = counts[:, order]
    pos = np.add.reduceat(weights * y[order], starts, axis=1)
    neg = np.add.reduceat(weights, starts, axis=1) - pos
    neg_below = np.cumsum(neg, axis=1) - neg
    # Integer arithmetic until the final division: 2U is exact.
    twice_u = (pos * (2 * neg_below + neg)).sum(axis=1)
    n_pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = twice_u / (2.0 * n_pairs)
    return np.where(n_pairs > 0, auc, np.nan)


def paired_bootstrap_auc_diff(
    y_true: npt.ArrayLike,
    p_challenger: npt.ArrayLike,
    p_champion: npt.ArrayLike,
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> tuple[float, float, float]:
    """(observed diff, ci_low, ci_high) of AUC(challenger) - AUC(champion).

    Each resample draws n rows with replacement and scores both models on the same rows
    (paired), so the noise common to both models cancels and the interval is far narrower
    than two separate intervals would suggest. The interval is the percentile interval of
    the resampled differences at ``confidence`` (two-sided). A resample with a single class
    has no AUC and is skipped; the interval is then conditional on both classes being present.
    Raises ``ValueError`` when fewer than 90% of the resamples are valid (in practice: at
    most two rows of one class). Deterministic for a given ``seed``. Cost is O(n_bootstrap x n):
    about 1 s for 20,000 rows and 1,000 resamples; above 200,000 rows the resamples come
    from a seeded 200,000-row subsample (the observed difference uses every row).
    """
    _check_bootstrap_args(n_bootstrap, confidence)
    y = _labels(y_true)
    n = y.size
    challenger = _probabilities(p_challenger, n, "challenger")
    champion = _probabilities(p_champion, n, "champion")
    observed = float(skm.roc_auc_score(y, challenger) - skm.roc_auc_score(y, champion))

    rng = np.random.default_rng(seed)
    if n > _MAX_BOOTSTRAP_ROWS:
        keep = np.sort(rng.choice(n, size=_MAX_BOOTSTRAP_ROWS, replace=False))
        y, challenger, champion = y[keep], challenger[keep], champion[keep]
        n = _MAX_BOOTSTRAP_ROWS
    chunk = max(1, _CHUNK_CELLS // n)
    diffs: list[npt.NDArray[np.float64]] = []
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        rows = rng.integers(0, n, size=(b, n))
        # Row draws -> per-row counts, one bincount for the whole chunk.
        offsets = rows + n * np.arange(b)[:, None]
        counts = np.bincount(offsets.ravel(), minlength=b * n).reshape(b, n)
        diffs.append(_resampled_aucs(y, challenger, counts) - _resampled_aucs(y, champion, counts))
    all_diffs = np.concatenate(diffs)
    valid = all_diffs[~np.isnan(all_diffs)]
    if valid.size < _MIN_VALID_SHARE * n_bootstrap:
        raise ValueError(
            f"only {valid.size} of {n_bootstrap} bootstrap resamples contain both classes "
            f"({n} rows, {int(y.sum())} positives): too few rows for a bootstrap interval"
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(valid, [alpha, 1.0 - alpha])
    return observed, float(low), float(high)


@dataclass(frozen=True)
class UnusableChampion:
    """The current champion could not be downloaded, verified or scored."""

    version: str
    problem: str  # one line: what failed (missing artifact, sha256 mismatch, bad ONNX, ...)


def should_promote(
    y_true: npt.ArrayLike,
    challenger: Candidate,
    champion: Candidate | UnusableChampion | None,
    policy: PromotionPolicy,
) -> PromotionDecision:
    """Decide whether ``challenger`` replaces ``champion``. Rules, in this order:

    1. a challenger whose gates did not pass is never promoted, whatever its AUC;
    2. with no champion, or a champion that is unusable (its file is gone or corrupt, so
       it cannot serve either), a gated challenger is promoted and the reason says why;
    3. otherwise promote iff challenger AUC >= champion AUC + ``min_auc_gain``, the paired
       bootstrap interval of the AUC difference lies above 0 (``ci_low > 0``), and challenger
       Brier <= champion Brier + ``brier_tolerance``.

    The reason names the first rule that failed, or every rule that held. The champion's
    own ``gates_passed`` is not consulted: it is the incumbent, whatever gates exist today.
    Raises ``ValueError`` on labels that are not 0/1 with both classes, probabilities outside
    [0, 1] or of a different length than the labels.
    """
    y = _labels(y_true)
    n = int(y.size)
    challenger_p = _probabilities(challenger.probabilities, n, f"challenger {challenger.version}")
    unusable = champion if isinstance(champion, UnusableChampion) else None
    incumbent = champion if isinstance(champion, Candidate) else None
    champion_p = (
        None
        if incumbent is None
        else _probabilities(incumbent.probabilities, n, f"champion {incumbent.version}")
    )
    # threshold only affects F1, which the decision does not use.
    new = evaluate(y, challenger_p, threshold=0.5)
    summary = f"AUC {new.roc_auc:.3f}, Brier {new.brier:.3f}"

    if not challenger.gates_passed:
        reason = (
            f"challenger {challenger.version} did not pass its gates (AUC and ONNX parity), "
            f"so it is not promoted whatever its {summary}"
        )
        return _decision(False, reason, challenger, new, incumbent)
    if unusable is not None:
        reason = (
            f"champion unusable: v{unusable.version}: {unusable.problem}; challenger "
            f"{challenger.version} passed the gates and replaces it ({summary})"
        )
        return _decision(True, reason, challenger, new, None, champion_version=unusable.version)
    if incumbent is None or champion_p is None:
        reason = (
            f"no champion yet: challenger {challenger.version} passed the gates and becomes "
            f"the first champion ({summary})"
        )
        return _decision(True, reason, challenger, new, None)

    old = evaluate(y, champion_p, threshold=0.5)
    diff, ci_low, ci_high = paired_bootstrap_auc_diff(
        y,
        challenger_p,
        champion_p,
        n_bootstrap=policy.n_bootstrap,
        confidence=policy.confidence,
        seed=policy.seed,
    )
    auc_ok = new.roc_auc >= old.roc_auc + policy.min_auc_gain
    ci_ok = ci_low > 0
    brier_ok = new.brier <= old.brier + policy.brier_tolerance

    gain = f"{policy.min_auc_gain:.3f}"
    auc_text = (
        f"challenger AUC {new.roc_auc:.3f} vs champion {old.roc_auc:.3f}: difference {diff:+.3f}"
    )
    ci_text = (
        f"bootstrap {policy.confidence * 100:g}% CI of the difference [{ci_low:.3f}, {ci_high:.3f}]"
    )
    brier_text = f"Brier {new.brier:.3f} vs {old.brier:.3f}"
    if not auc_ok:
        reason = f"{auc_text} < required gain {gain}"
    elif not ci_ok:
        reason = f"{auc_text} >= {gain}, but the {ci_text} includes 0"
    elif not brier_ok:
        reason = (
            f"{auc_text} >= {gain} and the {ci_text} excludes 0, but {brier_text} is worse "
            f"by {new.brier - old.brier:.3f} > tolerance {policy.brier_tolerance:.3f}"
        )
    else:
        reason = (
            f"challenger AUC {new.roc_auc:.3f} beats champion {old.roc_auc:.3f} by "
            f"{diff:.3f} >= {gain}, {ci_text} excludes 0, {brier_text} within tolerance"
        )
    return _decision(
        auc_ok and ci_ok and brier_ok,
        reason,
        challenger,
        new,
        incumbent,
        old,
        (diff, ci_low, ci_high),
    )


def _decision(
    promote: bool,
    reason: str,
    challenger: Candidate,
    new: Metrics,
    champion: Candidate | None,
    old: Metrics | None = None,
    interval: tuple[float, float, float] | None = None,
    *,
    champion_version: str | None = None,
) -> PromotionDecision:
    diff, low, high = (None, None, None) if interval is None else interval
    return PromotionDecision(
        promote=promote,
        reason=reason,
        challenger_version=challenger.version,
        champion_version=champion.version if champion is not None else champion_version,
        challenger_auc=new.roc_auc,
        champion_auc=None if old is None else old.roc_auc,
        auc_diff=diff,
        ci_low=low,
        ci_high=high,
        challenger_brier=new.brier,
        champion_brier=None if old is None else old.brier,
        n_rows=new.n,
    )
