"""Unit tests for training on stacked periods with an out-of-time holdout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn_assets.ml.artifacts import CARD_FACTS_FILE, CARD_FILE, HOLDOUT_FILE, REFERENCE_FILE
from churn_assets.ml.features import ID, LABEL, split_holdout
from churn_assets.ml.model_card import CardFacts, render_card
from churn_assets.ml.pipeline import TrainingOutcome, split_rows, train_and_evaluate
from churn_assets.policy import Policy
from tests.unit._periods import period_frame, stacked

PERIODS = ["2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30"]
HOLDOUT = "2025-04-30"
N = 300  # customers per period
POLICY = Policy(promotion_bootstrap_resamples=200)


def _run(
    dataset: pd.DataFrame,
    out_dir: Path,
    *,
    holdout_as_of: str | None = None,
    ground_truth_dir: Path | None = None,
) -> TrainingOutcome:
    return train_and_evaluate(
        dataset,
        out_dir,
        seed=42,
        holdout_fraction=0.2,
        max_epochs=20,
        ground_truth_dir=ground_truth_dir,
        policy=POLICY,
        window_days=90,
        holdout_as_of=holdout_as_of,
    )


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path, TrainingOutcome]:
    """Three training periods with one relation, the holdout period with the reverse."""
    dataset = stacked(PERIODS, N, flip=HOLDOUT)
    out_dir = tmp_path_factory.mktemp("flipped")
    return dataset, out_dir, _run(dataset, out_dir, holdout_as_of=HOLDOUT)


def test_out_of_time_holdout_is_exactly_the_holdout_period_and_none_of_it_is_fitted(
    flipped: tuple[pd.DataFrame, Path, TrainingOutcome],
) -> None:
    dataset, out_dir, outcome = flipped
    holdout = pd.read_parquet(out_dir / HOLDOUT_FILE)
    fitted = pd.read_parquet(out_dir / REFERENCE_FILE)
    period = dataset[dataset["as_of"] == HOLDOUT]
    assert set(holdout["as_of"]) == {HOLDOUT}
    assert sorted(holdout[ID]) == sorted(period[ID])
    assert outcome.metrics["n"] == len(period)
    # The model and the reference were fitted on the reference rows: no holdout row there,
    # and the in-time holdout is the rest of the training periods.
    assert HOLDOUT not in set(fitted["as_of"])
    n_training = len(dataset) - len(period)
    assert len(fitted) + outcome.metrics["in_time_rows"] == n_training
    assert outcome.metrics["in_time_rows"] == pytest.approx(0.2 * n_training, abs=2)
    assert outcome.params["reference_fit_rows"] == len(fitted)
    assert not fitted.duplicated(["as_of", ID]).any()


def test_out_of_time_auc_shows_a_relation_that_changed_while_in_time_auc_does_not(
    flipped: tuple[pd.DataFrame, Path, TrainingOutcome],
) -> None:
    _, _, outcome = flipped
    assert outcome.metrics["roc_auc"] < 0.5  # the learned relation is reversed out of time
    assert outcome.metrics["in_time_auc"] > 0.7  # ...and holds on the training periods
    assert outcome.metrics["reference_auc"] < 0.5  # the reference is scored out of time too


def test_out_of_time_outcome_names_its_periods_in_outcome_params_and_card(
    flipped: tuple[pd.DataFrame, Path, TrainingOutcome],
) -> None:
    _, out_dir, outcome = flipped
    assert outcome.holdout_as_of == HOLDOUT
    assert outcome.training_as_of == tuple(PERIODS[:-1])
    assert outcome.data_as_of == HOLDOUT  # the newest as_of, not a list
    assert outcome.params["holdout_as_of"] == HOLDOUT
    assert outcome.params["training_periods"] == ",".join(PERIODS[:-1])
    card = (out_dir / CARD_FILE).read_text()
    assert f"every customer of period **{HOLDOUT}**" in card
    assert f"**{', '.join(PERIODS[:-1])}**" in card
    assert f"| {outcome.metrics['in_time_auc']:.4f} |" in card
    gap = outcome.metrics["roc_auc"] - outcome.metrics["in_time_auc"]
    assert f"| out-of-time minus in-time ROC AUC | {gap:+.4f} |" in card
    assert "Trained on 3 periods (2025-01-31 to 2025-03-31)" in card


def test_card_facts_keep_the_periods_and_read_older_files_without_them(
    flipped: tuple[pd.DataFrame, Path, TrainingOutcome],
) -> None:
    _, out_dir, outcome = flipped
    text = (out_dir / CARD_FACTS_FILE).read_text()
    facts = CardFacts.from_json(text)
    assert facts.training_as_of == tuple(PERIODS[:-1])
    assert facts.holdout_as_of == HOLDOUT
    assert facts.in_time_auc == outcome.metrics["in_time_auc"]
    assert CardFacts.from_json(facts.to_json()) == facts
    old = json.loads(text)
    for key in ("holdout_as_of", "training_as_of", "in_time_auc", "n_in_time"):
        del old[key]
    older = CardFacts.from_json(json.dumps(old))
    assert (older.holdout_as_of, older.training_as_of, older.in_time_auc) == (None, (), None)
    assert "No out-of-time holdout" in render_card(older)


def test_out_of_time_run_is_the_same_for_any_row_order(
    flipped: tuple[pd.DataFrame, Path, TrainingOutcome], tmp_path: Path
) -> None:
    dataset, out_dir, outcome = flipped
    again = _run(dataset.sample(frac=1.0, random_state=5), tmp_path, holdout_as_of=HOLDOUT)
    assert again.metrics == outcome.metrics
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / REFERENCE_FILE), pd.read_parquet(out_dir / REFERENCE_FILE)
    )


def test_without_holdout_period_the_split_is_the_old_random_one_and_in_time(
    tmp_path: Path,
) -> None:
    dataset = period_frame("2025-10-02", 400, seed=3)
    outcome = _run(dataset, tmp_path)
    _, expected_holdout = split_holdout(dataset, 0.2, seed=42)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / HOLDOUT_FILE), expected_holdout)
    assert outcome.metrics["in_time_auc"] == outcome.metrics["roc_auc"]
    assert outcome.metrics["in_time_rows"] == outcome.metrics["n"] == len(expected_holdout)
    assert outcome.holdout_as_of is None
    assert outcome.training_as_of == ("2025-10-02",)
    assert outcome.data_as_of == "2025-10-02"
    assert "No out-of-time holdout" in (tmp_path / CARD_FILE).read_text()


def _write_truth(directory: Path, holdout: pd.DataFrame, as_of: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    truth = pd.DataFrame(
        {
            ID: holdout[ID],
            "as_of": as_of,
            "churn_probability": rng.random(len(holdout)),
            "churned": holdout[LABEL],
        }
    )
    truth.to_csv(directory / "ground_truth.csv", index=False)
    return truth


@pytest.mark.parametrize("truth_period", [HOLDOUT, PERIODS[0]])
def test_oracle_auc_is_compared_only_at_the_holdout_period(
    truth_period: str, tmp_path: Path
) -> None:
    dataset = stacked(PERIODS[-2:], 200, seed=7)
    holdout = dataset[dataset["as_of"] == HOLDOUT]
    truth = _write_truth(tmp_path, holdout, truth_period)
    outcome = _run(dataset, tmp_path / "model", holdout_as_of=HOLDOUT, ground_truth_dir=tmp_path)
    if truth_period == HOLDOUT:
        expected = roc_auc_score(truth["churned"], truth["churn_probability"])
        assert outcome.oracle_auc == pytest.approx(expected)
    else:
        assert outcome.oracle_auc is None


@pytest.mark.parametrize(
    ("dataset", "match"),
    [
        (stacked(PERIODS[:2], 50), "period 2025-04-30 has no rows"),
        (
            pd.concat([period_frame(PERIODS[0], 50, 0), period_frame(HOLDOUT, 50, 1)]).assign(
                churned=lambda f: np.where(f["as_of"] == HOLDOUT, 0, f[LABEL])
            ),
            "period 2025-04-30: all 50 customers have churned = 0",
        ),
        (period_frame(HOLDOUT, 50, 0), "no training rows.*2025-04-30"),
        (stacked([HOLDOUT, "2025-05-31"], 50), "2025-05-31 are after .* period 2025-04-30"),
    ],
    ids=["empty", "single-class", "no-training-rows", "later-training-period"],
)
def test_out_of_time_split_refuses_what_it_cannot_measure(
    dataset: pd.DataFrame, match: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=match):
        _run(dataset, tmp_path, holdout_as_of=HOLDOUT)


def _keys(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["as_of"], frame[ID], strict=True))


def test_split_rows_draws_per_customer_and_period_whatever_the_row_order() -> None:
    dataset = stacked(PERIODS[:3], 100, seed=1)
    rest, holdout = split_rows(dataset, 0.25, seed=9)
    assert _keys(rest).isdisjoint(_keys(holdout))
    assert _keys(rest) | _keys(holdout) == _keys(dataset)
    for part in (rest, holdout):  # stratified: each part keeps the label rate
        assert part[LABEL].mean() == pytest.approx(dataset[LABEL].mean(), abs=0.01)
    again_rest, again_holdout = split_rows(dataset.sample(frac=1.0, random_state=2), 0.25, 9)
    pd.testing.assert_frame_equal(again_holdout, holdout)
    pd.testing.assert_frame_equal(again_rest, rest)
    with pytest.raises(ValueError, match="one row per customer and period"):
        split_rows(pd.concat([dataset, dataset.head(1)]), 0.25, seed=9)
