"""One training run end to end, as a pure function: split, train, evaluate, write artefacts.

The Dagster asset calls this and only adds storage and metadata; tests call it directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from churn_assets.ml.artifacts import CARD_FACTS_FILE, CARD_FILE, HOLDOUT_FILE, REFERENCE_FILE
from churn_assets.ml.evaluate import (
    CardFacts,
    calibration_png,
    calibration_summary,
    card_facts,
    evaluate,
    oracle_auc,
    render_card,
    roc_curve_png,
)
from churn_assets.ml.features import ID, labels, split_holdout, to_model_inputs
from churn_assets.ml.gates import auc_gate, parity_gate
from churn_assets.ml.model import count_parameters, predict_proba, save_model
from churn_assets.ml.reference import compare_with_reference
from churn_assets.ml.train import TrainConfig, train
from churn_assets.policy import Policy

GROUND_TRUTH_FILES = ("ground_truth.parquet", "ground_truth.csv")


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run produced; the files are in the output directory.

    ``metrics`` holds the MLP's holdout metrics (``Metrics``) plus ``reference_auc`` (the
    logistic-regression reference on the same holdout), ``ece`` and
    ``mean_predicted_probability`` (calibration on the holdout): all go to MLflow as metrics.
    """

    metrics: dict[str, float]
    oracle_auc: float | None
    data_as_of: str
    n_parameters: int
    best_epoch: int
    params: dict[str, Any]
    artifacts: tuple[Path, ...]


def read_ground_truth(directory: Path) -> pd.DataFrame | None:
    """The generator's hidden truth next to the raw files, if there is one."""
    for name in GROUND_TRUTH_FILES:
        path = directory / name
        if path.is_file():
            if path.suffix == ".csv":
                return pd.read_csv(path, dtype={ID: str})
            return pd.read_parquet(path)
    return None


def train_and_evaluate(
    dataset: pd.DataFrame,
    out_dir: Path,
    *,
    seed: int,
    holdout_fraction: float,
    max_epochs: int,
    ground_truth_dir: Path | None,
    policy: Policy,
) -> TrainingOutcome:
    """Train on a stratified split of ``dataset`` and write everything a model needs to
    ``out_dir``: weights + spec, holdout rows (so any later model can be scored on exactly
    them), ROC and calibration plots, the model card and the facts to re-render it. The
    logistic-regression reference is fitted on the same training part and scored on the
    same holdout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train_df, holdout = split_holdout(dataset, holdout_fraction, seed=seed)
    config = TrainConfig(seed=seed, max_epochs=max_epochs)
    result = train(train_df, config)
    y_holdout = labels(holdout)
    probabilities = predict_proba(result.model, to_model_inputs(holdout))
    metrics = evaluate(y_holdout, probabilities, result.threshold)
    calibration = calibration_summary(y_holdout, probabilities)
    # The bootstrap interval of the difference asks the promotion's question (is an AUC
    # difference on these rows real?), so it uses the promotion's resamples and confidence.
    reference = compare_with_reference(
        train_df,
        holdout,
        probabilities,
        seed=seed,
        n_bootstrap=policy.promotion_bootstrap_resamples,
        confidence=policy.promotion_confidence,
    )
    as_of = ", ".join(sorted({str(v) for v in dataset["as_of"]}))
    truth = read_ground_truth(ground_truth_dir) if ground_truth_dir else None
    if truth is not None and "as_of" in truth.columns:
        # Ground truth is only comparable at its own as_of (e.g. not for an earlier period).
        truth = truth[truth["as_of"].astype(str) == as_of]
    oracle = oracle_auc(holdout[ID], truth) if truth is not None and len(truth) else None

    save_model(result.model, out_dir)
    holdout.to_parquet(out_dir / HOLDOUT_FILE, index=False)
    # The training rows are the reference the drift monitor compares new features with.
    train_df.to_parquet(out_dir / REFERENCE_FILE, index=False)
    (out_dir / "roc_curve.png").write_bytes(roc_curve_png(y_holdout, probabilities))
    (out_dir / "calibration.png").write_bytes(calibration_png(y_holdout, probabilities))
    facts = card_facts(
        result,
        metrics,
        as_of=as_of,
        n_rows=len(dataset),
        label_rate=float(labels(dataset).mean()),
        n_holdout=len(holdout),
        oracle=oracle,
        reference=reference,
        calibration=calibration,
    )
    (out_dir / CARD_FACTS_FILE).write_text(facts.to_json() + "\n")
    # Parity is measured after the export: this card shows it as not evaluated, and
    # ``write_registered_card`` replaces it once it is known.
    _write_card(out_dir, facts, policy, parity=None)
    params = {
        **{k: v for k, v in asdict(config).items() if k != "hidden_sizes"},
        "hidden_sizes": "x".join(map(str, config.hidden_sizes)),
        "holdout_fraction": holdout_fraction,
        "rows": len(dataset),
        "best_epoch": result.best_epoch,
        "pos_weight": round(result.pos_weight, 6),
        "reference_model": "logistic regression (C=1, lbfgs)",
        "reference_fit_rows": reference.n_fit,
    }
    artifacts = tuple(
        out_dir / name
        for name in (CARD_FILE, HOLDOUT_FILE, REFERENCE_FILE, "roc_curve.png", "calibration.png")
    )
    return TrainingOutcome(
        metrics={
            **{k: float(v) for k, v in metrics.as_dict().items()},
            "reference_auc": reference.auc,
            "ece": calibration.ece,
            "mean_predicted_probability": calibration.mean_predicted,
        },
        oracle_auc=oracle,
        data_as_of=as_of,
        n_parameters=count_parameters(result.model),
        best_epoch=result.best_epoch,
        params=params,
        artifacts=artifacts,
    )


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
