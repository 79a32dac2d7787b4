"""Feature contract between the dbt ``training_snapshot``/``customer_features`` and the model.

The features themselves are computed once, in dbt SQL, and named once, in
``churn_assets/schema.py``; this module converts a DataFrame to the arrays the model takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

# The vocabulary lives below every layer (churn_assets/schema.py); re-exported for ml/.
from churn_assets.schema import (
    CATEGORICAL_FEATURE as CATEGORICAL_FEATURE,
)
from churn_assets.schema import (
    EMAIL_DOMAIN_CLASSES as EMAIL_DOMAIN_CLASSES,
)
from churn_assets.schema import (
    FEATURE_DESCRIPTIONS as FEATURE_DESCRIPTIONS,
)
from churn_assets.schema import (
    ID as ID,
)
from churn_assets.schema import (
    LABEL as LABEL,
)
from churn_assets.schema import (
    NUMERIC_FEATURES as NUMERIC_FEATURES,
)
from churn_assets.schema import (
    UNKNOWN_CLASS as UNKNOWN_CLASS,
)


@dataclass(frozen=True)
class ModelInputs:
    """What the model (torch or ONNX) takes: raw feature values, in ``NUMERIC_FEATURES`` order.

    ``numeric`` is float32 [N, 7]; ``category`` is int64 [N], an index into
    ``EMAIL_DOMAIN_CLASSES``.
    """

    numeric: npt.NDArray[np.float32]
    category: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.numeric.dtype != np.float32 or self.numeric.ndim != 2:
            shape = self.numeric.shape
            raise ValueError(f"numeric must be float32 [N, 7], got {self.numeric.dtype} {shape}")
        if self.numeric.shape[1] != len(NUMERIC_FEATURES):
            n_cols = self.numeric.shape[1]
            raise ValueError(f"numeric must have {len(NUMERIC_FEATURES)} columns, got {n_cols}")
        if self.category.dtype != np.int64 or self.category.shape != (self.numeric.shape[0],):
            raise ValueError(
                f"category must be int64 [{self.numeric.shape[0]}], "
                f"got {self.category.dtype} {self.category.shape}"
            )

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def take(self, index: npt.NDArray[np.int64]) -> ModelInputs:
        """The rows at ``index`` (e.g. a batch), as new contiguous arrays."""
        return ModelInputs(
            numeric=np.ascontiguousarray(self.numeric[index]),
            category=np.ascontiguousarray(self.category[index]),
        )


def to_model_inputs(df: pd.DataFrame) -> ModelInputs:
    """Convert a feature frame (training snapshot or scoring features) to ``ModelInputs``.

    A category outside ``EMAIL_DOMAIN_CLASSES`` (or missing) maps to ``"unknown"``: a new
    email class at scoring time must not crash serving, and "unknown" is the class the model
    already treats as "no usable email information". Raises ``ValueError`` naming any missing
    column, and on missing, infinite or negative numeric values, because every numeric feature
    is a non-negative count, sum or duration by construction and the model's log1p would turn
    a violation into a silent NaN score.
    """
    required = (*NUMERIC_FEATURES, CATEGORICAL_FEATURE)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"feature frame is missing column(s): {', '.join(missing)}")

    numeric64 = df.loc[:, list(NUMERIC_FEATURES)].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numeric64) | (numeric64 < 0)
    if bad.any():
        columns = [NUMERIC_FEATURES[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise ValueError(
            f"numeric features must be finite and >= 0; violated in column(s): "
            f"{', '.join(columns)} ({int(bad.any(axis=1).sum())} row(s))"
        )

    # Codes are -1 for missing values and values outside the vocabulary.
    codes = pd.Categorical(df[CATEGORICAL_FEATURE], categories=EMAIL_DOMAIN_CLASSES).codes
    category = np.where(codes < 0, EMAIL_DOMAIN_CLASSES.index(UNKNOWN_CLASS), codes)
    category = category.astype(np.int64)
    return ModelInputs(numeric=numeric64.astype(np.float32), category=category)


def labels(df: pd.DataFrame) -> npt.NDArray[np.int64]:
    """The 0/1 label column as int64; raises ``ValueError`` if missing or not binary."""
    if LABEL not in df.columns:
        raise ValueError(f"frame is missing the label column {LABEL!r}")
    y = df[LABEL].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"label column {LABEL!r} must contain only 0 and 1")
    return y.astype(np.int64)


def stratified_mask(
    y: npt.NDArray[np.int64], fraction: float, rng: np.random.Generator
) -> npt.NDArray[np.bool_]:
    """Boolean mask selecting ``round(fraction * n_class)`` rows of each class at random."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    mask = np.zeros(y.shape[0], dtype=bool)
    for value in (0, 1):  # fixed order: the rng stream must not depend on dict/set order
        rows = np.flatnonzero(y == value)
        n_pick = round(fraction * rows.size)
        mask[rng.permutation(rows)[:n_pick]] = True
    return mask


def split_holdout(
    df: pd.DataFrame, holdout_fraction: float = 0.2, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a labelled frame into (train, holdout), stratified by ``churned``.

    How: rows are first sorted by their key, ``(as_of, customer_id)`` (``customer_id`` alone
    for a frame without ``as_of``), so the result does not depend on the order the warehouse
    returned them in; then, separately for label 0 and label 1,
    ``round(holdout_fraction * n_label)`` rows are drawn with ``np.random.default_rng(seed)``.
    Both parts therefore keep the overall label rate (up to rounding), are disjoint, cover
    every row, and are identical for the same rows and seed. Both come back sorted by the key
    with a fresh index. Keys must be unique (one row per customer and period), otherwise the
    order of duplicates would leak into the split. A stack of periods repeats customers: the
    same customer may then land in both parts in different periods.
    """
    if ID not in df.columns:
        raise ValueError(f"frame is missing the id column {ID!r}")
    key = ["as_of", ID] if "as_of" in df.columns else [ID]
    if df.duplicated(subset=key).any():
        raise ValueError(f"{' and '.join(key)} must be unique to split reproducibly")
    ordered = df.sort_values(key, kind="mergesort").reset_index(drop=True)
    holdout = stratified_mask(labels(ordered), holdout_fraction, np.random.default_rng(seed))
    train = ordered.loc[~holdout].reset_index(drop=True)
    return train, ordered.loc[holdout].reset_index(drop=True)
