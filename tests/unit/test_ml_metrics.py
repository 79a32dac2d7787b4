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
    gains_png,
    gains_table,
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


def _hundred_ranked(churners_per_decile: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """100 customers with probabilities 1.00, 0.99, ..., 0.01 (decile d holds the ranks
    10(d-1)..10d-1) and the given number of churners at the top of each decile."""
    prob = (100 - np.arange(100)) / 100
    y = np.zeros(100, dtype=np.int64)
    for decile, churners in enumerate(churners_per_decile):
        y[decile * 10 : decile * 10 + churners] = 1
    return y, prob


def test_gains_table_of_a_hundred_customers_by_hand() -> None:
    # 20 churners (base rate 0.2): 8 in the top decile, 6, 4, 2, then none.
    y, prob = _hundred_ranked([8, 6, 4, 2, 0, 0, 0, 0, 0, 0])
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(100)  # the input order must not matter (distinct scores)
    gains = gains_table(y[shuffled], prob[shuffled])
    assert (gains.n, gains.churners, gains.n_groups) == (100, 20, 10)
    assert [row.customers for row in gains.rows] == [10] * 10
    assert [row.churners for row in gains.rows] == [8, 6, 4, 2, 0, 0, 0, 0, 0, 0]
    assert [row.churn_rate for row in gains.rows] == pytest.approx([0.8, 0.6, 0.4, 0.2] + [0] * 6)
    assert [row.gain for row in gains.rows] == pytest.approx([0.4, 0.7, 0.9, 1.0] + [1.0] * 6)
    assert [row.lift for row in gains.rows] == pytest.approx([4.0, 3.0, 2.0, 1.0] + [0.0] * 6)
    # decile 1 holds 1.00 .. 0.91: mean 0.955
    assert gains.rows[0].mean_probability == pytest.approx(0.955)
    assert (gains.top_customers, gains.top_churners) == (10, 8)
    assert gains.top_gain == pytest.approx(0.4) and gains.top_lift == pytest.approx(4.0)
    assert gains.headline() == (
        "The top 10% (10 customers) catch 8 of 20 churners (40.0%); lift 4.00."
    )


def test_gains_table_of_a_random_ranking_has_lift_one() -> None:
    # two churners in every decile: each group's rate is the holdout's
    y, prob = _hundred_ranked([2] * 10)
    gains = gains_table(y, prob)
    assert [row.lift for row in gains.rows] == pytest.approx([1.0] * 10)
    assert [row.gain for row in gains.rows] == pytest.approx([0.1 * d for d in range(1, 11)])


def test_gains_table_groups_differ_by_one_row_at_most_larger_first() -> None:
    y = np.array([1, 0] * 11 + [1])  # 23 rows
    gains = gains_table(y, np.linspace(0.9, 0.1, 23))
    assert [row.customers for row in gains.rows] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert sum(row.churners for row in gains.rows) == gains.churners == 12
    assert gains.rows[-1].gain == pytest.approx(1.0)


def test_gains_table_breaks_ties_by_input_order() -> None:
    # every score equal: the groups follow the rows as given, so the table is reproducible
    y = np.array([1] * 10 + [0] * 90)
    gains = gains_table(y, np.full(100, 0.3))
    assert gains.top_churners == 10
    assert gains_table(y[::-1], np.full(100, 0.3)).top_churners == 0


def test_gains_table_refuses_more_groups_than_rows() -> None:
    with pytest.raises(ValueError, match="n_groups must be between 1 and the 4 rows"):
        gains_table(Y, np.array([0.1, 0.4, 0.6, 0.8]), n_groups=5)


def test_gains_survive_a_dict_round_trip_and_plot() -> None:
    y, prob = _hundred_ranked([8, 6, 4, 2, 0, 0, 0, 0, 0, 0])
    gains = gains_table(y, prob)
    assert type(gains).from_dict(gains.as_dict()) == gains
    assert gains_png(gains).startswith(PNG_SIGNATURE)
