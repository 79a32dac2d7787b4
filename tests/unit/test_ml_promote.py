"""Unit tests for the champion/challenger decision and the paired bootstrap."""

from __future__ import annotations

from dataclasses import asdict
from functools import cache

import numpy as np
import numpy.typing as npt
import pytest
from sklearn import metrics as skm

from churn_assets.ml.promote import (
    Candidate,
    PromotionPolicy,
    UnusableChampion,
    _resampled_aucs,
    paired_bootstrap_auc_diff,
    should_promote,
)
from churn_assets.policy import Policy

Scores = dict[str, npt.NDArray[np.float64]]
DEFAULT = PromotionPolicy.from_policy(Policy())


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))


@cache
def _scores(n: int, seed: int) -> tuple[npt.NDArray[np.int64], Scores]:
    """Labels drawn from a known logistic model, and scores of known quality on them.

    - ``good``: the true churn probabilities (best AUC, calibrated);
    - ``medium``: a noisier view of the same signal (lower AUC, worse Brier);
    - ``bad``: pure noise (AUC ~0.5);
    - ``slightly_better``: medium nudged 3% towards good (AUC gain ~0.006 < 0.01);
    - ``overconfident``: good**0.1, same ranking as good but every score pushed towards 1.
    """
    rng = np.random.default_rng(seed)
    signal, noise, other_noise = rng.normal(size=(3, n))
    good_logit = -1.0 + 2.0 * signal
    y = (rng.random(n) < _sigmoid(good_logit)).astype(np.int64)
    medium_logit = -1.0 + 2.0 * (0.7 * signal + np.sqrt(1 - 0.7**2) * noise)
    scores = {
        "good": _sigmoid(good_logit),
        "medium": _sigmoid(medium_logit),
        "bad": _sigmoid(-1.0 + 2.0 * other_noise),
        "slightly_better": _sigmoid(medium_logit + 0.03 * (good_logit - medium_logit)),
        "overconfident": _sigmoid(good_logit) ** 0.1,
    }
    return y, scores


@pytest.mark.parametrize(
    ("n", "seed", "challenger", "gates_passed", "champion", "promote", "reason"),
    [
        # Gates failed: never promoted, even with a far better AUC than the champion.
        (2000, 0, "good", False, "bad", False, "did not pass its gates"),
        # Gates failed and no champion: still not promoted.
        (2000, 0, "good", False, None, False, "did not pass its gates"),
        # No champion: the first gated model becomes champion, even a poor one.
        (2000, 0, "bad", True, None, True, "first champion"),
        # Clearly better on 2,000 rows: AUC +0.12, CI well above 0, better Brier.
        (2000, 0, "good", True, "medium", True, "excludes 0, Brier"),
        # Better by ~0.006 < 0.01: the gain rule fails (though the CI alone would pass).
        (2000, 0, "slightly_better", True, "medium", False, "< required gain 0.010"),
        # Better by ~0.05 on only 60 rows: the bootstrap CI includes 0.
        (60, 1, "good", True, "medium", False, "includes 0"),
        # Same ranking as good (AUC +0.12) but calibration wrecked: Brier 0.44 vs 0.20.
        (2000, 0, "overconfident", True, "medium", False, "> tolerance 0.005"),
        # Identical models: difference 0, nothing to gain.
        (2000, 0, "medium", True, "medium", False, "difference +0.000 < required gain"),
        # Worse challenger: negative difference.
        (2000, 0, "bad", True, "good", False, "< required gain"),
    ],
)
def test_should_promote_follows_the_rules_in_order(
    n: int,
    seed: int,
    challenger: str,
    gates_passed: bool,
    champion: str | None,
    promote: bool,
    reason: str,
) -> None:
    y, scores = _scores(n, seed)
    decision = should_promote(
        y,
        Candidate("v2", gates_passed, scores[challenger]),
        None if champion is None else Candidate("v1", True, scores[champion].copy()),
        DEFAULT,
    )
    assert decision.promote is promote
    assert reason in decision.reason
    assert decision.challenger_auc == pytest.approx(skm.roc_auc_score(y, scores[challenger]))
    assert decision.n_rows == n
    if champion is None or not gates_passed:
        assert decision.auc_diff is None and decision.ci_low is None
    else:
        assert decision.champion_version == "v1"
        assert decision.auc_diff == pytest.approx(
            decision.challenger_auc - skm.roc_auc_score(y, scores[champion])
        )


def test_should_promote_cases_have_the_properties_they_claim() -> None:
    # Guards the table above: each case fails (or passes) for the reason it names.
    y, scores = _scores(2000, 0)
    slightly = should_promote(
        y,
        Candidate("b", True, scores["slightly_better"]),
        Candidate("a", True, scores["medium"]),
        DEFAULT,
    )
    assert slightly.auc_diff is not None and slightly.ci_low is not None
    assert 0 < slightly.auc_diff < 0.01 and slightly.ci_low > 0
    y_small, small = _scores(60, 1)
    tiny = should_promote(
        y_small, Candidate("b", True, small["good"]), Candidate("a", True, small["medium"]), DEFAULT
    )
    assert tiny.auc_diff is not None and tiny.ci_low is not None
    assert tiny.auc_diff >= 0.01 and tiny.ci_low <= 0
    wrecked = should_promote(
        y,
        Candidate("b", True, scores["overconfident"]),
        Candidate("a", True, scores["medium"]),
        DEFAULT,
    )
    assert wrecked.ci_low is not None and wrecked.ci_low > 0
    assert wrecked.champion_brier is not None
    assert wrecked.challenger_brier > wrecked.champion_brier + 0.2


def test_should_promote_reason_reads_as_one_sentence_with_every_number() -> None:
    y, scores = _scores(2000, 0)
    decision = should_promote(
        y, Candidate("v2", True, scores["good"]), Candidate("v1", True, scores["medium"]), DEFAULT
    )
    assert decision.reason.startswith("challenger AUC 0.862 beats champion 0.740 by 0.122 >= 0.010")
    assert "bootstrap 95% CI of the difference [" in decision.reason
    assert "Brier 0.141 vs 0.200 within tolerance" in decision.reason


def test_should_promote_is_deterministic_for_a_seed() -> None:
    y, scores = _scores(200, 3)
    args = (y, Candidate("b", True, scores["good"]), Candidate("a", True, scores["medium"]))
    assert should_promote(*args, DEFAULT) == should_promote(*args, DEFAULT)
    other = should_promote(*args, PromotionPolicy.from_policy(Policy(), seed=7))
    assert other.ci_low != should_promote(*args, DEFAULT).ci_low


def test_paired_bootstrap_interval_contains_the_observed_difference() -> None:
    y, scores = _scores(500, 4)
    diff, low, high = paired_bootstrap_auc_diff(
        y, scores["good"], scores["medium"], n_bootstrap=1000, confidence=0.95, seed=0
    )
    expected = skm.roc_auc_score(y, scores["good"]) - skm.roc_auc_score(y, scores["medium"])
    assert diff == pytest.approx(expected, abs=1e-12)
    assert low < diff < high


def test_paired_bootstrap_is_reproducible_with_the_seed() -> None:
    y, scores = _scores(300, 5)

    def run(seed: int) -> tuple[float, float, float]:
        return paired_bootstrap_auc_diff(
            y, scores["good"], scores["bad"], n_bootstrap=500, confidence=0.9, seed=seed
        )

    assert run(11) == run(11)
    assert run(12) != run(11)


def test_paired_bootstrap_interval_narrows_with_more_rows() -> None:
    widths = []
    for n in (200, 5000):
        y, scores = _scores(n, 6)
        _, low, high = paired_bootstrap_auc_diff(
            y, scores["good"], scores["medium"], n_bootstrap=400, confidence=0.95, seed=0
        )
        widths.append(high - low)
    # The width shrinks like 1/sqrt(n): 25x the rows gives about 1/5 of the width.
    assert widths[1] < widths[0] / 3


def test_paired_bootstrap_interval_width_follows_the_confidence_level() -> None:
    # On 2,000 rows the resampled differences are close to normal, so a two-sided 50%
    # interval is 0.674 / 1.960 = 0.34 of the 95% one.
    y, scores = _scores(2000, 0)
    widths = {}
    for confidence in (0.5, 0.95):
        _, low, high = paired_bootstrap_auc_diff(
            y, scores["good"], scores["medium"], n_bootstrap=2000, confidence=confidence, seed=0
        )
        widths[confidence] = high - low
    assert widths[0.5] / widths[0.95] == pytest.approx(0.674 / 1.960, abs=0.05)


def test_paired_bootstrap_of_a_model_against_itself_is_exactly_zero() -> None:
    # Pairing: the same rows score both models, so identical models differ by 0 every time.
    y, scores = _scores(100, 7)
    assert paired_bootstrap_auc_diff(
        y, scores["medium"], scores["medium"], n_bootstrap=200, confidence=0.95, seed=0
    ) == (0.0, 0.0, 0.0)


def test_resampled_aucs_match_sklearn_with_row_counts_as_weights() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 60)
    p = np.round(rng.random(60), 1)  # one decimal: many ties, which count 1/2
    counts = rng.multinomial(60, np.full(60, 1 / 60), size=25)
    expected = [skm.roc_auc_score(y, p, sample_weight=c) for c in counts]
    np.testing.assert_allclose(_resampled_aucs(y, p, counts), expected, rtol=0, atol=1e-12)


def test_resampled_aucs_are_nan_for_a_resample_with_one_class() -> None:
    counts = np.array([[2, 0, 2, 0], [1, 1, 1, 1]])  # first resample drew no positive
    aucs = _resampled_aucs(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.3, 0.2]), counts)
    assert np.isnan(aucs[0])
    assert aucs[1] == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("n_positives", "valid"),
    [
        # One churner in 50 rows: ~36% of resamples lack it, too many to skip.
        (1, False),
        # Two churners: ~13% lack both, still above the 10% allowed.
        (2, False),
        # Five churners: <1% of resamples lack them; the interval is computed.
        (5, True),
    ],
)
def test_paired_bootstrap_needs_enough_resamples_with_both_classes(
    n_positives: int, valid: bool
) -> None:
    y = np.zeros(50, dtype=np.int64)
    y[:n_positives] = 1
    p = np.linspace(0, 1, 50)

    def run() -> tuple[float, float, float]:
        return paired_bootstrap_auc_diff(y, p, p[::-1], n_bootstrap=1000, confidence=0.95, seed=0)

    if valid:
        assert run()[2] < 0  # the reversed ranking is reliably worse
    else:
        with pytest.raises(ValueError, match="resamples contain both classes"):
            run()


@pytest.mark.parametrize(
    ("y", "challenger", "champion", "match"),
    [
        # Labels other than 0/1.
        ([0, 2, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "only 0 and 1"),
        # A single class has no AUC.
        ([1, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "both classes"),
        # Challenger scored different rows than there are labels.
        ([0, 1, 1], [0.1, 0.2], [0.1, 0.2, 0.3], "challenger v2 probabilities must be 1-D"),
        # Champion scored different rows than there are labels.
        ([0, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4], "champion v1 probabilities must"),
        # A score above 1 is not a probability.
        ([0, 1, 1], [0.1, 1.2, 0.3], [0.1, 0.2, 0.3], "finite and in \\[0, 1\\]"),
        # NaN scores (e.g. a broken export) are rejected, not ranked.
        ([0, 1, 1], [0.1, 0.2, 0.3], [0.1, np.nan, 0.3], "champion v1 .* finite"),
        # No labels at all.
        ([], [], [], "non-empty 1-D"),
    ],
)
def test_should_promote_rejects_invalid_inputs(
    y: list[int], challenger: list[float], champion: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        should_promote(
            np.array(y),
            Candidate("v2", True, np.array(challenger)),
            Candidate("v1", True, np.array(champion)),
            DEFAULT,
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_auc_gain": -0.01}, "min_auc_gain"),  # would promote a worse model
        ({"brier_tolerance": float("nan")}, "brier_tolerance"),
        ({"n_bootstrap": 0}, "n_bootstrap"),
        ({"confidence": 1.0}, "confidence"),  # a 100% interval is unbounded
    ],
)
def test_promotion_policy_rejects_meaningless_settings(
    kwargs: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        PromotionPolicy(**{**asdict(DEFAULT), **kwargs})


def test_candidate_probabilities_are_a_read_only_copy() -> None:
    scores = np.array([0.2, 0.8])
    candidate = Candidate("v1", True, scores)
    scores[0] = 0.9
    assert candidate.probabilities[0] == 0.2
    with pytest.raises(ValueError, match="read-only"):
        candidate.probabilities[0] = 0.5


@pytest.mark.parametrize("champion", ["medium", None])  # with and without a champion
def test_promotion_decision_as_tags_are_prefixed_strings(champion: str | None) -> None:
    y, scores = _scores(200, 9)
    decision = should_promote(
        y,
        Candidate("v2", True, scores["good"]),
        None if champion is None else Candidate("v1", True, scores[champion]),
        DEFAULT,
    )
    tags = decision.as_tags()
    assert set(tags) == {f"promotion.{key}" for key in decision.as_dict()}
    assert all(isinstance(value, str) for value in tags.values())
    assert tags["promotion.promote"] == str(decision.promote).lower()
    # repr round-trips a float exactly, so a sensor can compare tags without rounding.
    assert float(tags["promotion.challenger_auc"]) == decision.challenger_auc
    assert tags["promotion.n_rows"] == "200"
    if champion is None:
        assert tags["promotion.ci_low"] == "none"
    assert set(decision.as_tags(prefix="")) == set(decision.as_dict())


@pytest.mark.parametrize(
    ("challenger_gates", "promote", "reason"),
    [
        # A gated challenger replaces a champion that can no longer be scored (or served),
        # even when it is the weaker model: "bad" would never beat a working "good".
        (True, True, "champion unusable: v1: artifact missing; challenger v2 passed the gates"),
        # An ungated challenger is still never promoted, champion or no champion.
        (False, False, "did not pass its gates"),
    ],
)
def test_should_promote_replaces_an_unusable_champion_only_with_a_gated_challenger(
    challenger_gates: bool, promote: bool, reason: str
) -> None:
    # Regression (issue 10.4): a corrupted or deleted champion ONNX blocked every later
    # promotion with a traceback.
    y, scores = _scores(2000, 0)
    decision = should_promote(
        y,
        Candidate("v2", challenger_gates, scores["bad"]),
        UnusableChampion("1", "artifact missing"),
        DEFAULT,
    )
    assert decision.promote is promote
    assert reason in decision.reason
    if promote:
        assert decision.champion_version == "1"  # the replaced version is on record
        assert decision.champion_auc is None  # it was not scored


def test_the_bootstrap_of_a_large_holdout_resamples_a_seeded_subsample() -> None:
    # A whole period at scale (250,000 rows): the interval comes from a 200,000-row
    # subsample, deterministic per seed; the observed difference uses every row.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 250_000)
    better = np.clip(y * 0.3 + rng.random(y.size) * 0.7, 0, 1)
    worse = np.clip(y * 0.1 + rng.random(y.size) * 0.9, 0, 1)
    first = paired_bootstrap_auc_diff(y, better, worse, n_bootstrap=20, confidence=0.9, seed=1)
    again = paired_bootstrap_auc_diff(y, better, worse, n_bootstrap=20, confidence=0.9, seed=1)
    assert first == again
    observed, low, high = first
    assert observed == pytest.approx(skm.roc_auc_score(y, better) - skm.roc_auc_score(y, worse))
    assert 0 < low <= high  # a clear difference stays clear on the subsample
