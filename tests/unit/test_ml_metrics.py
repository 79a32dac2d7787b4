"""Unit tests for the holdout metrics, the oracle AUC, calibration and the plots."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.features import ID
from churn_assets.ml.metrics import (
    best_f1_threshold,
    calibration_png,
    calibration_summary,
    evaluate,
    oracle_auc,
    roc_curve_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Y = np.array([0, 0, 1, 1])


def test_evaluate_perfect_ranking_gives_auc_one_and_brier_by_hand() -> None:
    prob = np.array([0.1, 0.4, 0.6, 0.8])
    metrics = evaluate(Y, prob, threshold=0.5)
    assert metrics.roc_auc == 1.0
    assert metrics.pr_auc == 1.0
    # Brier = mean((p - y)^2) = (0.01 + 0.16 + 0.16 + 0.04) / 4
    assert metrics.brier == pytest.approx(0.0925)
    expected_log_loss = -(math.log(0.9) + math.log(0.6) + math.log(0.6) + math.log(0.8)) / 4
    assert metrics.log_loss == pytest.approx(expected_log_loss)
    assert metrics.f1 == 1.0
    assert (metrics.n, metrics.positives, metrics.threshold) == (4, 2, 0.5)


def test_evaluate_inverted_ranking_gives_auc_zero_and_f1_at_threshold() -> None:
    metrics = evaluate(Y, np.array([0.9, 0.7, 0.2, 0.1]), threshold=0.5)
    assert metrics.roc_auc == 0.0
    assert metrics.f1 == 0.0


def test_evaluate_rejects_a_single_class_and_bad_probabilities() -> None:
    with pytest.raises(ValueError, match="both classes"):
        evaluate(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5)
    with pytest.raises(ValueError, match="probabilities"):
        evaluate(Y, np.array([0.1, 0.2, 1.3, 0.4]), 0.5)


def test_metrics_as_dict_has_every_field() -> None:
    metrics = evaluate(Y, np.array([0.1, 0.4, 0.6, 0.8]), threshold=0.5)
    assert set(metrics.as_dict()) == {
        "roc_auc", "pr_auc", "brier", "log_loss", "f1", "threshold", "n", "positives",
    }  # fmt: skip


def test_best_f1_threshold_picks_the_cut_with_the_highest_f1() -> None:
    y = np.array([0, 0, 1, 0, 1, 1])
    prob = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    # >= 0.3 flags 4 rows with all 3 churners: F1 = 6/7, better than any other cut.
    assert best_f1_threshold(y, prob) == pytest.approx(0.3)


def test_oracle_auc_uses_exactly_the_holdout_ids() -> None:
    truth = pd.DataFrame(
        {
            ID: ["a", "b", "c", "d", "e"],
            "churn_probability": [0.9, 0.1, 0.8, 0.2, 0.95],
            "churned": [1, 0, 0, 1, 0],
        }
    )
    assert oracle_auc(["a", "b", "e"], truth) == pytest.approx(0.5)  # a > b, e > a
    assert oracle_auc(["a", "b"], truth) == 1.0


def test_oracle_auc_is_none_when_ground_truth_does_not_cover_the_holdout() -> None:
    truth = pd.DataFrame({ID: ["a", "b"], "churn_probability": [0.9, 0.1], "churned": [1, 0]})
    assert oracle_auc(["a", "b", "zz"], truth) is None


@pytest.mark.parametrize("plot", [roc_curve_png, calibration_png])
def test_plots_are_png_bytes_of_the_requested_size(plot: Callable[..., bytes]) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    prob = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    png = plot(y, prob)
    assert png.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (400, 300)


def test_calibration_summary_ece_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 1])
    prob = np.array([0.10, 0.12, 0.18, 0.90, 0.95])
    cal = calibration_summary(y, prob)
    # Bin [0.1, 0.2): mean p 0.4/3 vs rate 1/3, |diff| 0.2, weight 3/5 -> 0.12.
    # Bin [0.9, 1.0]: mean p 0.925 vs rate 1, |diff| 0.075, weight 2/5 -> 0.03.
    assert cal.ece == pytest.approx(0.15)
    assert cal.mean_predicted == pytest.approx(0.45)
    assert cal.observed_rate == pytest.approx(0.6)
    assert (cal.n_bins, cal.n) == (10, 5)


def test_calibration_summary_is_zero_when_every_bin_matches_its_rate() -> None:
    y = np.array([1, 0, 0, 0, 1, 1, 1, 1])
    prob = np.array([0.25, 0.25, 0.25, 0.25, 1.0, 1.0, 1.0, 1.0])  # p = 1.0 joins the last bin
    cal = calibration_summary(y, prob)
    assert cal.ece == pytest.approx(0.0)
    assert cal.mean_predicted == pytest.approx(cal.observed_rate)
