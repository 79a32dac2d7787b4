"""Unit tests for the logistic-regression reference model and its rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from churn_assets.ml.artifacts import CARD_FACTS_FILE, CARD_FILE
from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    ID,
    LABEL,
    NUMERIC_FEATURES,
    labels,
    split_holdout,
    to_model_inputs,
)
from churn_assets.ml.model import LOG1P_FEATURES
from churn_assets.ml.pipeline import train_and_evaluate, write_registered_card
from churn_assets.ml.reference import (
    compare_with_reference,
    design_matrix,
    fit_reference,
)
from churn_assets.policy import Policy


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Synthetic customers whose churn depends on recency and frequency (plus noise)."""
    rng = np.random.default_rng(seed)
    recency = rng.exponential(40.0, n)
    frequency = rng.exponential(1.0, n)
    logit = 0.04 * (recency - 40.0) - 1.0 * (frequency - 1.0) - 1.2
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame({name: rng.uniform(0, 100, n) for name in NUMERIC_FEATURES})
    frame["days_since_last_order"] = recency
    frame["order_frequency"] = frequency
    frame[CATEGORICAL_FEATURE] = rng.choice(EMAIL_DOMAIN_CLASSES, n)
    frame[ID] = [f"c{i:05d}" for i in range(n)]
    frame[LABEL] = churned
    return frame


def test_design_matrix_is_raw_numerics_next_to_one_hot_email_class() -> None:
    frame = _frame(3, seed=0)
    frame[CATEGORICAL_FEATURE] = ["business", "unknown", "somewhere-new"]
    x = design_matrix(to_model_inputs(frame))
    n_numeric = len(NUMERIC_FEATURES)
    assert x.shape == (3, n_numeric + len(EMAIL_DOMAIN_CLASSES))
    assert np.allclose(x[:, :n_numeric], frame[list(NUMERIC_FEATURES)].astype(np.float32))
    unknown = EMAIL_DOMAIN_CLASSES.index("unknown")
    business = EMAIL_DOMAIN_CLASSES.index("business")
    assert x[0, n_numeric + business] == 1.0
    assert x[1, n_numeric + unknown] == x[2, n_numeric + unknown] == 1.0  # new -> unknown
    assert x[:, n_numeric:].sum(axis=1).tolist() == [1.0, 1.0, 1.0]


def test_reference_preprocessing_is_log1p_then_standardised_by_hand() -> None:
    # days_since_last_order (logged) alternates 0 and e - 1: log1p gives 0 and 1, mean 0.5,
    # population std 0.5, so standardised -1 and +1. cart_diversity is not logged: 2 and 4
    # standardise to -1 and +1 as well.
    frame = _frame(4, seed=1)
    frame["days_since_last_order"] = [0.0, math.e - 1, 0.0, math.e - 1]
    frame["cart_diversity"] = [2.0, 4.0, 2.0, 4.0]
    frame[LABEL] = [0, 1, 0, 1]
    model = fit_reference(frame, seed=0)
    preprocess = model.pipeline.named_steps["preprocess"]
    scaled = preprocess.transform(design_matrix(to_model_inputs(frame)))
    names = list(preprocess.get_feature_names_out())
    days = scaled[:, names.index("log1p_scaled__x0")]
    diversity = scaled[:, names.index(f"scaled__x{NUMERIC_FEATURES.index('cart_diversity')}")]
    assert days == pytest.approx([-1.0, 1.0, -1.0, 1.0], abs=1e-6)  # float32 inputs
    assert diversity == pytest.approx([-1.0, 1.0, -1.0, 1.0])
    assert {name.split("__")[0] for name in names} == {"log1p_scaled", "scaled", "email_class"}
    n_logged = sum(name.startswith("log1p_scaled") for name in names)
    assert n_logged == len(LOG1P_FEATURES)  # the network's own log1p list, not a copy


def test_reference_matches_a_logistic_regression_on_hand_built_features() -> None:
    frame = _frame(60, seed=2)
    inputs = to_model_inputs(frame)
    numeric = inputs.numeric.astype(np.float64)
    logged = np.array([name in LOG1P_FEATURES for name in NUMERIC_FEATURES])
    numeric[:, logged] = np.log1p(numeric[:, logged])
    standardised = (numeric - numeric.mean(axis=0)) / numeric.std(axis=0)
    by_hand = np.hstack([standardised, np.eye(len(EMAIL_DOMAIN_CLASSES))[inputs.category]])
    expected = (
        LogisticRegression(C=1.0, max_iter=1000).fit(by_hand, labels(frame)).predict_proba(by_hand)
    )
    got = fit_reference(frame, seed=0).predict_proba(inputs)
    # Same problem, columns in another order: lbfgs lands on the same optimum to its tolerance.
    assert got == pytest.approx(expected[:, 1], abs=1e-4)


def test_reference_is_deterministic_for_the_same_rows_and_seed() -> None:
    train_df, holdout = split_holdout(_frame(400, seed=3), 0.25, seed=7)
    mlp = np.full(len(holdout), 0.5)
    first = compare_with_reference(train_df, holdout, mlp, seed=7, n_bootstrap=200, confidence=0.95)
    second = compare_with_reference(
        train_df, holdout, mlp, seed=7, n_bootstrap=200, confidence=0.95
    )
    assert first == second
    a, b = fit_reference(train_df, seed=7), fit_reference(train_df, seed=7)
    coef = [m.pipeline.named_steps["logistic"].coef_ for m in (a, b)]
    assert np.array_equal(coef[0], coef[1])


def test_reference_beats_chance_on_a_synthetic_signal_and_fits_only_training_rows() -> None:
    train_df, holdout = split_holdout(_frame(1000, seed=4), 0.2, seed=42)
    chance = np.full(len(holdout), 0.3)  # a constant "MLP": AUC 0.5
    result = compare_with_reference(
        train_df, holdout, chance, seed=42, n_bootstrap=300, confidence=0.95
    )
    assert result.n_fit == len(train_df)
    assert result.auc > 0.75
    assert result.diff_interval is not None
    low, high = result.diff_interval
    assert low < high < 0  # the constant is worse than the reference beyond noise
    direct = roc_auc_score(
        labels(holdout), fit_reference(train_df, 42).predict_proba(to_model_inputs(holdout))
    )
    assert result.auc == pytest.approx(direct)  # scored on exactly the holdout rows


def test_fit_reference_needs_both_classes() -> None:
    frame = _frame(20, seed=5)
    frame[LABEL] = 0
    with pytest.raises(ValueError, match="churners and stayers"):
        fit_reference(frame, seed=0)


def test_training_writes_reference_auc_and_the_registered_card_shows_parity(
    tmp_path: Path,
) -> None:
    dataset = _frame(600, seed=6).assign(as_of="2025-10-02")
    outcome = train_and_evaluate(
        dataset,
        tmp_path,
        seed=42,
        holdout_fraction=0.2,
        max_epochs=5,
        ground_truth_dir=None,
        policy=Policy(),
        window_days=90,
    )
    assert 0.5 < outcome.metrics["reference_auc"] <= 1.0
    assert 0.0 <= outcome.metrics["ece"] <= 1.0
    assert outcome.params["reference_fit_rows"] == 480  # the whole training part
    # the holdout's gains: the top decile's share of churners, in MLflow and the card
    assert outcome.gains is not None
    assert outcome.metrics["top_decile_gain"] == outcome.gains.top_gain
    assert outcome.metrics["top_decile_lift"] == outcome.gains.top_lift
    assert {path.name for path in outcome.artifacts} >= {"gains.png", "calibration.png"}
    assert (tmp_path / "gains.png").is_file()
    assert (tmp_path / CARD_FACTS_FILE).is_file()
    training_card = (tmp_path / CARD_FILE).read_text()
    assert "| ONNX parity (max abs diff vs torch) | <= 1e-06 | n/a | not evaluated |" in (
        training_card
    )
    assert outcome.gains.headline() in training_card
    path = write_registered_card(tmp_path, 5.96e-8, Policy())
    card = path.read_text()
    assert path == tmp_path / CARD_FILE
    assert "| ONNX parity (max abs diff vs torch) | <= 1e-06 | 5.96e-08 | pass |" in card
    assert "not evaluated" not in card
    assert f"| logistic regression reference | {outcome.metrics['reference_auc']:.4f} |" in card
    # the BG/NBD reference sits beside it: a metric (MLflow, metadata) and a card row
    btyd_auc = outcome.metrics["btyd_auc"]
    assert 0.0 <= btyd_auc <= 1.0
    assert f"| BG/NBD buy-till-you-die reference | {btyd_auc:.4f} |" in card
    assert "P(no order in the next 90 days)" in card
    assert f"expected calibration error (ECE) {outcome.metrics['ece']:.3f}" in card
