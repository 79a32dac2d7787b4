"""Small handles passed between the training assets (paths and facts, never the model).

The IO manager stores these handles; the models themselves live as files under
``<CHURN_HOME>/models/<dagster run id>/`` (weights as a state dict, ONNX), never pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HOLDOUT_FILE = "holdout.parquet"
REFERENCE_FILE = "reference.parquet"
ONNX_FILE = "model.onnx"
CARD_FILE = "model_card.md"
# What the card states, so the registry step can re-render it with the measured parity.
CARD_FACTS_FILE = "model_card.json"
# The holdout plots of every model directory (shown on the training asset, logged to MLflow).
PLOTS = ("roc_curve.png", "calibration.png", "gains.png")


@dataclass(frozen=True)
class TrainedModel:
    """A trained (not yet gated) model and everything needed to judge and register it."""

    model_dir: str
    dagster_run_id: str
    metrics: dict[str, float]
    oracle_auc: float | None
    data_as_of: str
    dataset_sha256: str
    trained_at: str
    n_parameters: int
    mlflow_run_id: str | None = None
    mlflow_skipped_reason: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # The raw load the dataset was built from, as MLflow tags (run id, file sha256s).
    raw_load: dict[str, str] = field(default_factory=dict)
    # The out-of-time holdout period (None: in-time holdout), the periods trained on, and
    # the newest order date known at training (ISO dates).
    holdout_as_of: str | None = None
    training_periods: tuple[str, ...] = ()
    data_through: str | None = None

    @property
    def holdout_path(self) -> Path:
        return Path(self.model_dir) / HOLDOUT_FILE


@dataclass(frozen=True)
class ExportedModel:
    """The ONNX export of a :class:`TrainedModel` and its parity with torch."""

    trained: TrainedModel
    onnx_path: str
    onnx_sha256: str
    parity_max_abs_diff: float
    mlflow_model_uri: str | None = None
