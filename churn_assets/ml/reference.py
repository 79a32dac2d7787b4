"""The reference model: a logistic regression on the MLP's own features and preprocessing.

Why: a 409-parameter network has to beat the obvious linear baseline on the same rows to earn
its place; without that number nobody can tell whether it does. The reference is fitted on
every evaluation and scored on exactly the MLP's holdout, so the two AUCs are paired.

Same inputs, same preprocessing idea as ``ChurnMLP`` (``model.py``): the features come from
``to_model_inputs``, ``log1p`` goes on the features the network logs (``LOG1P_FEATURES``),
the numerics are standardised with statistics of the rows the reference is fitted on, and
the email class is one-hot over ``EMAIL_DOMAIN_CLASSES``. The classifier is scikit-learn's
L2-regularised ``LogisticRegression`` with its default strength (C = 1) and no class
weights, so it needs no tuning, hence no validation split, and its probabilities are not
shifted by any weighting.

Rows: the reference is fitted on the whole training part (the MLP's fit rows *and* its
validation rows), i.e. every labelled row the MLP's pipeline consumed, the validation rows
to pick the epoch and the threshold. A fixed-strength logistic regression selects nothing,
so holding those rows back would only starve the baseline and flatter the network, the
opposite of what evidence should do; it also keeps the reference independent of how
``train`` carves its validation split.

Deterministic: lbfgs uses no randomness and the rows arrive sorted by ``customer_id``, so the
same rows give the same coefficients and AUC (``seed`` is passed on as ``random_state``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from churn_assets.ml.features import (
    EMAIL_DOMAIN_CLASSES,
    NUMERIC_FEATURES,
    ModelInputs,
    labels,
    to_model_inputs,
)
from churn_assets.ml.model import LOG1P_FEATURES
from churn_assets.ml.promote import paired_bootstrap_auc_diff

# Enough for lbfgs on ~11 standardised columns; the default 100 can stop short on 100k rows.
_MAX_ITER = 1000


def design_matrix(inputs: ModelInputs) -> npt.NDArray[np.float64]:
    """Raw numerics (``NUMERIC_FEATURES`` order) next to the one-hot email class, float64.

    Scaling is left to the fitted pipeline, so this is a pure function of the rows.
    """
    one_hot = np.eye(len(EMAIL_DOMAIN_CLASSES))[inputs.category]
    return np.hstack([inputs.numeric.astype(np.float64), one_hot])


def _preprocessing() -> ColumnTransformer:
    logged = [i for i, name in enumerate(NUMERIC_FEATURES) if name in LOG1P_FEATURES]
    linear = [i for i, name in enumerate(NUMERIC_FEATURES) if name not in LOG1P_FEATURES]
    one_hot = list(range(len(NUMERIC_FEATURES), len(NUMERIC_FEATURES) + len(EMAIL_DOMAIN_CLASSES)))
    return ColumnTransformer(
        [
            (
                "log1p_scaled",
                make_pipeline(
                    FunctionTransformer(np.log1p, feature_names_out="one-to-one"), StandardScaler()
                ),
                logged,
            ),
            ("scaled", StandardScaler(), linear),
            ("email_class", "passthrough", one_hot),
        ]
    )


@dataclass(frozen=True)
class ReferenceModel:
    """A fitted reference pipeline (preprocessing + logistic regression)."""

    pipeline: Pipeline
    n_fit: int

    def predict_proba(self, inputs: ModelInputs) -> npt.NDArray[np.float64]:
        """Churn probability per row."""
        out: npt.NDArray[np.float64] = self.pipeline.predict_proba(design_matrix(inputs))[:, 1]
        return out


def fit_reference(train_df: pd.DataFrame, seed: int) -> ReferenceModel:
    """Fit the reference on ``train_df`` (the training part; never the holdout)."""
    y = labels(train_df)
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("the reference model needs churners and stayers in its fit rows")
    pipeline = Pipeline(
        [
            ("preprocess", _preprocessing()),
            ("logistic", LogisticRegression(C=1.0, max_iter=_MAX_ITER, random_state=seed)),
        ]
    )
    pipeline.fit(design_matrix(to_model_inputs(train_df)), y)
    return ReferenceModel(pipeline=pipeline, n_fit=int(y.size))


@dataclass(frozen=True)
class ReferenceResult:
    """The reference's holdout numbers, next to the MLP's in metadata, MLflow and the card.

    ``diff_interval`` is the paired bootstrap interval (at ``confidence``) of
    AUC(MLP) - AUC(reference) on the holdout, or None when the holdout has too few rows of
    a class for one; it says whether the difference is more than sampling noise.
    """

    auc: float
    n_fit: int
    diff_interval: tuple[float, float] | None
    confidence: float


def compare_with_reference(
    train_df: pd.DataFrame,
    holdout: pd.DataFrame,
    mlp_probabilities: npt.ArrayLike,
    *,
    seed: int,
    n_bootstrap: int,
    confidence: float,
) -> ReferenceResult:
    """Fit the reference on ``train_df`` and score it on exactly ``holdout``, the rows
    ``mlp_probabilities`` belong to (same order)."""
    model = fit_reference(train_df, seed)
    y = labels(holdout)
    reference = model.predict_proba(to_model_inputs(holdout))
    try:
        _, low, high = paired_bootstrap_auc_diff(
            y,
            mlp_probabilities,
            reference,
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            seed=seed,
        )
        interval: tuple[float, float] | None = (low, high)
    except ValueError:  # too few rows of a class for a bootstrap interval
        interval = None
    return ReferenceResult(
        auc=float(roc_auc_score(y, reference)),
        n_fit=model.n_fit,
        diff_interval=interval,
        confidence=confidence,
    )
