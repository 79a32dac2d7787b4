"""Batch scoring with onnxruntime (no Dagster): features frame in, probabilities out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from churn_assets.ml.export import OnnxScorer
from churn_assets.ml.features import to_model_inputs

DEFAULT_BATCH_ROWS = 100_000


def score_in_batches(
    scorer: OnnxScorer, features: pd.DataFrame, batch_rows: int = DEFAULT_BATCH_ROWS
) -> npt.NDArray[np.float32]:
    """Churn probabilities for every row of ``features``, ``batch_rows`` at a time.

    Batches bound the memory of the float32 input copies; 100k rows keep onnxruntime's
    per-call overhead negligible (see benchmarks/RESULTS.md).
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be >= 1")
    parts = [
        scorer.predict(to_model_inputs(features.iloc[start : start + batch_rows]))
        for start in range(0, len(features), batch_rows)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
