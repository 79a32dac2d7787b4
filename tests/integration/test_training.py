"""The training chain's gates, for real: blocking checks stop everything downstream.

Each test materialises the training assets (and their checks) against the demo's warehouse
with its own MLflow SQLite store, so what was (not) registered can be read back exactly.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import Result
from mlflow.tracking import MlflowClient

from churn_assets.defs.resources import (
    ExternalPostgresWarehouse,
    MlflowResource,
    labels_resource,
    policy_resource,
)
from churn_assets.defs.training.assets import (
    churn_model,
    churn_model_onnx,
    churn_model_version,
    training_dataset,
)
from churn_assets.defs.training.checks import (
    auc_gate_check,
    onnx_parity_check,
    training_data_quality,
)
from churn_assets.defs.training.reference_checks import reference_model_check
from churn_assets.infra import warehouse
from churn_assets.policy import Policy, load_policy

pytestmark = pytest.mark.integration

TRAINING_ASSETS = [
    training_dataset,
    churn_model,
    churn_model_onnx,
    churn_model_version,
    training_data_quality,
    auc_gate_check,
    onnx_parity_check,
    reference_model_check,
]


def _materialize(
    warehouse_url: str, tracking_uri: str, tmp_path: Path
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        TRAINING_ASSETS,
        resources={
            "warehouse": ExternalPostgresWarehouse(connection_url=warehouse_url),
            "mlflow": MlflowResource(
                tracking_uri=tracking_uri, artifact_location=(tmp_path / "artifacts").as_uri()
            ),
            "policy": policy_resource(),
            "labels": labels_resource(),
        },
        raise_on_error=False,
    )


def _local_store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        event.asset_key.to_user_string()
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    evaluations = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return next(e for e in evaluations if e.check_name == name)


@pytest.fixture
def demo_url(demo: tuple[Result, Path], embedded_url: str) -> str:
    """The embedded warehouse holding the demo's training snapshot."""
    assert demo[0].exit_code == 0, demo[0].output
    return embedded_url


def test_an_unreachable_auc_gate_stops_export_and_registration(
    demo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_MIN_AUC", "0.99")
    monkeypatch.setenv("CHURN_RAW_DIR", str(tmp_path / "no-ground-truth"))
    store = _local_store(tmp_path)
    result = _materialize(demo_url, store, tmp_path)
    gate = _check(result, "auc_gate_check")
    assert not gate.passed
    assert gate.metadata["threshold"].value == 0.99
    assert _materialized(result) == {"training_dataset", "churn_model"}
    client = MlflowClient(store)
    assert client.search_model_versions("name = 'churn-model'") == []
    experiment = client.get_experiment_by_name("churn")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert '"passed": false' in run.data.tags["gate.auc"]  # the failure is on record


def test_bad_training_data_blocks_training(new_database: Any, tmp_path: Path) -> None:
    # A snapshot with a customer twice in one period and too few rows: the GX check fails and
    # no model is trained from it.
    url = new_database()
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute("create schema marts")
        cur.execute(
            """
            create table marts.training_snapshot as
            select '2025-09-30'::date as as_of, id as customer_id,
                   5 as days_since_last_order, 1.0::numeric as total_revenue_30d,
                   2.0::numeric as total_revenue_90d, 3.0::numeric as total_revenue_365d,
                   0.5::float8 as order_frequency, 1 as cart_diversity,
                   'free' as email_domain_class, 100 as customer_lifetime_days,
                   (id = 'a')::int as churned
            from (values ('a'), ('b'), ('b')) as ids(id)
            """
        )
    result = _materialize(url, _local_store(tmp_path), tmp_path)
    quality = _check(result, "training_data_quality")
    assert not quality.passed
    failures = " ".join(quality.metadata["failures"].value)  # type: ignore[arg-type]
    assert "expect_compound_columns_to_be_unique: 2 unexpected" in failures
    assert "expect_table_row_count_to_be_between" in failures
    assert _materialized(result) == {"training_dataset"}


def test_unreachable_tracking_server_trains_locally_and_skips_the_registry(
    demo_url: str, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _materialize(demo_url, f"http://127.0.0.1:{port}", tmp_path)
    assert result.success
    assert _materialized(result) == {
        "training_dataset",
        "churn_model",
        "churn_model_onnx",
        "churn_model_version",
    }
    version_meta = result.asset_materializations_for_node("churn_model_version")[0].metadata
    assert version_meta["registry"].value.startswith("skipped: MLflow tracking server")
    assert "not evaluated" not in version_meta["model_card"].value  # local card: parity measured
    model_meta = result.asset_materializations_for_node("churn_model")[0].metadata
    assert model_meta["mlflow_run"].value.startswith("skipped")
    onnx = result.output_for_node("churn_model_onnx")
    assert Path(onnx.onnx_path).is_file()  # exported locally all the same
    assert onnx.parity_max_abs_diff <= 1e-6


def test_training_twice_on_the_same_data_gives_the_same_metrics(
    demo_url: str, tmp_path: Path
) -> None:
    first = _materialize(demo_url, _local_store(tmp_path / "a"), tmp_path / "a")
    second = _materialize(demo_url, _local_store(tmp_path / "b"), tmp_path / "b")
    metrics = [r.output_for_node("churn_model").metrics for r in (first, second)]
    assert metrics[0] == metrics[1]
    shas = [r.output_for_node("churn_model_onnx").onnx_sha256 for r in (first, second)]
    assert shas[0] == shas[1]
    assert load_policy() == Policy()  # the 0.99 gate of another test did not leak


def test_a_registered_version_carries_the_reference_and_a_card_with_parity_as_measured(
    demo_url: str, tmp_path: Path
) -> None:
    from churn_assets.ml import tracking

    store = _local_store(tmp_path)
    result = _materialize(demo_url, store, tmp_path)
    assert result.success
    model_meta = result.asset_materializations_for_node("churn_model")[0].metadata
    mlp_auc = model_meta["roc_auc"].value
    reference_auc = model_meta["reference_auc"].value
    assert isinstance(reference_auc, float)
    assert isinstance(mlp_auc, float)
    assert 0.6 < reference_auc <= 1.0
    assert model_meta["auc_minus_reference"].value == pytest.approx(mlp_auc - reference_auc)
    check = _check(result, "reference_model_check")  # WARN: it never stops the chain
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.passed == (mlp_auc >= reference_auc - Policy().reference_auc_tolerance)
    assert check.metadata["tolerance_variable"].value == "CHURN_REFERENCE_AUC_TOLERANCE"
    assert check.metadata["reference_auc"].value == reference_auc

    version = result.asset_materializations_for_node("churn_model_version")[0].metadata
    assert version["registry"].value == "registered"
    described = tracking.describe_version(store, str(version["version"].value))
    assert described["metrics"]["reference_auc"] == pytest.approx(reference_auc)
    assert described["metrics"]["ece"] is not None
    # The card the version's run carries was rewritten at registration: parity is a number.
    client = MlflowClient(store)
    run_id = described["mlflow_run_id"]
    card = Path(client.download_artifacts(run_id, "model_card.md", str(tmp_path))).read_text()
    parity = result.output_for_node("churn_model_onnx").parity_max_abs_diff
    assert f"| ONNX parity (max abs diff vs torch) | <= 1e-06 | {parity:.4g} | pass |" in card
    assert "not evaluated" not in card
    assert f"| logistic regression reference | {reference_auc:.4f} |" in card
    assert "expected calibration error (ECE)" in card
    registered = client.get_model_version("churn-model", str(version["version"].value))
    assert f"runs:/{run_id}/model_card.md" in registered.description
