"""Unit tests for ChurnMLP: size, outputs, in-model preprocessing, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from churn_assets.ml.features import ModelInputs, to_model_inputs
from churn_assets.ml.model import (
    SPEC_FILE,
    WEIGHTS_FILE,
    ChurnMLP,
    ModelSpec,
    count_parameters,
    load_model,
    predict_proba,
    save_model,
)
from tests.unit._features import default_run


def _inputs(n: int = 50) -> ModelInputs:
    return to_model_inputs(default_run().snapshot.head(n))


def test_churn_mlp_default_has_409_trainable_parameters() -> None:
    # 11 inputs (7 numeric + 4 one-hot) -> 16 -> 12 -> 1: 192 + 204 + 13.
    assert count_parameters(ChurnMLP()) == 409


def test_count_parameters_ignores_frozen_parameters_and_buffers() -> None:
    model = ChurnMLP()
    model.mlp[0].weight.requires_grad_(False)
    assert count_parameters(model) == 409 - 11 * 16


def test_churn_mlp_returns_one_float32_probability_per_row() -> None:
    torch.manual_seed(0)
    model = ChurnMLP().eval()
    prob = predict_proba(model, _inputs(37))
    assert prob.shape == (37,)
    assert prob.dtype == np.float32
    assert ((prob > 0) & (prob < 1)).all()


def test_churn_mlp_forward_is_sigmoid_of_logits() -> None:
    model = ChurnMLP().eval()
    inputs = _inputs()
    numeric, category = torch.from_numpy(inputs.numeric), torch.from_numpy(inputs.category)
    torch.testing.assert_close(
        model(numeric, category), torch.sigmoid(model.logits(numeric, category))
    )


def test_fit_preprocessing_standardises_logged_training_features() -> None:
    model = ChurnMLP()
    inputs = _inputs(500)
    model.fit_preprocessing(inputs)
    with torch.no_grad():
        scaled = model.features(torch.from_numpy(inputs.numeric), torch.from_numpy(inputs.category))
    numeric_part = scaled[:, :7].double()
    torch.testing.assert_close(
        numeric_part.mean(0), torch.zeros(7, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        numeric_part.std(0, correction=0), torch.ones(7, dtype=torch.float64), atol=1e-4, rtol=0
    )
    # Revenue is log1p'd first; cart_diversity (a small count) is not.
    expected_mean = np.log1p(inputs.numeric[:, 1].astype(np.float64)).mean()
    assert model.mean[1].item() == pytest.approx(expected_mean, rel=1e-5)
    assert model.mean[5].item() == pytest.approx(inputs.numeric[:, 5].mean(), rel=1e-5)


def test_fit_preprocessing_keeps_constant_columns_finite() -> None:
    inputs = _inputs(20)
    constant = ModelInputs(np.ones_like(inputs.numeric), inputs.category)
    model = ChurnMLP()
    model.fit_preprocessing(constant)
    assert np.isfinite(predict_proba(model.eval(), constant)).all()


def test_churn_mlp_one_hot_selects_the_category_row() -> None:
    model = ChurnMLP()
    feats = model.features(torch.zeros(4, 7), torch.tensor([3, 0, 2, 1]))
    torch.testing.assert_close(feats[:, 7:], torch.eye(4)[[3, 0, 2, 1]])


def test_save_and_load_model_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = default_run().result.model
    inputs = _inputs(200)
    directory = save_model(model, tmp_path / "model")
    assert {p.name for p in directory.iterdir()} == {WEIGHTS_FILE, SPEC_FILE}
    loaded = load_model(directory)
    assert not loaded.training
    assert loaded.spec == model.spec
    np.testing.assert_array_equal(predict_proba(loaded, inputs), predict_proba(model, inputs))


def test_model_spec_json_round_trip_and_rejects_unknown_keys() -> None:
    spec = ModelSpec(hidden_sizes=(8, 4), dropout=0.1)
    assert ModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unexpected"):
        ModelSpec.from_json(spec.to_json().replace('"dropout"', '"drop"'))


def test_predict_proba_refuses_a_model_in_training_mode() -> None:
    with pytest.raises(ValueError, match="eval"):
        predict_proba(ChurnMLP().train(), _inputs(3))
