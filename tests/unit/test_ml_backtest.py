"""Unit tests for the backtest: one model per evaluated period, trained only on its past."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn_assets.ml.backtest import (
    BacktestRow,
    as_json,
    backtest_frame,
    backtest_png,
    run_backtest,
)
from churn_assets.ml.features import ID, LABEL, to_model_inputs
from churn_assets.ml.reference import fit_reference
from tests.unit._periods import stacked

PERIODS = ["2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30", "2025-05-31", "2025-06-30"]
WINDOW = 45  # longer than a month: the previous period's window is still open
ONE_CLASS = "2025-06-30"
SEED = 42


def _snapshot() -> pd.DataFrame:
    snapshot = stacked(PERIODS, 300, seed=3)
    # Nobody churned in June: its AUC cannot be measured.
    snapshot.loc[snapshot["as_of"] == ONE_CLASS, LABEL] = 0
    return snapshot


def _backtest(snapshot: pd.DataFrame) -> list[BacktestRow]:
    return run_backtest(
        snapshot,
        evaluate_periods=5,
        training_periods=2,
        window_days=WINDOW,
        seed=SEED,
        max_epochs=30,
    )


@pytest.fixture(scope="module")
def rows() -> list[BacktestRow]:
    return _backtest(_snapshot())


def test_backtest_evaluates_the_newest_periods_oldest_first(rows: list[BacktestRow]) -> None:
    assert [r.as_of for r in rows] == PERIODS[1:]
    snapshot = _snapshot()
    for row in rows:
        period = snapshot[snapshot["as_of"] == row.as_of]
        assert row.rows == len(period)
        assert row.label_rate == pytest.approx(period[LABEL].mean())


def test_backtest_trains_only_on_cohorts_whose_windows_closed_before_each_period(
    rows: list[BacktestRow],
) -> None:
    by_period = {r.as_of: r.training_periods for r in rows}
    # By hand: a period p is eligible for h when p + 45 days <= h; the newest two are used.
    assert by_period == {
        "2025-02-28": (),
        "2025-03-31": ("2025-01-31",),
        "2025-04-30": ("2025-01-31", "2025-02-28"),
        "2025-05-31": ("2025-02-28", "2025-03-31"),
        "2025-06-30": ("2025-03-31", "2025-04-30"),
    }
    for row in rows:
        h = date.fromisoformat(row.as_of)
        assert all(
            date.fromisoformat(p) + timedelta(days=WINDOW) <= h for p in row.training_periods
        )


def test_backtest_skips_with_a_reason_instead_of_raising(rows: list[BacktestRow]) -> None:
    skipped = {r.as_of: r for r in rows if r.skipped is not None}
    assert set(skipped) == {"2025-02-28", ONE_CLASS}
    assert "no training period" in (skipped["2025-02-28"].skipped or "")
    assert "single class" in (skipped[ONE_CLASS].skipped or "")
    for row in skipped.values():
        assert (row.auc, row.brier, row.reference_auc) == (None, None, None)


def test_backtest_models_learn_a_stable_signal_and_are_scored_on_their_period(
    rows: list[BacktestRow],
) -> None:
    evaluated = [r for r in rows if r.skipped is None]
    assert [r.as_of for r in evaluated] == ["2025-03-31", "2025-04-30", "2025-05-31"]
    for row in evaluated:
        assert row.auc is not None and row.auc > 0.7
        assert row.brier is not None and 0.0 < row.brier < 0.25
        assert row.reference_auc is not None and row.reference_auc > 0.7


def test_backtest_reference_is_fitted_on_exactly_the_training_cohorts(
    rows: list[BacktestRow],
) -> None:
    snapshot = _snapshot()
    row = next(r for r in rows if r.as_of == "2025-05-31")
    training = snapshot[snapshot["as_of"].isin(row.training_periods)]
    training = training.assign(**{ID: training["as_of"] + "|" + training[ID]}).sort_values(ID)
    holdout = snapshot[snapshot["as_of"] == row.as_of].sort_values(ID)
    scores = fit_reference(training, SEED).predict_proba(to_model_inputs(holdout))
    assert row.reference_auc == pytest.approx(roc_auc_score(holdout[LABEL], scores), abs=1e-9)


def test_backtest_is_deterministic_for_the_same_data_and_seed(rows: list[BacktestRow]) -> None:
    shuffled = _snapshot().sample(frac=1.0, random_state=11)
    assert _backtest(shuffled) == rows


def test_backtest_outputs_frame_json_and_png(rows: list[BacktestRow]) -> None:
    frame = backtest_frame(rows)
    assert list(frame.columns) == [
        "as_of",
        "rows",
        "label_rate",
        "auc",
        "brier",
        "reference_auc",
        "training_periods",
        "skipped",
    ]
    assert frame["as_of"].tolist() == [r.as_of for r in rows]
    assert frame.loc[frame["as_of"] == "2025-04-30", "training_periods"].item() == (
        "2025-01-31,2025-02-28"
    )
    items = as_json(rows)
    assert [set(item) for item in items] == [
        {"as_of", "rows", "label_rate", "auc", "brier", "reference_auc"}
        | ({"skipped"} if r.skipped else set())
        for r in rows
    ]
    assert items[2]["auc"] == rows[2].auc
    png = backtest_png(rows)
    assert png.startswith(b"\x89PNG")
    assert backtest_png([]).startswith(b"\x89PNG")


def test_backtest_with_as_of_dates_and_no_rows() -> None:
    snapshot = stacked(PERIODS[:3], 120, seed=5)
    snapshot["as_of"] = snapshot["as_of"].map(date.fromisoformat)
    out = run_backtest(
        snapshot, evaluate_periods=1, training_periods=6, window_days=28, seed=1, max_epochs=3
    )
    assert [(r.as_of, r.training_periods) for r in out] == [
        ("2025-03-31", ("2025-01-31", "2025-02-28"))
    ]
    assert out[0].auc is not None and np.isfinite(out[0].auc)
    assert (
        run_backtest(
            snapshot.head(0),
            evaluate_periods=1,
            training_periods=1,
            window_days=28,
            seed=1,
            max_epochs=3,
        )
        == []
    )
    with pytest.raises(ValueError, match="evaluate_periods"):
        run_backtest(
            snapshot, evaluate_periods=0, training_periods=1, window_days=28, seed=1, max_epochs=3
        )
