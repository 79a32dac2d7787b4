"""One training run end to end, as a pure function: split, train, evaluate, write artefacts.

The Dagster asset calls this and only adds storage and metadata; tests call it directly.

The dataset may stack several periods (cohorts), one row per customer and period. With
``holdout_as_of`` the metrics are *out of time*: measured on a period the model never saw,
which is how it will be used; a random holdout of the training periods gives the *in-time*
AUC next to it, so the difference shows what the model loses to time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import roc_auc_score

from churn_assets.ml.artifacts import (
    CARD_FACTS_FILE,
    CARD_FILE,
    HOLDOUT_FILE,
    PLOTS,
    REFERENCE_FILE,
)
from churn_assets.ml.btyd import compare_with_btyd
from churn_assets.ml.features import ID, LABEL, labels, split_holdout, to_model_inputs
from churn_assets.ml.gates import auc_gate, parity_gate
from churn_assets.ml.metrics import (
    Gains,
    calibration_png,
    calibration_summary,
    evaluate,
    gains_png,
    gains_table,
    oracle_auc,
    roc_curve_png,
)
from churn_assets.ml.model import count_parameters, predict_proba, save_model
from churn_assets.ml.model_card import CardFacts, card_facts, render_card
from churn_assets.ml.reference import compare_with_reference
from churn_assets.ml.train import TrainConfig, train
from churn_assets.policy import Policy

GROUND_TRUTH_FILES = ("ground_truth.parquet", "ground_truth.csv")
AS_OF = "as_of"


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run produced; the files are in the output directory.

    ``metrics`` holds the MLP's holdout metrics (``Metrics``) plus ``reference_auc`` (the
    logistic-regression reference on the same holdout), ``btyd_auc`` (the BG/NBD
    buy-till-you-die reference on the same holdout), ``ece`` and
    ``mean_predicted_probability`` (calibration on the holdout), ``in_time_auc`` and
    ``in_time_rows`` (a random holdout of the training periods; without ``holdout_as_of``
    that is the holdout itself), ``top_decile_gain`` and ``top_decile_lift`` (the share of
    the holdout's churners among its 10% highest scores, and their churn rate over the
    holdout's): all go to MLflow as metrics.

    ``holdout_as_of`` is the out-of-time holdout period (None: random holdout);
    ``training_as_of`` the distinct periods of the training part, sorted; ``data_as_of`` the
    newest ``as_of`` in the dataset; ``gains`` the holdout's gains and lift per decile.
    """

    metrics: dict[str, float]
    oracle_auc: float | None
    data_as_of: str
    n_parameters: int
    best_epoch: int
    params: dict[str, Any]
    artifacts: tuple[Path, ...]
    holdout_as_of: str | None = None
    training_as_of: tuple[str, ...] = ()
    gains: Gains | None = None


def read_ground_truth(directory: Path) -> pd.DataFrame | None:
    """The generator's hidden truth next to the raw files, if there is one."""
    for name in GROUND_TRUTH_FILES:
        path = directory / name
        if path.is_file():
            if path.suffix == ".csv":
                return pd.read_csv(path, dtype={ID: str})
            return pd.read_parquet(path)
    return None


def period_keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``customer_id`` replaced by ``"<as_of>|<customer_id>"``, unique per row.

    ``split_holdout`` (and ``train``'s validation split) need one row per id, for a split
    that does not depend on row order; a stack of periods has one row per customer *and
    period*. Only the split sees these keys: the model never reads the id. For a single
    period the keys sort like the ids, so the split is the one ``split_holdout`` gives.
    """
    if AS_OF not in frame.columns:
        raise ValueError(f"frame is missing the period column {AS_OF!r}")
    keys = frame[AS_OF].map(str) + "|" + frame[ID].astype(str)
    if keys.duplicated().any():
        raise ValueError(f"({AS_OF}, {ID}) must be unique: one row per customer and period")
    return frame.assign(**{ID: keys})


def split_rows(
    frame: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``split_holdout`` for a stack of periods: (rest, holdout), stratified by label and
    drawn per row (customer and period), both sorted by (as_of, customer_id)."""
    position = "__row__"
    missing = [c for c in (AS_OF, ID, LABEL) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame is missing column(s): {', '.join(missing)}")
    keyed = period_keyed(frame.loc[:, [AS_OF, ID, LABEL]]).assign(
        **{position: np.arange(len(frame))}
    )
    rest, holdout = split_holdout(keyed, fraction, seed=seed)
    original = frame.reset_index(drop=True)
    return (
        original.iloc[rest[position].to_numpy()].reset_index(drop=True),
        original.iloc[holdout[position].to_numpy()].reset_index(drop=True),
    )


def out_of_time_split(
    dataset: pd.DataFrame, holdout_as_of: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows): the holdout is every row of period ``holdout_as_of``.

    Raises ``ValueError`` naming the period when the holdout is empty or has one class (no
    AUC), when no training rows are left, or when a training period is not before the
    holdout (its labels would look past the holdout's as_of).
    """
    if AS_OF not in dataset.columns:
        raise ValueError(f"dataset is missing the period column {AS_OF!r}")
    periods = dataset[AS_OF].map(str)
    in_holdout = (periods == holdout_as_of).to_numpy()
    holdout = dataset.loc[in_holdout].sort_values(ID, kind="mergesort").reset_index(drop=True)
    training = dataset.loc[~in_holdout]
    if holdout.empty:
        known = ", ".join(sorted(periods.unique())) or "none"
        raise ValueError(
            f"out-of-time holdout period {holdout_as_of} has no rows (periods: {known})"
        )
    if holdout[ID].duplicated().any():
        raise ValueError(f"out-of-time holdout period {holdout_as_of} repeats a {ID}")
    y = labels(holdout)
    if y.min() == y.max():
        raise ValueError(
            f"out-of-time holdout period {holdout_as_of}: all {y.size:,} customers have "
            f"{LABEL} = {y[0]}; its ROC AUC needs churners and stayers"
        )
    if training.empty:
        raise ValueError(
            f"no training rows: the dataset holds only the out-of-time holdout period "
            f"{holdout_as_of}"
        )
    later = sorted(p for p in periods[~in_holdout].unique() if p > holdout_as_of)
    if later:
        raise ValueError(
            f"training period(s) {', '.join(later)} are after the out-of-time holdout "
            f"period {holdout_as_of}"
        )
    return training, holdout


def train_and_evaluate(
    dataset: pd.DataFrame,
    out_dir: Path,
    *,
    seed: int,
    holdout_fraction: float,
    max_epochs: int,
    ground_truth_dir: Path | None,
    policy: Policy,
    window_days: int,
    holdout_as_of: str | None = None,
) -> TrainingOutcome:
    """Train on ``dataset`` and write everything a model needs to ``out_dir``: weights +
    spec, holdout rows (so any later model can be scored on exactly them), ROC,
    calibration and gains plots, the model card and the facts to re-render it.

    Without ``holdout_as_of`` the holdout is a stratified random ``holdout_fraction`` of all
    rows. With it, the holdout is every row of that period (out of time; the caller passes
    only the periods eligible to train for it) and a stratified random ``holdout_fraction``
    of the other rows is held out in time. The model, the logistic-regression reference and
    the BG/NBD reference are fitted on the remaining rows and scored on the same holdout;
    ``window_days`` is the label window, the horizon of BG/NBD's P(no order).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if holdout_as_of is None:
        fitted, holdout = split_rows(dataset, holdout_fraction, seed)
        in_time = holdout
    else:
        training, holdout = out_of_time_split(dataset, holdout_as_of)
        fitted, in_time = split_rows(training, holdout_fraction, seed)
    if fitted.empty:
        raise ValueError("no rows left to fit the model on after the holdout split")
    config = TrainConfig(seed=seed, max_epochs=max_epochs)
    result = train(period_keyed(fitted), config)
    y_holdout = labels(holdout)
    probabilities = predict_proba(result.model, to_model_inputs(holdout))
    metrics = evaluate(y_holdout, probabilities, result.threshold)
    if holdout_as_of is None:
        in_time_auc = metrics.roc_auc
    else:
        in_time_auc = _auc_or_nan(
            labels(in_time), predict_proba(result.model, to_model_inputs(in_time))
        )
    calibration = calibration_summary(y_holdout, probabilities)
    gains = gains_table(y_holdout, probabilities)
    # The bootstrap interval of the difference asks the promotion's question (is an AUC
    # difference on these rows real?), so it uses the promotion's resamples and confidence.
    reference = compare_with_reference(
        fitted,
        holdout,
        probabilities,
        seed=seed,
        n_bootstrap=policy.promotion_bootstrap_resamples,
        confidence=policy.promotion_confidence,
    )
    btyd = compare_with_btyd(fitted, holdout, window_days=window_days)
    all_periods = sorted({str(v) for v in dataset[AS_OF]})
    data_as_of = all_periods[-1]
    training_as_of = tuple(p for p in all_periods if p != holdout_as_of)
    # Ground truth is only comparable at its own as_of (e.g. not for an earlier period), and
    # the holdout is one period: the out-of-time one, or the only one.
    truth_as_of = holdout_as_of or (data_as_of if len(all_periods) == 1 else None)
    truth = read_ground_truth(ground_truth_dir) if ground_truth_dir and truth_as_of else None
    if truth is not None and "as_of" in truth.columns:
        truth = truth[truth["as_of"].astype(str) == truth_as_of]
    oracle = oracle_auc(holdout[ID], truth) if truth is not None and len(truth) else None

    save_model(result.model, out_dir)
    holdout.to_parquet(out_dir / HOLDOUT_FILE, index=False)
    # The fitted rows are the reference the drift monitor compares new features with.
    fitted.to_parquet(out_dir / REFERENCE_FILE, index=False)
    roc_plot, calibration_plot, gains_plot = PLOTS
    (out_dir / roc_plot).write_bytes(roc_curve_png(y_holdout, probabilities))
    (out_dir / calibration_plot).write_bytes(calibration_png(y_holdout, probabilities))
    (out_dir / gains_plot).write_bytes(gains_png(gains))
    facts = card_facts(
        result,
        metrics,
        as_of=data_as_of,
        n_rows=len(dataset),
        label_rate=float(labels(dataset).mean()),
        n_holdout=len(holdout),
        label_window_days=window_days,
        oracle=oracle,
        reference=reference,
        btyd=btyd,
        calibration=calibration,
        holdout_as_of=holdout_as_of,
        training_as_of=training_as_of,
        in_time_auc=None if np.isnan(in_time_auc) else in_time_auc,
        n_in_time=len(in_time),
        gains=gains,
    )
    (out_dir / CARD_FACTS_FILE).write_text(facts.to_json() + "\n")
    # Parity is measured after the export: this card shows it as not evaluated, and
    # ``write_registered_card`` replaces it once it is known.
    _write_card(out_dir, facts, policy, parity=None)
    params = {
        **{k: v for k, v in asdict(config).items() if k != "hidden_sizes"},
        "hidden_sizes": "x".join(map(str, config.hidden_sizes)),
        "holdout_fraction": holdout_fraction,
        "holdout_as_of": holdout_as_of or "none (random holdout)",
        "training_periods": ",".join(training_as_of),
        "rows": len(dataset),
        "best_epoch": result.best_epoch,
        "pos_weight": round(result.pos_weight, 6),
        "reference_model": "logistic regression (C=1, lbfgs)",
        "reference_fit_rows": reference.n_fit,
        "btyd_model": "BG/NBD (scipy maximum likelihood)",
        **{f"btyd_{name}": round(value, 6) for name, value in asdict(btyd.params).items()},
    }
    artifacts = tuple(out_dir / name for name in (CARD_FILE, HOLDOUT_FILE, REFERENCE_FILE, *PLOTS))
    return TrainingOutcome(
        metrics={
            **{k: float(v) for k, v in metrics.as_dict().items()},
            "reference_auc": reference.auc,
            "btyd_auc": btyd.auc,
            "ece": calibration.ece,
            "mean_predicted_probability": calibration.mean_predicted,
            "in_time_auc": in_time_auc,
            "in_time_rows": float(len(in_time)),
            "top_decile_gain": gains.top_gain,
            "top_decile_lift": gains.top_lift,
        },
        oracle_auc=oracle,
        data_as_of=data_as_of,
        n_parameters=count_parameters(result.model),
        best_epoch=result.best_epoch,
        params=params,
        artifacts=artifacts,
        holdout_as_of=holdout_as_of,
        training_as_of=training_as_of,
        gains=gains,
    )


def _auc_or_nan(y: npt.NDArray[np.int64], probabilities: npt.NDArray[np.floating[Any]]) -> float:
    """ROC AUC, or NaN when the rows hold a single class (a tiny in-time holdout)."""
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, probabilities))


def _write_card(out_dir: Path, facts: CardFacts, policy: Policy, parity: float | None) -> Path:
    gates = [
        auc_gate(facts.metrics.roc_auc, policy.min_auc),
        parity_gate(parity, policy.parity_tolerance),
    ]
    path = out_dir / CARD_FILE
    path.write_text(render_card(facts, gates, policy.reference_auc_tolerance))
    return path


def write_registered_card(model_dir: Path, parity_max_abs_diff: float, policy: Policy) -> Path:
    """Rewrite ``model_dir``'s model card with the measured ONNX parity; returns its path.

    The registry step calls this before it registers: the card a version carries then
    shows every gate's observed value (AUC, parity), the reference model and calibration.
    A model trained before the card's facts were saved keeps its training-time card.
    """
    facts_path = model_dir / CARD_FACTS_FILE
    if not facts_path.is_file():
        return model_dir / CARD_FILE
    facts = CardFacts.from_json(facts_path.read_text())
    return _write_card(model_dir, facts, policy, parity=parity_max_abs_diff)
