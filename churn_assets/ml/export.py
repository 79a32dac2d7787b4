"""ONNX export of ``ChurnMLP`` and an onnxruntime scorer for serving.

The exported graph takes raw feature values (preprocessing is part of the model):

* ``numeric``: float32 [batch, 7] in ``NUMERIC_FEATURES`` order,
* ``email_domain_class``: int64 [batch], an index into ``EMAIL_DOMAIN_CLASSES``,
* output ``churn_probability``: float32 [batch].

Feature order and vocabulary are also written to the model's ``metadata_props`` so a
consumer can check it feeds columns in the order the model was trained on.

By default the exported graph is ``serving_module(model)``: the standardisation and the
one-hot are folded into the first layer's weights (exact algebra, ~1e-7 apart in float32).
That removes the Where/Sub/Div/Concat passes over the batch and made onnxruntime ~2x faster
on 100k-row batches (see ``benchmarks/RESULTS.md``); torch eager gains nothing from it there.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from churn_assets.ml.features import ModelInputs
from churn_assets.ml.model import ChurnMLP, predict_proba

NUMERIC_INPUT = "numeric"
CATEGORY_INPUT = "email_domain_class"
OUTPUT = "churn_probability"
META_NUMERIC_FEATURES = "numeric_features"
META_CATEGORICAL_FEATURE = "categorical_feature"
META_CATEGORIES = "categories"
META_LOG1P_FEATURES = "log1p_features"
META_FOLDED = "preprocessing_folded"


class _FoldedChurnMLP(nn.Module):
    """Inference-only ``ChurnMLP`` with preprocessing folded into the first linear layer.

    With ``s = (t(x) - mean) / std`` and ``t`` = log1p on the masked columns, the first layer
    ``W_num s + W_cat onehot(c) + b`` equals
    ``log1p(x) A + x B + E[c]`` where ``A``/``B`` are ``(W_num / std)^T`` restricted to the
    logged/linear columns and ``E[c] = W_cat[:, c] + b - W_num (mean / std)`` (one row per
    category). Inputs must be >= 0 (``to_model_inputs`` enforces it): log1p runs on every
    column and a NaN times a zero weight would still be NaN.
    """

    w_log: torch.Tensor
    w_linear: torch.Tensor
    category_bias: torch.Tensor

    def __init__(self, model: ChurnMLP) -> None:
        super().__init__()
        first = model.mlp[0]
        if not isinstance(first, nn.Linear):
            raise TypeError(f"expected the MLP to start with nn.Linear, got {type(first)}")
        n_numeric = len(model.spec.numeric_features)
        with torch.no_grad():
            # float64 for the algebra, so folding adds no error beyond the final rounding.
            weight, bias = first.weight.double(), first.bias.double()
            mean, std = model.mean.double(), model.std.double()
            w_numeric = weight[:, :n_numeric] / std
            logged = model.log_mask.double()
            w_log = (w_numeric * logged).T
            w_linear = (w_numeric * (1.0 - logged)).T
            category_bias = weight[:, n_numeric:].T + bias - w_numeric @ mean
        self.register_buffer("w_log", w_log.float().contiguous())
        self.register_buffer("w_linear", w_linear.float().contiguous())
        self.register_buffer("category_bias", category_bias.float().contiguous())
        self.rest = copy.deepcopy(model.mlp[1:]).eval()

    def forward(self, numeric: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        # Nested as matmul-plus-addend twice so onnxruntime fuses each pair into one Gemm.
        linear_part = numeric @ self.w_linear + self.category_bias[category]
        hidden = torch.log1p(numeric) @ self.w_log + linear_part
        return torch.sigmoid(self.rest(hidden).squeeze(-1))


def serving_module(model: ChurnMLP) -> nn.Module:
    """The graph ``export_onnx`` exports: same inputs and outputs as ``model``, in eval mode,
    with preprocessing folded into the first layer (a copy; ``model`` is not changed)."""
    return _FoldedChurnMLP(model).eval()


def export_onnx(
    model: ChurnMLP, path: Path | str, opset: int = 17, *, fold_preprocessing: bool = True
) -> None:
    """Export ``model`` to ``path`` (dynamic batch axis), add metadata, run the checker.

    ``fold_preprocessing=False`` exports the module exactly as trained (slower graph, kept
    for comparison and debugging).

    Uses the TorchScript exporter (``dynamo=False``): the torch.export-based one needs
    ``onnxscript``, which is not a dependency, and this graph (elementwise ops, Gather, Gemm)
    has no control flow that would need it. torch 2.13 flags that exporter as deprecated;
    those two known notices are silenced here so they do not repeat in every pipeline run.
    Any other warning still surfaces.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    n_numeric = len(model.spec.numeric_features)
    example = (torch.zeros(2, n_numeric), torch.zeros(2, dtype=torch.int64))
    batch = {0: "batch"}
    graph = serving_module(model) if fold_preprocessing else model
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="You are using the legacy TorchScript-based ONNX export"
            )
            warnings.filterwarnings("ignore", message="The feature will be removed")
            torch.onnx.export(
                graph,
                example,
                str(out),
                input_names=[NUMERIC_INPUT, CATEGORY_INPUT],
                output_names=[OUTPUT],
                dynamic_axes={NUMERIC_INPUT: batch, CATEGORY_INPUT: batch, OUTPUT: batch},
                opset_version=opset,
                dynamo=False,
            )
    finally:
        model.train(was_training)

    proto = onnx.load(str(out))
    spec = model.spec
    metadata = {
        META_NUMERIC_FEATURES: json.dumps(list(spec.numeric_features)),
        META_CATEGORICAL_FEATURE: spec.categorical_feature,
        META_CATEGORIES: json.dumps(list(spec.categories)),
        META_LOG1P_FEATURES: json.dumps(list(spec.log1p_features)),
        META_FOLDED: json.dumps(fold_preprocessing),
    }
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = "Churn probability from raw customer features (churn_assets.ml)."
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))


def onnx_metadata(path: Path | str) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


class OnnxScorer:
    """Batch scoring with onnxruntime on CPU.

    ``intra_op_threads`` defaults to onnxruntime's choice (all cores); graph optimisations
    are fully enabled, since the session is built once and used for many batches.
    """

    def __init__(self, path: Path | str, intra_op_threads: int | None = None) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in self.session.get_inputs()}
        if names != {NUMERIC_INPUT, CATEGORY_INPUT}:
            raise ValueError(f"{self.path} has inputs {sorted(names)}, not a churn model")
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = {META_NUMERIC_FEATURES, META_CATEGORIES} - set(meta)
        if missing:
            raise ValueError(f"{self.path} lacks metadata {sorted(missing)}; use export_onnx")
        self.numeric_features: tuple[str, ...] = tuple(json.loads(meta[META_NUMERIC_FEATURES]))
        self.categories: tuple[str, ...] = tuple(json.loads(meta[META_CATEGORIES]))

    def predict(self, inputs: ModelInputs) -> npt.NDArray[np.float32]:
        """Churn probabilities [N] (float32) for ``inputs``."""
        (prob,) = self.session.run(
            [OUTPUT], {NUMERIC_INPUT: inputs.numeric, CATEGORY_INPUT: inputs.category}
        )
        out: npt.NDArray[np.float32] = np.asarray(prob, dtype=np.float32)
        return out


def parity_max_abs_diff(model: ChurnMLP, onnx_path: Path | str, inputs: ModelInputs) -> float:
    """Largest absolute difference between torch eager and onnxruntime on the same inputs."""
    was_training = model.training
    model.eval()
    try:
        expected = predict_proba(model, inputs)
    finally:
        model.train(was_training)
    got = OnnxScorer(onnx_path).predict(inputs)
    if got.shape != expected.shape:
        raise ValueError(f"shape mismatch: torch {expected.shape} vs onnx {got.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in chunks (for artefact provenance)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
