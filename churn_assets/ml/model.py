"""The churn network: preprocessing and a small MLP in one ``nn.Module``.

Preprocessing lives inside the model so the exported ONNX graph takes raw feature values
(exactly the columns of ``marts.customer_features``) and serving cannot drift from training:

1. ``log1p`` on the skewed non-negative numerics (revenues, recency, frequency, lifetime):
   they are heavy-tailed (a few customers spend 100x the median), which otherwise lets a
   handful of rows dominate the first layer;
2. standardisation with mean/std buffers fitted on the training rows (after the log);
3. one-hot of the email-class index by indexing an identity buffer (a plain ``Gather`` in
   ONNX, unlike ``F.one_hot``);
4. an MLP: 11 inputs -> 16 -> 12 -> 1 with ReLU by default (409 trainable parameters).
   The data has ~700 training rows on the demo, so the net is kept small; capacity beyond a
   logistic regression only pays off for the interactions (e.g. recency x frequency).

Models are never pickled: ``save_model`` writes the ``state_dict`` plus the ``ModelSpec`` as
JSON, and ``load_model`` rebuilds the module from the spec and loads weights with
``weights_only=True``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    NUMERIC_FEATURES,
    ModelInputs,
)

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "spec.json"
# cart_diversity is a small bounded count (0..8), so it stays linear.
LOG1P_FEATURES: tuple[str, ...] = (
    "days_since_last_order",
    "total_revenue_30d",
    "total_revenue_90d",
    "total_revenue_365d",
    "order_frequency",
    "customer_lifetime_days",
)
# A constant training column has std 0; dividing by it would make every score NaN.
_MIN_STD = 1e-6


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a ``ChurnMLP`` before loading its weights."""

    hidden_sizes: tuple[int, ...] = (16, 12)
    dropout: float = 0.0
    numeric_features: tuple[str, ...] = NUMERIC_FEATURES
    log1p_features: tuple[str, ...] = LOG1P_FEATURES
    categorical_feature: str = CATEGORICAL_FEATURE
    categories: tuple[str, ...] = EMAIL_DOMAIN_CLASSES

    def __post_init__(self) -> None:
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be non-empty and positive: {self.hidden_sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        unknown = set(self.log1p_features) - set(self.numeric_features)
        if unknown:
            raise ValueError(f"log1p_features not in numeric_features: {sorted(unknown)}")
        if not self.categories:
            raise ValueError("categories must not be empty")

    @property
    def n_inputs(self) -> int:
        return len(self.numeric_features) + len(self.categories)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        raw: dict[str, Any] = json.loads(text)
        expected = {f.name for f in fields(cls)}
        if set(raw) != expected:
            raise ValueError(
                f"model spec keys differ: missing {sorted(expected - set(raw))}, "
                f"unexpected {sorted(set(raw) - expected)}"
            )
        # JSON has no tuples; the spec is frozen and hashable only with tuples.
        converted: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()
        }
        return cls(**converted)


class ChurnMLP(nn.Module):
    """Raw features in, churn probability out; see the module docstring for the layers."""

    log_mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    one_hot: torch.Tensor

    def __init__(self, spec: ModelSpec | None = None) -> None:
        super().__init__()
        self.spec = ModelSpec() if spec is None else spec
        n_numeric = len(self.spec.numeric_features)
        mask = [name in self.spec.log1p_features for name in self.spec.numeric_features]
        # Derived from the spec, so not persisted; mean/std are fitted and saved with weights.
        self.register_buffer("log_mask", torch.tensor(mask), persistent=False)
        self.register_buffer("one_hot", torch.eye(len(self.spec.categories)), persistent=False)
        self.register_buffer("mean", torch.zeros(n_numeric))
        self.register_buffer("std", torch.ones(n_numeric))

        layers: list[nn.Module] = []
        width = self.spec.n_inputs
        for hidden in self.spec.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if self.spec.dropout > 0:
                layers.append(nn.Dropout(self.spec.dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def _log_transform(self, numeric: torch.Tensor) -> torch.Tensor:
        return torch.where(self.log_mask, torch.log1p(numeric), numeric)

    def fit_preprocessing(self, inputs: ModelInputs) -> None:
        """Set the standardisation buffers from training rows (mean/std after the log)."""
        if len(inputs) == 0:
            raise ValueError("cannot fit preprocessing on zero rows")
        with torch.no_grad():
            logged = self._log_transform(torch.from_numpy(inputs.numeric)).double()
            mean = logged.mean(dim=0)
            std = logged.std(dim=0, correction=0).clamp_min(_MIN_STD)
            self.mean.copy_(mean.float())
            self.std.copy_(std.float())

    def features(self, numeric: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """The MLP's input: standardised (logged) numerics next to the one-hot email class."""
        scaled = (self._log_transform(numeric) - self.mean) / self.std
        return torch.cat([scaled, self.one_hot[category]], dim=1)

    def logits(self, numeric: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """Churn logits [N]; train on these with ``BCEWithLogitsLoss`` (numerically stable)."""
        out: torch.Tensor = self.mlp(self.features(numeric, category)).squeeze(-1)
        return out

    def forward(self, numeric: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """Churn probability [N], float32."""
        return torch.sigmoid(self.logits(numeric, category))


def predict_proba(model: ChurnMLP, inputs: ModelInputs) -> npt.NDArray[np.float32]:
    """Score with torch eager in inference mode; the model must be in eval mode."""
    if model.training:
        raise ValueError("call model.eval() before scoring (dropout would make scores random)")
    with torch.inference_mode():
        prob = model(torch.from_numpy(inputs.numeric), torch.from_numpy(inputs.category))
    out: npt.NDArray[np.float32] = prob.numpy().copy()
    return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as mean/std are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model: ChurnMLP, directory: Path | str) -> Path:
    """Write ``weights.pt`` (state_dict) and ``spec.json`` into ``directory``; returns it."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    (out / SPEC_FILE).write_text(model.spec.to_json() + "\n", encoding="utf-8")
    return out


def load_model(directory: Path | str) -> ChurnMLP:
    """Rebuild a ``ChurnMLP`` from ``spec.json`` and load ``weights.pt``; in eval mode."""
    source = Path(directory)
    spec = ModelSpec.from_json((source / SPEC_FILE).read_text(encoding="utf-8"))
    model = ChurnMLP(spec)
    state = torch.load(source / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
