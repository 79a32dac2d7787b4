"""Unit tests for metrics, the oracle AUC, plots and the model card."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.evaluate import (
    CardFacts,
    Gate,
    Metrics,
    best_f1_threshold,
    calibration_png,
    calibration_summary,
    card_facts,
    evaluate,
    model_card,
    oracle_auc,
    render_card,
    roc_curve_png,
)
from churn_assets.ml.features import ID, LABEL, labels, to_model_inputs
from churn_assets.ml.gates import auc_gate, parity_gate
from churn_assets.ml.model import predict_proba
from churn_assets.ml.reference import ReferenceResult
from tests.unit._features import default_run

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


def _card(gates: tuple[Gate, ...]) -> tuple[str, Metrics, float | None]:
    run = default_run()
    prob = predict_proba(run.result.model, to_model_inputs(run.holdout_df))
    metrics = evaluate(labels(run.holdout_df), prob, run.result.threshold)
    oracle = oracle_auc(run.holdout_df[ID], run.data.ground_truth)
    card = model_card(
        run.result,
        metrics,
        as_of=run.data.config.as_of,
        n_rows=len(run.snapshot),
        label_rate=float(run.snapshot[LABEL].mean()),
        label_window_days=run.data.config.window_days,
        oracle=oracle,
        gates=gates,
    )
    return card, metrics, oracle


def test_model_card_mentions_metrics_oracle_gap_and_gates() -> None:
    gates = (Gate("holdout ROC AUC", 0.60, ">=", observed=None), Gate("oracle gap", 0.15, "<="))
    card, metrics, oracle = _card(gates)
    assert oracle is not None
    assert f"| ROC AUC | {metrics.roc_auc:.4f} |" in card
    assert f"{metrics.brier:.4f}" in card
    assert f"gap to the model: {oracle - metrics.roc_auc:+.4f}" in card
    assert "| holdout ROC AUC | >= 0.6 | n/a | not evaluated |" in card
    assert "| oracle gap | <= 0.15 |" in card
    assert "409 trainable parameters" in card
    assert "2025-09-30" in card
    for section in ("## Intended use", "## Limitations", "## Features"):
        assert section in card


def test_model_card_reports_each_gate_result() -> None:
    card, _, _ = _card(
        (Gate("holdout ROC AUC", 0.99, observed=0.80), Gate("parity", 1e-6, "<=", 1.2e-7))
    )
    assert "| holdout ROC AUC | >= 0.99 | 0.8 | FAIL |" in card
    assert "| parity | <= 1e-06 | 1.2e-07 | pass |" in card


def test_gate_passed_follows_its_comparison() -> None:
    assert Gate("auc", 0.6, ">=", observed=0.6).passed is True
    assert Gate("gap", 0.1, "<=", observed=0.2).passed is False
    assert Gate("auc", 0.6).passed is None


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


def _facts(reference_auc: float, interval: tuple[float, float]) -> CardFacts:
    run = default_run()
    y = labels(run.holdout_df)
    prob = predict_proba(run.result.model, to_model_inputs(run.holdout_df))
    return card_facts(
        run.result,
        evaluate(y, prob, run.result.threshold),
        as_of=run.data.config.as_of,
        n_rows=len(run.snapshot),
        label_rate=float(run.snapshot[LABEL].mean()),
        reference=ReferenceResult(
            auc=reference_auc, n_fit=695, diff_interval=interval, confidence=0.95
        ),
        calibration=calibration_summary(y, prob),
    )


def test_registered_card_shows_parity_reference_and_calibration_as_measured() -> None:
    facts = _facts(reference_auc=0.5, interval=(0.1, 0.4))
    auc = facts.metrics.roc_auc
    gates = [auc_gate(auc, 0.6), parity_gate(5.96e-8, 1e-6)]
    card = render_card(facts, gates, reference_tolerance=0.01)
    assert f"| holdout ROC AUC | >= 0.6 | {auc:.4g} | pass |" in card
    assert "| ONNX parity (max abs diff vs torch) | <= 1e-06 | 5.96e-08 | pass |" in card
    assert f"| MLP AUC - reference AUC | >= -0.01 | {auc - 0.5:.4g} | pass |" in card
    assert "not evaluated" not in card
    assert "| logistic regression reference | 0.5000 |" in card
    assert f"The MLP beats the reference by {auc - 0.5:.4f} AUC." in card
    assert "[+0.1000, +0.4000]: the MLP is better beyond sampling noise" in card
    cal = facts.calibration
    assert cal is not None
    assert (
        f"mean predicted probability {cal.mean_predicted:.3f} against an observed churn rate "
        f"of {cal.observed_rate:.3f}; expected calibration error (ECE) {cal.ece:.3f}"
    ) in card
    assert "prior correction" in card
    assert "inflates probabilities" not in card  # the old, untrue limitation


def test_card_says_plainly_when_the_mlp_trails_the_reference() -> None:
    facts = _facts(reference_auc=0.95, interval=(-0.2, -0.1))
    difference = facts.metrics.roc_auc - 0.95
    card = render_card(facts, [parity_gate(None, 1e-6)], reference_tolerance=0.01)
    assert f"**The MLP trails the reference** by {-difference:.4f} AUC" in card
    assert "CHURN_REFERENCE_AUC_TOLERANCE" in card
    assert "does not earn its place" in card
    assert "WARN (not blocking)" in card
    assert "the MLP is worse beyond sampling noise" in card
    # The training-time card names what is measured later, and where to find it.
    assert "| ONNX parity (max abs diff vs torch) | <= 1e-06 | n/a | not evaluated |" in card
    assert "registered version's card" in card


def test_card_facts_survive_a_json_round_trip() -> None:
    facts = _facts(reference_auc=0.8, interval=(-0.03, 0.01))
    again = CardFacts.from_json(facts.to_json())
    assert again == facts
    assert render_card(again, reference_tolerance=0.01) == render_card(
        facts, reference_tolerance=0.01
    )
