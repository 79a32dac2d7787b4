"""Unit tests for realized performance: served scores judged once their labels matured."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.realized import REALIZED_COLUMNS, realized_failures, realized_performance


def _scored(version: str, as_of: str, probability: list[float], churned: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model_version": version,
            "as_of": as_of,
            "churn_probability": probability,
            "churned": churned,
        }
    )


def _ranked(n: int, seed: int) -> pd.DataFrame:
    """Labels with probabilities that rank them well, not perfectly (the ranges overlap)."""
    rng = np.random.default_rng(seed)
    churned = (rng.random(n) < 0.3).astype(np.int64)
    probability = np.where(churned == 1, rng.uniform(0.3, 0.9, n), rng.uniform(0.05, 0.6, n))
    return pd.DataFrame({"churn_probability": probability, "churned": churned})


def test_a_perfect_ranking_has_auc_one_and_the_brier_score_by_hand() -> None:
    scored = _scored("3", "2025-03-31", [0.9, 0.6, 0.4, 0.1], [1, 1, 0, 0])
    row = realized_performance(scored).iloc[0]
    assert row["auc"] == 1.0
    # ((0.9-1)^2 + (0.6-1)^2 + 0.4^2 + 0.1^2) / 4 = (0.01 + 0.16 + 0.16 + 0.01) / 4
    assert row["brier"] == pytest.approx(0.085)
    assert row["mean_predicted"] == pytest.approx(0.5)
    assert row["observed_rate"] == pytest.approx(0.5)
    assert row["rows"] == 4
    assert (row["model_version"], row["as_of"]) == ("3", "2025-03-31")


def test_realized_performance_has_one_row_per_version_and_period_sorted_by_period() -> None:
    scored = pd.concat(
        [
            _scored("10", "2025-04-30", [0.8, 0.2, 0.3], [1, 0, 0]),
            _scored("9", "2025-04-30", [0.3, 0.7], [1, 0]),
            _scored("9", "2025-03-31", [0.6, 0.1], [1, 0]),
        ]
    )
    realized = realized_performance(scored.sample(frac=1.0, random_state=0))
    assert list(realized.columns) == list(REALIZED_COLUMNS)
    assert list(zip(realized["as_of"], realized["model_version"], strict=True)) == [
        ("2025-03-31", "9"),
        ("2025-04-30", "9"),  # version 9 before 10: numbers, not strings
        ("2025-04-30", "10"),
    ]
    assert realized["rows"].tolist() == [2, 2, 3]
    assert realized["auc"].tolist() == [1.0, 0.0, 1.0]
    assert realized["observed_rate"].tolist() == pytest.approx([0.5, 0.5, 1 / 3])


def test_realized_auc_is_nan_for_a_single_class_and_that_is_not_a_failure() -> None:
    realized = realized_performance(_scored("3", "2025-03-31", [0.9, 0.1], [0, 0]))
    assert math.isnan(realized["auc"].item())
    assert realized["brier"].item() == pytest.approx((0.81 + 0.01) / 2)
    assert realized_failures(realized, {"3": 0.8}, tolerance=0.05) == []


def test_shuffled_probabilities_fail_against_the_holdout_auc() -> None:
    good = _ranked(400, seed=1)
    shuffled = good.assign(
        churn_probability=np.random.default_rng(2).permutation(good["churn_probability"])
    )
    scored = pd.concat(
        [
            shuffled.assign(model_version="3", as_of="2025-03-31"),
            good.assign(model_version="3", as_of="2025-04-30"),
        ]
    )
    realized = realized_performance(scored)
    # The version's holdout AUC is what it realizes on the well-ranked period.
    holdout_auc = realized.loc[realized["as_of"] == "2025-04-30", "auc"].item()
    shuffled_auc = realized.loc[realized["as_of"] == "2025-03-31", "auc"].item()
    assert holdout_auc > 0.8 and shuffled_auc < 0.6
    failures = realized_failures(realized, {"3": holdout_auc}, tolerance=0.05)
    assert len(failures) == 1
    message = failures[0]
    assert message.startswith(f"v3 at 2025-03-31: realized AUC {shuffled_auc:.3f} is ")
    assert f"{holdout_auc - shuffled_auc:.3f} below its holdout AUC {holdout_auc:.3f}" in message
    assert "(tolerance 0.05, CHURN_REALIZED_AUC_TOLERANCE); 400 customers" in message


def test_realized_failures_respect_the_tolerance_and_unknown_versions() -> None:
    realized = realized_performance(
        pd.concat(
            [
                _ranked(200, seed=3).assign(model_version="4", as_of="2025-05-31"),
                _ranked(1200, seed=4).assign(model_version="5", as_of="2025-05-31"),
            ]
        )
    )
    auc = dict(zip(realized["model_version"], realized["auc"], strict=True))
    # Just within the tolerance passes; just beyond it fails.
    assert realized_failures(realized, {"4": auc["4"] + 0.049}, tolerance=0.05) == []
    failing = realized_failures(realized, {"4": auc["4"] + 0.051}, tolerance=0.05)
    assert len(failing) == 1 and failing[0].startswith("v4 at 2025-05-31")
    # Both are below a holdout AUC of 1, but a version without one cannot be judged.
    assert auc["4"] < 1.0 and auc["5"] < 1.0
    only_four = realized_failures(realized, {"4": 1.0}, tolerance=0.0)
    assert len(only_four) == 1 and only_four[0].startswith("v4 ")
    both = realized_failures(realized, {"4": 1.0, "5": 1.0}, tolerance=0.0)
    assert len(both) == 2 and both[1].endswith("; 1,200 customers")
    assert realized_failures(realized, {}, tolerance=0.0) == []


def test_realized_performance_rejects_frames_it_cannot_judge() -> None:
    with pytest.raises(ValueError, match=r"missing column.*churn_probability"):
        realized_performance(pd.DataFrame({"model_version": [], "as_of": [], "churned": []}))
    with pytest.raises(ValueError, match="probabilities"):
        realized_performance(_scored("1", "2025-01-31", [1.5], [1]))
    empty = realized_performance(_scored("1", "2025-01-31", [], []))
    assert empty.empty and list(empty.columns) == list(REALIZED_COLUMNS)
