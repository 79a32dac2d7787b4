"""Unit tests for the ML feature contract: conversion to model inputs and the holdout split."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from churn_assets.data.generator import GeneratedData, GeneratorConfig
from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    ID,
    LABEL,
    NUMERIC_FEATURES,
    split_holdout,
    to_model_inputs,
)
from tests.unit._features import default_run, training_snapshot


def test_numeric_features_follow_the_snapshot_column_order() -> None:
    assert NUMERIC_FEATURES == (
        "days_since_last_order",
        "total_revenue_30d",
        "total_revenue_90d",
        "total_revenue_365d",
        "order_frequency",
        "cart_diversity",
        "customer_lifetime_days",
    )


def test_to_model_inputs_gives_float32_numerics_and_int64_category_indices() -> None:
    snapshot = default_run().snapshot
    inputs = to_model_inputs(snapshot)
    assert inputs.numeric.dtype == np.float32
    assert inputs.numeric.shape == (len(snapshot), 7)
    assert inputs.category.dtype == np.int64
    np.testing.assert_array_equal(
        inputs.numeric[:, 1], snapshot["total_revenue_30d"].to_numpy(np.float32)
    )
    expected = snapshot[CATEGORICAL_FEATURE].map(EMAIL_DOMAIN_CLASSES.index).to_numpy()
    np.testing.assert_array_equal(inputs.category, expected)


def test_to_model_inputs_maps_categories_outside_the_vocabulary_to_unknown() -> None:
    frame = default_run().snapshot.head(4).copy()
    frame[CATEGORICAL_FEATURE] = ["free", "government", None, "education"]
    unknown = EMAIL_DOMAIN_CLASSES.index("unknown")
    expected = [EMAIL_DOMAIN_CLASSES.index("free"), unknown, unknown, 2]
    assert to_model_inputs(frame).category.tolist() == expected


def test_to_model_inputs_names_every_missing_column() -> None:
    frame = default_run().snapshot.drop(columns=["order_frequency", CATEGORICAL_FEATURE])
    with pytest.raises(ValueError, match=r"order_frequency, email_domain_class"):
        to_model_inputs(frame)


@pytest.mark.parametrize("bad_value", [-1.0, np.nan])
def test_to_model_inputs_rejects_negative_or_missing_numerics(bad_value: float) -> None:
    frame = default_run().snapshot.head(5).copy()
    frame["total_revenue_90d"] = frame["total_revenue_90d"].astype("float64")
    frame.loc[2, "total_revenue_90d"] = bad_value
    with pytest.raises(ValueError, match="total_revenue_90d"):
        to_model_inputs(frame)


def test_split_holdout_is_stratified_disjoint_and_complete() -> None:
    snapshot = default_run().snapshot
    train, holdout = split_holdout(snapshot, holdout_fraction=0.2, seed=42)
    assert set(train[ID]).isdisjoint(holdout[ID])
    assert set(train[ID]) | set(holdout[ID]) == set(snapshot[ID])
    positives, negatives = int(snapshot[LABEL].sum()), int((snapshot[LABEL] == 0).sum())
    assert int(holdout[LABEL].sum()) == round(0.2 * positives)
    assert int((holdout[LABEL] == 0).sum()) == round(0.2 * negatives)


def test_split_holdout_is_reproducible_and_independent_of_row_order() -> None:
    snapshot = default_run().snapshot
    shuffled = snapshot.sample(frac=1.0, random_state=0)
    first = split_holdout(snapshot, seed=7)
    again = split_holdout(shuffled, seed=7)
    for a, b in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_split_holdout_differs_between_seeds() -> None:
    snapshot = default_run().snapshot
    assert set(split_holdout(snapshot, seed=1)[1][ID]) != set(
        split_holdout(snapshot, seed=2)[1][ID]
    )


def test_split_holdout_rejects_duplicate_customer_ids() -> None:
    snapshot = default_run().snapshot
    doubled = pd.concat([snapshot, snapshot.head(1)])
    with pytest.raises(ValueError, match="unique"):
        split_holdout(doubled)


def test_snapshot_fixture_matches_features_worked_out_by_hand() -> None:
    """The pandas fixture restates the dbt SQL; check it on the integration test's example."""
    customers = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "signup_at": pd.to_datetime(pd.Series(["2024-12-01", None])),
            "email": ["ann@gmail.com", "bob@acme.io"],
        }
    )
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b"],
            "ordered_at": pd.to_datetime(
                [
                    "2025-01-15 10:00",
                    "2025-03-10 12:00",
                    "2025-03-31 23:59",
                    "2024-04-01 08:00",
                    "2024-12-15 00:00",
                ]
            ),
            "amount": [100.0, 50.0, 20.0, 40.0, 60.0],
            "category": ["books", "toys", "books", None, "home"],
        }
    )
    truth = pd.DataFrame({"customer_id": ["a", "b"], "churned": [0, 1]})
    data = GeneratedData(customers, orders, truth, GeneratorConfig())
    got = training_snapshot(data, as_of=date(2025, 3, 31)).set_index(ID)
    assert list(got.loc["a", list(NUMERIC_FEATURES)]) == [0, 70, 170, 170, 0.75, 2, 120]
    assert list(got.loc["b", list(NUMERIC_FEATURES)]) == pytest.approx(
        [106, 0, 0, 100, 2 * 30 / 364, 1, 364]
    )
    assert got[CATEGORICAL_FEATURE].tolist() == ["free", "business"]
