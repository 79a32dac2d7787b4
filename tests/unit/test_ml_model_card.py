"""Unit tests for the model card: its facts, their JSON, and the markdown."""

from __future__ import annotations

from dataclasses import replace

from churn_assets.ml.features import ID, LABEL, labels, to_model_inputs
from churn_assets.ml.gates import Gate, auc_gate, parity_gate
from churn_assets.ml.metrics import (
    Metrics,
    calibration_summary,
    evaluate,
    gains_table,
    oracle_auc,
)
from churn_assets.ml.model import predict_proba
from churn_assets.ml.model_card import CardFacts, card_facts, model_card, render_card
from churn_assets.ml.reference import ReferenceResult
from tests.unit._features import default_run


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
        gains=gains_table(y, prob),
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


def test_card_shows_the_gains_table_and_the_top_decile_catch() -> None:
    facts = _facts(reference_auc=0.8, interval=(-0.03, 0.01))
    gains = facts.gains
    assert gains is not None
    card = render_card(facts)
    assert "## Gains and lift" in card
    assert f"**{gains.headline()}**" in card
    assert "| group | customers | churners | churn rate | mean predicted | gain | lift |" in card
    top = gains.rows[0]
    assert (
        f"| 1 | {top.customers:,} | {top.churners:,} | {top.churn_rate:.1%} | "
        f"{top.mean_probability:.3f} | {top.gain:.1%} | {top.lift:.2f} |"
    ) in card
    assert f"| 10 | {gains.rows[-1].customers:,} |" in card
    assert gains.rows[-1].gain == 1.0


def test_card_without_gains_says_so() -> None:
    facts = replace(_facts(reference_auc=0.8, interval=(-0.03, 0.01)), gains=None)
    assert "Gains and lift were not measured for this model." in render_card(facts)
