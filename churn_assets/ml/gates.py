"""The release gates as pure functions, shared by the Dagster checks and the registry step."""

from __future__ import annotations

from churn_assets.ml.evaluate import Gate

AUC_GATE = "holdout ROC AUC"
PARITY_GATE = "ONNX parity (max abs diff vs torch)"


def auc_gate(observed_auc: float | None, min_auc: float) -> Gate:
    """Passes when the holdout ROC AUC reaches ``min_auc``."""
    return Gate(AUC_GATE, min_auc, ">=", observed_auc)


def parity_gate(observed_diff: float | None, tolerance: float) -> Gate:
    """Passes when onnxruntime and torch agree within ``tolerance`` on every holdout row."""
    return Gate(PARITY_GATE, tolerance, "<=", observed_diff)
