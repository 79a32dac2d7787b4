"""The release gates as pure values: what a gate is, and the three the platform judges
(holdout AUC and ONNX parity block a release; the reference comparison only warns).
Shared by the Dagster checks, the registry step and the model card."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AUC_GATE = "holdout ROC AUC"
PARITY_GATE = "ONNX parity (max abs diff vs torch)"
REFERENCE_GATE = "MLP AUC - reference AUC"


@dataclass(frozen=True)
class Gate:
    """A release gate as the caller defines it, e.g. ``Gate("holdout ROC AUC", 0.60)``.

    ``observed`` is optional so a card can list gates before they are evaluated.
    """

    name: str
    threshold: float
    comparison: Literal[">=", "<="] = ">="
    observed: float | None = None

    @property
    def passed(self) -> bool | None:
        if self.observed is None:
            return None
        if self.comparison == ">=":
            return self.observed >= self.threshold
        return self.observed <= self.threshold


def auc_gate(observed_auc: float | None, min_auc: float) -> Gate:
    """Passes when the holdout ROC AUC reaches ``min_auc``."""
    return Gate(AUC_GATE, min_auc, ">=", observed_auc)


def parity_gate(observed_diff: float | None, tolerance: float) -> Gate:
    """Passes when onnxruntime and torch agree within ``tolerance`` on every holdout row."""
    return Gate(PARITY_GATE, tolerance, "<=", observed_diff)


def reference_gate(mlp_auc: float, reference_auc: float | None, tolerance: float) -> Gate:
    """Passes unless the MLP's AUC trails the reference's by more than ``tolerance``.

    Observed is ``mlp_auc - reference_auc`` (negative: the MLP is worse); a WARN, never a
    block: on a few hundred holdout rows a small difference can be noise either way.
    """
    observed = None if reference_auc is None else mlp_auc - reference_auc
    return Gate(REFERENCE_GATE, -tolerance, ">=", observed)
