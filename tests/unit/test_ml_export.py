"""Unit tests for the ONNX export and the onnxruntime scorer."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from churn_assets.ml.export import (
    OnnxScorer,
    export_onnx,
    onnx_metadata,
    parity_max_abs_diff,
    serving_module,
    sha256_file,
)
from churn_assets.ml.features import EMAIL_DOMAIN_CLASSES, NUMERIC_FEATURES, to_model_inputs
from churn_assets.ml.model import ChurnMLP, predict_proba
from tests.unit._features import default_run


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "churn.onnx"
    export_onnx(default_run().result.model, path)
    return path


def test_export_onnx_passes_the_checker_with_named_dynamic_io(onnx_path: Path) -> None:
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    assert [i.name for i in graph.input] == ["numeric", "email_domain_class"]
    assert [o.name for o in graph.output] == ["churn_probability"]
    numeric_shape = graph.input[0].type.tensor_type.shape.dim
    assert numeric_shape[0].dim_param == "batch"
    assert numeric_shape[1].dim_value == 7
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert proto.opset_import[0].version == 17


def test_export_onnx_writes_feature_order_and_vocabulary_to_metadata(onnx_path: Path) -> None:
    meta = onnx_metadata(onnx_path)
    assert json.loads(meta["numeric_features"]) == list(NUMERIC_FEATURES)
    assert json.loads(meta["categories"]) == list(EMAIL_DOMAIN_CLASSES)
    assert meta["categorical_feature"] == "email_domain_class"
    assert meta["preprocessing_folded"] == "true"


@pytest.mark.parametrize("batch", [1, 1000])
def test_onnx_scorer_scores_any_batch_size(onnx_path: Path, batch: int) -> None:
    base = to_model_inputs(default_run().snapshot)
    inputs = base.take(np.arange(batch) % len(base))
    prob = OnnxScorer(onnx_path).predict(inputs)
    assert prob.shape == (batch,)
    assert prob.dtype == np.float32
    assert ((prob >= 0) & (prob <= 1)).all()


def test_onnx_matches_torch_within_1e6(onnx_path: Path) -> None:
    inputs = to_model_inputs(default_run().snapshot)
    assert parity_max_abs_diff(default_run().result.model, onnx_path, inputs) <= 1e-6


def test_export_onnx_without_folding_also_matches_torch(tmp_path: Path) -> None:
    path = tmp_path / "as_trained.onnx"
    export_onnx(default_run().result.model, path, fold_preprocessing=False)
    assert onnx_metadata(path)["preprocessing_folded"] == "false"
    inputs = to_model_inputs(default_run().snapshot)
    assert parity_max_abs_diff(default_run().result.model, path, inputs) <= 1e-6


def test_serving_module_equals_the_trained_model_on_extreme_inputs() -> None:
    model = default_run().result.model
    rng = np.random.default_rng(0)
    numeric = (rng.uniform(0, 1, (500, 7)) * [[3650, 1e5, 1e5, 1e6, 100, 8, 3650]]).astype(
        np.float32
    )
    numeric[:50] = 0.0  # brand-new customers: zero revenue, zero days
    category = rng.integers(0, 4, 500)
    x, c = torch.from_numpy(numeric), torch.from_numpy(category)
    folded = serving_module(model)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x, c), model(x, c), rtol=0, atol=1e-6)
    assert not folded.training


def test_onnx_scorer_orders_customers_like_torch(onnx_path: Path) -> None:
    inputs = to_model_inputs(default_run().holdout_df)
    onnx_rank = np.argsort(OnnxScorer(onnx_path, intra_op_threads=1).predict(inputs))
    torch_prob = predict_proba(default_run().result.model, inputs)
    assert np.all(np.diff(torch_prob[onnx_rank]) >= -1e-6)


def test_export_onnx_raises_no_warnings(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_onnx(default_run().result.model, tmp_path / "m.onnx")


def test_export_onnx_restores_training_mode(tmp_path: Path) -> None:
    model = ChurnMLP().train()
    export_onnx(model, tmp_path / "m.onnx")
    assert model.training


def test_sha256_file_matches_hashlib(onnx_path: Path) -> None:
    assert sha256_file(onnx_path) == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
