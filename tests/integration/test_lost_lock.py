"""A run that lost the warehouse write lock registers nothing (issue 24, case 6).

Regression: the warehouse stopped during training; the run still exported ONNX and
registered a version after the warehouse and its lock session were gone.
"""

from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from churn_assets.defs.resources import ExternalPostgresWarehouse, MlflowResource, policy_resource
from churn_assets.defs.training.assets import churn_model_version
from churn_assets.infra import warehouse
from churn_assets.lib.report import failure_message
from churn_assets.ml import tracking
from churn_assets.ml.artifacts import CARD_FILE, ExportedModel, TrainedModel

pytestmark = pytest.mark.integration

LOST = "lost the warehouse write lock (the warehouse restarted or the session was cut)"


def _cut(url: str, where: str, *params: object) -> None:
    """pg_terminate_backend, from another connection, of the sessions ``where`` selects in
    pg_stat_activity; returns once they are gone (the server waits up to 10 s)."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            f"select pg_terminate_backend(pid, 10000) from pg_stat_activity where {where}", params
        )
        assert [row[0] for row in cur.fetchall()] == [True]
    conn.close()


def test_a_held_lock_knows_when_its_session_was_cut(fresh_database_url: str) -> None:
    with warehouse.write_lock(fresh_database_url, "run cut-short (churn_pipeline)", 0) as lock:
        assert lock.still_held()
        lock.ensure_held("nothing registered")  # held: no error

        _cut(fresh_database_url, "pid = %s", lock.backend_pid)

        assert not lock.still_held()
        with pytest.raises(warehouse.WarehouseLockLost) as caught:
            lock.ensure_held("nothing registered")
    assert str(caught.value) == f"{LOST}: nothing registered"
    # The lock went with the session: the next writer gets it at once.
    with warehouse.write_lock(fresh_database_url, "run next", 0) as lock:
        assert lock.still_held()


def _trained(model_dir: Path) -> TrainedModel:
    (model_dir / CARD_FILE).write_text("# model card\n")
    return TrainedModel(
        model_dir=str(model_dir),
        dagster_run_id="training-run",
        metrics={"roc_auc": 0.99},
        oracle_auc=None,
        data_as_of="2025-12-31",
        dataset_sha256="0" * 64,
        trained_at="2026-01-01T00:00:00+00:00",
        n_parameters=1,
        mlflow_run_id="mlflow-run",
    )


@pytest.mark.parametrize("cut", [False, True], ids=["lock held", "lock lost"])
def test_the_registration_step_refuses_once_the_run_lost_the_lock(
    cut: bool, fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_writes: list[str] = []

    def register(*_: Any, **__: Any) -> str:
        registry_writes.append("register_version")
        return "1"

    def log_artifact(*_: Any, **__: Any) -> None:
        registry_writes.append("log_artifact")

    monkeypatch.setattr(tracking, "register_version", register)
    monkeypatch.setattr(tracking, "check_reachable", lambda *_: None)
    monkeypatch.setattr(MlflowClient, "log_artifact", log_artifact)

    # Stands in for the ONNX step: hands over a gated, exported model after a long
    # computation, during which (case "lock lost") the warehouse cut the run's lock session.
    @dg.asset(name="churn_model_onnx")
    def exported(context: dg.AssetExecutionContext) -> ExportedModel:
        if cut:
            _cut(fresh_database_url, "application_name like %s", f"%run {context.run_id}%")
        return ExportedModel(
            _trained(tmp_path), str(tmp_path / "model.onnx"), "0" * 64, 0.0, "runs:/x/model"
        )

    result = dg.materialize(
        [exported, churn_model_version],
        resources={
            "warehouse": ExternalPostgresWarehouse(connection_url=fresh_database_url),
            "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
            "policy": policy_resource(),
        },
        raise_on_error=False,
    )

    if not cut:  # the same run registers while it holds the lock: the setup is sound
        assert result.success
        assert registry_writes == ["log_artifact", "register_version"]
        return
    assert not result.success
    assert registry_writes == []
    assert failure_message(result).endswith(f"\n{LOST}: nothing registered")
