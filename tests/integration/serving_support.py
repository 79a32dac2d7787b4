"""Helpers the scorer's tests share: waiting, request payloads and a private registry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from churn_assets.ml import tracking
from churn_assets.ml.artifacts import HOLDOUT_FILE, ONNX_FILE, REFERENCE_FILE
from churn_assets.ml.champion import CHAMPION
from churn_assets.ml.export import sha256_file
from churn_assets.ml.features import CATEGORICAL_FEATURE, NUMERIC_FEATURES
from churn_assets.serving.model_store import ChampionHolder

WAIT_SECONDS = 60.0
PASSED = {"holdout ROC AUC": {"passed": True}, "ONNX parity": {"passed": True}}
FAILED = {"holdout ROC AUC": {"passed": False}, "ONNX parity": {"passed": True}}


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus scrape as {(sample name, labels): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def payload(row: pd.Series) -> dict[str, Any]:
    """A frame row as the JSON `features` object (plain floats and the class string)."""
    out: dict[str, Any] = {name: float(row[name]) for name in NUMERIC_FEATURES}
    out[CATEGORICAL_FEATURE] = str(row[CATEGORICAL_FEATURE])
    return out


@dataclass(frozen=True)
class Registry:
    """A private MLflow store: the demo's ONNX file, a second model trained with another
    seed, and deliberately unusable versions, so moving its aliases disturbs no other test."""

    uri: str
    version: dict[str, str]  # label -> registered version
    onnx: dict[str, Path]  # label -> local copy of the registered file

    def point(self, alias: str, label: str) -> None:
        MlflowClient(self.uri).set_registered_model_alias(
            tracking.REGISTERED_MODEL_NAME, alias, self.version[label]
        )

    def point_champion(self, label: str) -> None:
        self.point(CHAMPION, label)

    def holder(self, poll_seconds: float = 5.0) -> ChampionHolder:
        """A holder already serving the "demo" version."""
        self.point_champion("demo")
        holder = ChampionHolder.from_mlflow(self.uri, poll_seconds=poll_seconds)
        assert holder.refresh(), holder.state().last_error
        return holder


def build_registry(root: Path, demo_model_dir: Path) -> Registry:
    from churn_assets.ml.export import export_onnx
    from churn_assets.ml.train import TrainConfig, train

    # A second, genuinely different model: other seed, smaller network, same features.
    reference = pd.read_parquet(demo_model_dir / REFERENCE_FILE)
    retrained = train(reference, TrainConfig(seed=7, hidden_sizes=(8,), max_epochs=20)).model
    export_onnx(retrained, root / "retrained" / ONNX_FILE)
    garbage = root / "garbage" / ONNX_FILE
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not an onnx model\n" * 10)

    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = tracking.ensure_experiment(
        MlflowClient(uri), tracking.EXPERIMENT_NAME, (root / "artifacts").as_uri()
    )

    def register(onnx: Path, gates: dict[str, dict[str, bool]], sha: str | None = None) -> str:
        log = tracking.TrainingRunLog({}, {}, {}, (demo_model_dir / HOLDOUT_FILE,))
        run_id = tracking.log_training_run(uri, experiment_id, "serving-test", log)
        source = tracking.log_onnx_artifact(uri, run_id, onnx)
        tags = {
            tracking.TAG_GATES: json.dumps(gates),
            tracking.TAG_ONNX_SHA256: sha or sha256_file(onnx),
        }
        return tracking.register_version(uri, source, run_id, tags, "serving test")

    demo_onnx = demo_model_dir / ONNX_FILE
    files = {
        "demo": (demo_onnx, PASSED, None),
        "retrained": (root / "retrained" / ONNX_FILE, PASSED, None),
        "hash_mismatch": (demo_onnx, PASSED, "0" * 64),
        "failed_gates": (demo_onnx, FAILED, None),
        "not_onnx": (garbage, PASSED, None),
    }
    version = {label: register(*spec) for label, spec in files.items()}
    return Registry(uri, version, {label: spec[0] for label, spec in files.items()})
