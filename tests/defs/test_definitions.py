"""The code location loads and draws one lineage graph from raw files to training data."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from churn_assets.definitions import defs as load_defs
from churn_assets.defs.partitions import PERIODS
from churn_assets.defs.resources import (
    EmbeddedPostgresWarehouse,
    ExternalPostgresWarehouse,
    SparkWarehouseResource,
    warehouse_resource,
)
from churn_assets.lib.dbt import (
    DBT_POLICY_VARS,
    dbt_build_args,
    dbt_build_env,
    keep_parse_state,
    not_built_here,
    parse_state_dir,
)
from churn_assets.policy import Policy
from churn_assets.settings import DBT_PROJECT_DIR, load_settings
from churn_assets.tables.spark.warehouse import SparkWarehouse


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return load_defs()


def _graph(defs: dg.Definitions) -> dg.AssetGraph:
    return defs.resolve_asset_graph()


def test_definitions_hold_the_ingest_and_dbt_assets_in_their_groups(defs: dg.Definitions) -> None:
    graph = _graph(defs)
    groups = {
        key.to_user_string(): graph.get(key).group_name for key in graph.materializable_asset_keys
    }
    assert groups["raw_customers"] == groups["raw_orders"] == "ingest"
    assert groups["stg_raw__customers"] == groups["stg_raw__orders"] == "staging"
    for model in ("customer_features", "churn_labels", "training_snapshot", "current_features"):
        assert groups[model] == "features"
    # the scorer's file follows the table in every job that rebuilds it (selected by group)
    assert groups["current_features_export"] == "features"
    assert (
        dg.AssetKey("current_features")
        in graph.get(dg.AssetKey("current_features_export")).parent_keys
    )


def test_the_per_period_assets_are_partitioned_by_period_and_backfill_in_one_run(
    defs: dg.Definitions,
) -> None:
    graph = _graph(defs)
    for name in ("customer_features", "churn_labels", "training_snapshot"):
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def == PERIODS, name
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), name
    # what reads "now" (the scores: the newest period) or all of history is not partitioned
    for name in (
        "current_features",
        "training_dataset",
        "churn_model",
        "churn_scores",
        "realized_performance",
    ):
        assert graph.get(dg.AssetKey(name)).partitions_def is None, name


@pytest.mark.parametrize(
    ("asset", "upstream"),
    [
        # dbt sources are mapped onto the ingest assets: one graph from files to features
        ("stg_raw__customers", "raw_customers"),
        ("stg_raw__orders", "raw_orders"),
        ("training_snapshot", "customer_features"),
        ("training_snapshot", "churn_labels"),
    ],
)
def test_lineage_connects_raw_files_to_the_training_snapshot(
    defs: dg.Definitions, asset: str, upstream: str
) -> None:
    parents = _graph(defs).get(dg.AssetKey(asset)).parent_keys
    assert dg.AssetKey(upstream) in parents


def test_dbt_tests_become_asset_checks_on_the_models(defs: dg.Definitions) -> None:
    check_keys = _graph(defs).asset_check_keys
    checked_assets = {key.asset_key.to_user_string() for key in check_keys}
    assert {"customer_features", "training_snapshot", "churn_labels"} <= checked_assets
    names = {key.name for key in check_keys if key.asset_key == dg.AssetKey("customer_features")}
    assert any("assert_no_order_after_as_of_reaches_features" in name for name in names)


@pytest.mark.parametrize(
    ("job_name", "must_have", "must_not_have"),
    [
        # a person's run: everything from the files to the scores and analyst tables
        (
            "churn_pipeline",
            {"raw_orders", "training_snapshot", "churn_model_version", "churn_champion"}
            | {"churn_scores", "feature_drift", "realized_performance", "customer_360"}
            | {"current_features_export"},
            {"shadow_comparison", "online_predictions"},
        ),
        # what the retraining sensor launches: from the built snapshots, unpartitioned
        (
            "training_job",
            {"training_dataset", "churn_model", "churn_model_version", "backtest"},
            {"raw_orders", "training_snapshot", "feature_drift"},
        ),
        # `churn backfill`: the periods' features and labels from the loaded raw tables
        (
            "history_job",
            {"customer_features", "churn_labels", "training_snapshot", "current_features"}
            | {"current_features_export"},
            {"raw_orders", "churn_model"},
        ),
        # new data arrives: load, rebuild features, measure drift; never trains
        (
            "monitoring_job",
            {"raw_orders", "current_features", "current_features_export", "feature_drift"},
            {"churn_model"},
        ),
    ],
)
def test_jobs_select_their_part_of_the_graph(
    defs: dg.Definitions, job_name: str, must_have: set[str], must_not_have: set[str]
) -> None:
    selected = {
        key.to_user_string()
        for key in defs.resolve_job_def(job_name).asset_layer.selected_asset_keys
    }
    assert must_have <= selected
    assert not (must_not_have & selected)


def test_sensors_are_on_by_default_so_the_platform_runs_itself(defs: dg.Definitions) -> None:
    sensors = {sensor.name: sensor for sensor in defs.sensors or []}
    assert {
        "raw_files_sensor",
        "churn_automation",
        "churn_automation_periods",
        "champion_promotion_sensor",
        "retrain_on_drift_sensor",
        "scores_freshness_sensor",
    } <= set(sensors)
    for sensor in sensors.values():
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_dbt_build_args_carry_the_window_as_a_var_and_the_periods_in_the_environment() -> None:
    policy = Policy(retention_save_rate=0.25, retention_contact_cost=3.5)
    args = dbt_build_args(window_days=60, policy=policy, full_refresh=True)
    assert args[:2] == ["build", "--vars"]
    # the periods stay out of --vars: dbt re-parses the whole project when the vars change
    assert json.loads(args[2]) == {
        "churn_window_days": 60,
        # the retention rules analytics.retention_targets reads, the policy's values
        "retention_margin": 0.3,
        "retention_save_rate": 0.25,
        "retention_contact_cost": 3.5,
    }
    assert args[-1] == "--full-refresh"
    assert dbt_build_env(["2025-06-30", "2025-05-31"]) == {
        "CHURN_PERIOD_ENDS": "2025-05-31,2025-06-30"
    }
    assert dbt_build_env([]) == {"CHURN_PERIOD_ENDS": ""}
    assert "--full-refresh" not in dbt_build_args(
        window_days=90, policy=Policy(), full_refresh=False
    )


def test_dbt_project_declares_the_policy_vars_with_the_policy_defaults() -> None:
    # dbt run by hand (or a test's own dbt build) falls back to dbt_project.yml's defaults:
    # they must be the policy's, or the retention targets differ by who built them.
    declared = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    defaults = Policy()
    assert {name: declared.get(name) for name in DBT_POLICY_VARS} == {
        name: getattr(defaults, name) for name in DBT_POLICY_VARS
    }


def test_parse_state_is_kept_per_connection(tmp_path: Path) -> None:
    local = parse_state_dir({"CHURN_PG_HOST": "/tmp/a", "CHURN_PG_DATABASE": "churn"})
    assert local == parse_state_dir({"CHURN_PG_DATABASE": "churn", "CHURN_PG_HOST": "/tmp/a"})
    assert local != parse_state_dir({"CHURN_PG_HOST": "/tmp/b", "CHURN_PG_DATABASE": "churn"})
    invocation, state = tmp_path / "invocation", tmp_path / "state"
    keep_parse_state(invocation, state)  # a failed parse writes nothing: nothing to keep
    assert not state.exists()
    invocation.mkdir()
    (invocation / "partial_parse.msgpack").write_bytes(b"state")
    keep_parse_state(invocation, state)
    assert [p.name for p in state.iterdir()] == ["partial_parse.msgpack"]
    assert (state / "partial_parse.msgpack").read_bytes() == b"state"


def test_warehouse_resource_is_embedded_unless_a_url_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(warehouse_resource(), EmbeddedPostgresWarehouse)
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", "postgresql://u:p@h/d")
    external = warehouse_resource()
    assert isinstance(external, ExternalPostgresWarehouse)
    # The URL is an EnvVar: read when a run starts, never stored in the definitions.
    with dg.build_resources({"warehouse": external}) as resources:
        assert resources.warehouse.url() == "postgresql://u:p@h/d"


def test_warehouse_resource_is_the_spark_catalog_under_the_spark_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURN_ENGINE", "spark")
    monkeypatch.setenv("CHURN_SPARK_MASTER", "spark://127.0.0.1:7077")
    resource = warehouse_resource()
    assert isinstance(resource, SparkWarehouseResource)
    client = resource.client()  # chosen without a JVM: nothing starts until an operation
    assert isinstance(client, SparkWarehouse)
    assert client.settings.spark_master == "spark://127.0.0.1:7077"
    assert client.settings.spark_metastore == str(load_settings().home / "spark" / "metastore")


def test_a_run_on_spark_holds_the_spark_write_lock_for_the_whole_run(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    # As a Postgres run holds the advisory lock: the lock file beside the metastore names
    # the run while it runs, and is free once it ended (no JVM: the lock needs none).
    home = tmp_path / "spark-home"
    resource = SparkWarehouseResource(
        master="local[1]",
        warehouse_dir=str(home / "spark" / "warehouse"),
        metastore=str(home / "spark" / "metastore"),
        home=str(home),
    )
    seen: list[str] = []

    @dg.asset
    def writer(warehouse: SparkWarehouseResource) -> None:
        holder = warehouse.client().lock_holder()
        seen.append(holder.name if holder else "nobody")

    result = dg.materialize([writer], resources={"warehouse": resource}, instance=instance)
    assert seen == [f"run {result.run_id} (__ephemeral_asset_job__)"]
    assert resource.client().lock_holder() is None


@pytest.mark.parametrize(
    ("engine", "excluded"),
    [
        # the prediction log is kept on Postgres only: its analyst model is not on Spark
        ("spark", "online_predictions_realized"),
        ("postgres", None),
    ],
)
def test_the_dbt_steps_leave_out_what_the_engine_does_not_hold(
    monkeypatch: pytest.MonkeyPatch, engine: str, excluded: str | None
) -> None:
    monkeypatch.setenv("CHURN_ENGINE", engine)
    assert not_built_here() == excluded


def test_the_policy_resource_shows_every_rule_with_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One definition: the resource's fields are generated from churn_assets.policy.Policy,
    # and the deployment's variables set its values (what the UI and launchpad show).
    from churn_assets.defs.resources import ChurnPolicy, policy_resource
    from churn_assets.policy import rules

    fields = ChurnPolicy.model_fields
    assert set(fields) == {rule.name for rule in rules()}
    for rule in rules():
        assert fields[rule.name].default == rule.default
        assert rule.env in (fields[rule.name].description or "")
    monkeypatch.setenv("CHURN_MAX_LABEL_RATE", "0.6")
    assert policy_resource().policy().max_label_rate == 0.6
