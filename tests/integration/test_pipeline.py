"""The whole graph, in process, against the embedded Postgres: `churn demo` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from churn_assets.app.cli import main
from churn_assets.infra import warehouse
from churn_assets.settings import load_settings

pytestmark = pytest.mark.integration


def _rows(query: str) -> list[tuple[Any, ...]]:
    url = warehouse.start_embedded(load_settings().embedded_pg_dir)
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def test_demo_generates_data_and_materialises_the_graph(demo: tuple[Result, Path]) -> None:
    result, raw_dir = demo
    assert result.exit_code == 0, result.output
    assert "generating the reference demo data" in result.output
    assert (raw_dir / "customers.csv").exists() and (raw_dir / "ground_truth.csv").exists()
    assert "succeeded" in result.output
    assert "1,000 customers" in result.output


def test_demo_is_one_run_of_the_whole_graph_with_its_summary(demo: tuple[Result, Path]) -> None:
    # One run from the files to the scores and analyst tables: no run launched after it.
    output = demo[0].output
    (run_id,) = [line.split()[1] for line in output.splitlines() if line.endswith(" succeeded")]
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        run = instance.get_run_by_id(run_id)
        built = {
            record.event_log_entry.dagster_event.asset_key.to_user_string()  # type: ignore[union-attr]
            for record in instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
        }
    assert run is not None and run.job_name == "churn_pipeline"
    assert {
        "raw_orders",
        "customer_features",
        "churn_model_version",
        "churn_champion",
        "churn_scores",
        "feature_drift",
        "realized_performance",
        "customer_360",
        "current_features_export",
    } <= built
    summary = [line.strip().split(":")[0] for line in output.splitlines() if line.startswith("  ")]
    assert {"promotion", "champion", "scores", "analysts", "status"} <= set(summary)
    assert "promotion: v1 promoted" in output


def test_demo_labels_agree_with_the_generators_hidden_truth(demo: tuple[Result, Path]) -> None:
    # The dbt labels and the generator implement the same definition independently: the
    # population and every label of the generator's as_of (a month end, the newest labelled
    # period) must agree row for row.
    _, raw_dir = demo
    truth = pd.read_csv(raw_dir / "ground_truth.csv", dtype={"customer_id": str})
    rows = _rows(
        "select customer_id, as_of, churned from marts.training_snapshot "
        "where as_of = (select max(as_of) from marts.training_snapshot)"
    )
    snapshot = pd.DataFrame(rows, columns=["customer_id", "as_of", "churned"])
    merged = truth.merge(snapshot, on="customer_id", how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged["churned_x"] == merged["churned_y"]).all()
    assert {str(d) for d in snapshot["as_of"]} == set(truth["as_of"].astype(str))
    assert 0.17 <= snapshot["churned"].mean() <= 0.23


def test_demo_records_metadata_in_the_persistent_instance(demo: tuple[Result, Path]) -> None:
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        dataset = instance.get_latest_materialization_event(dg.AssetKey("training_dataset"))
        (snapshot,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("training_snapshot"), asset_partitions=["2025-09-30"]
            ),
            limit=1,
        ).records
        raw_orders = instance.get_latest_materialization_event(dg.AssetKey("raw_orders"))
        current = instance.get_latest_materialization_event(dg.AssetKey("current_features"))
        staging = instance.get_latest_materialization_event(dg.AssetKey("stg_raw__orders"))
    assert dataset is not None and raw_orders is not None
    meta = dataset.asset_materialization.metadata  # type: ignore[union-attr]
    periods = meta["as_of"].value.split(", ")
    rows = _rows(
        "select count(*), avg(churned::float) from marts.training_snapshot "
        f"where as_of in ({', '.join(repr(p) for p in periods)})"
    )[0]
    assert meta["dagster/row_count"].value == rows[0]
    assert meta["label_rate"].value == pytest.approx(rows[1])
    # six cohorts whose labels closed by the out-of-time holdout, and the holdout
    assert meta["holdout_as_of"].value == "2025-09-30" == periods[-1]
    assert len(periods) == 7 and periods[-2] == "2025-06-30"
    partition_meta = snapshot.asset_materialization.metadata  # type: ignore[union-attr]
    assert partition_meta["periods_without_closed_labels"].value == "2025-10-31, 2025-11-30"
    assert "days_since_last_order" in partition_meta["preview"].value
    orders_meta = raw_orders.asset_materialization.metadata  # type: ignore[union-attr]
    assert orders_meta["dagster/row_count"].value == _rows("select count(*) from raw.orders")[0][0]
    # dbt tables outside the periods carry their row count; views are not counted
    assert current is not None and staging is not None
    current_meta = current.asset_materialization.metadata  # type: ignore[union-attr]
    (current_rows,) = _rows("select count(*) from marts.current_features")[0]
    assert current_meta["dagster/row_count"].value == current_rows > 0
    assert "dagster/row_count" not in staging.asset_materialization.metadata  # type: ignore[union-attr]


def test_run_on_bad_files_fails_clearly_and_changes_nothing(
    demo: tuple[Result, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, raw_dir = demo
    before = _rows("select * from marts.training_snapshot order by as_of, customer_id")
    orders = pd.read_csv(raw_dir / "orders.csv", dtype=str)
    orders.loc[[3, 7], "amount"] = "-1"
    (tmp_path / "bad").mkdir()
    orders.to_csv(tmp_path / "bad" / "orders.csv", index=False)
    (tmp_path / "bad" / "customers.csv").write_bytes((raw_dir / "customers.csv").read_bytes())
    monkeypatch.setenv("CHURN_RAW_DIR", str(tmp_path / "bad"))
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 1
    assert "orders.csv: column 'amount' breaks rule 'amount >= 0' in 2 row(s)" in result.output
    assert "row 4: '-1'" in result.output
    assert _rows("select * from marts.training_snapshot order by as_of, customer_id") == before


def test_demo_trains_gates_exports_and_registers_a_model(demo: tuple[Result, Path]) -> None:
    from churn_assets.ml import tracking

    result, _ = demo
    status = CliRunner().invoke(main, ["status", "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert set(report) == {
        "tracking_uri",
        "model_name",
        "latest_model",
        "champion",
        "champion_history",
        "realized",
        "shadow",
    }
    # the demo's promotion began the rollout history (later session tests may add to it)
    first = report["champion_history"][0]
    assert (first["version"], first["replaced"]) == ("1", None) and first["since"]
    # the warehouse is reachable, so the shadow comparison is computed (maybe still empty:
    # other modules in this session may have served with a challenger)
    assert set(report["shadow"]) == {"rows", "pairs", "summary"}
    # The demo registered version 1 (later session tests may register more).
    latest = tracking.describe_version(load_settings().resolved_tracking_uri, "1")
    assert int(report["latest_model"]["version"]) >= 1
    assert latest["metrics"]["auc"] >= 0.60  # the gate, on the default data
    assert latest["oracle_auc"] is not None
    # the model cannot beat the hidden truth by more than sampling noise on ~170 rows
    assert latest["metrics"]["auc"] <= latest["oracle_auc"] + 0.05
    assert latest["onnx_parity_max_abs_diff"] <= 1e-6
    assert latest["data_as_of"] == latest["holdout_as_of"] == "2025-09-30"
    assert latest["metrics"]["in_time_auc"] is not None
    assert len(latest["backtest"]) >= 3
    assert {"as_of", "rows", "auc", "reference_auc"} <= set(latest["backtest"][0])
    assert set(latest["metrics"]) >= {"auc", "pr_auc", "brier", "log_loss", "f1"}
    # the BG/NBD buy-till-you-die reference, scored on the same out-of-time holdout
    btyd_auc = report["latest_model"]["metrics"]["btyd_auc"]
    assert isinstance(btyd_auc, float)
    assert 0.5 < btyd_auc <= 1.0
    # the promotion run (requested by the sensor, in process) made the first model champion
    assert latest["promotion"]["decision"] == "promoted"
    assert report["champion"] is not None
    assert "promotion: v1 promoted: no champion yet" in result.output
    assert f"version {latest['version']}, AUC {latest['metrics']['auc']:.3f}" in result.output


def test_demo_model_files_match_the_registered_version(demo: tuple[Result, Path]) -> None:
    from mlflow.tracking import MlflowClient

    from churn_assets.ml.export import sha256_file

    settings = load_settings()
    client = MlflowClient(settings.resolved_tracking_uri)
    version = client.get_model_version("churn-model", "1")
    run = client.get_run(version.run_id)
    assert run.data.tags["dagster_run_id"] == version.tags["dagster_run_id"]
    onnx_path = settings.models_dir / version.tags["dagster_run_id"] / "model.onnx"
    assert sha256_file(onnx_path) == version.tags["onnx_sha256"]
    artifacts = {a.path for a in client.list_artifacts(version.run_id)}
    assert {"model_card.md", "holdout.parquet", "roc_curve.png", "onnx"} <= artifacts
    gates = json.loads(version.tags["gates"])
    assert all(gate["passed"] for gate in gates.values())


def test_run_with_an_unreachable_auc_gate_fails_and_registers_nothing(
    demo: tuple[Result, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, raw_dir = demo
    monkeypatch.setenv("CHURN_RAW_DIR", str(raw_dir))
    before = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)["latest_model"]
    monkeypatch.setenv("CHURN_MIN_AUC", "0.99")
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 1
    assert "gate auc_gate_check on churn_model failed: holdout ROC AUC >= 0.99" in result.output
    after = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)["latest_model"]
    assert after == before  # no new version: the failed model was not registered
