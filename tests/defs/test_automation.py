"""The automation conditions of the real definitions, evaluated with Dagster's own evaluator
against a temporary instance (no warehouse: materialisations and check results are
reported as events): what the daemon would request, tick by tick."""

from __future__ import annotations

import dagster as dg
import pytest

from churn_assets.defs.partitions import PERIODS_NAME

PERIODS = ["2025-01-31", "2025-02-28", "2025-03-31"]
PER_PERIOD = ("customer_features", "churn_labels", "training_snapshot")
UNPARTITIONED_UPSTREAM = ("free_email_domains", "stg_raw__customers", "stg_raw__orders")


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from churn_assets.definitions import defs

    return defs()


@pytest.fixture(autouse=True)
def _test_periods(instance: dg.DagsterInstance) -> None:
    """The periods these tests materialise, registered on the temporary instance."""
    instance.add_dynamic_partitions(PERIODS_NAME, PERIODS)


def _requested(result: dg.EvaluateAutomationConditionsResult, defs: dg.Definitions) -> dict:
    return {
        key.to_user_string(): sorted(str(p) for p in result.get_requested_partitions(key))
        for key in defs.resolve_asset_graph().toposorted_asset_keys
        if result.get_num_requested(key)
    }


def _materialise(
    instance: dg.DagsterInstance, defs: dg.Definitions, key: str, partition: str | None = None
) -> None:
    """A materialisation with every check of the asset passed, as a real run reports it."""
    asset_key = dg.AssetKey(key)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key, partition=partition))
    graph = defs.resolve_asset_graph()
    for check_key in graph.get_check_keys_for_assets({asset_key}):
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=check_key.name,
                passed=True,
                partition=partition,
            )
        )


def _materialise_upstream_of_scores(instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
    for key in (*UNPARTITIONED_UPSTREAM, "current_features", "churn_model_version"):
        _materialise(instance, defs, key)
    for key in PER_PERIOD:
        for period in PERIODS:
            _materialise(instance, defs, key, period)


def test_the_reference_seed_is_built_when_missing_and_nothing_else_moves(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert _requested(first, defs) == {"free_email_domains": ["None"]}


def test_new_raw_data_flows_to_every_period_and_the_first_training(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    _materialise(instance, defs, "free_email_domains")

    def tick() -> dict[str, list[str]]:
        nonlocal cursor
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        return _requested(result, defs)

    for key in ("raw_customers", "raw_orders"):
        _materialise(instance, defs, key)
    assert tick() == {"stg_raw__customers": ["None"], "stg_raw__orders": ["None"]}
    for key in ("stg_raw__customers", "stg_raw__orders"):
        _materialise(instance, defs, key)
    # A load that does not say which periods it changed (this one, made by hand): every
    # period rebuilds, and nothing reads the scores yet (no champion, nothing scored).
    assert tick() == {key: PERIODS for key in PER_PERIOD}
    for key in PER_PERIOD:
        for period in PERIODS:
            _materialise(instance, defs, key, period)
    # the first model: the whole training chain in one run (its gates stop it inside the run),
    # and the newest period's features with the scorer's file of them
    assert set(tick()) == {
        "current_features",
        "current_features_export",
        "training_dataset",
        "churn_model",
        "churn_model_onnx",
        "churn_model_version",
        "backtest",
    }
    assert tick() == {}  # handled: nothing is requested twice


def test_a_load_that_names_the_periods_it_changed_rebuilds_those_only(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    # Every period was built from the previous load; this one (a month's file) can change
    # 2025-02-28 on (raw_orders' rebuild_from, see churn_assets/defs/rebuild.py).
    _materialise_upstream_of_scores(instance, defs)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "raw_orders", metadata={"rebuild_from": "2025-02-28", "newest_period": "2025-03-31"}
        )
    )
    _materialise(instance, defs, "raw_customers")
    for key in ("stg_raw__customers", "stg_raw__orders"):
        _materialise(instance, defs, key)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = _requested(result, defs)
    assert {key: requested.get(key) for key in PER_PERIOD} == {
        key: ["2025-02-28", "2025-03-31"] for key in PER_PERIOD
    }


def test_a_new_champion_rescores_the_newest_period_and_reruns_the_drift_monitor(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    _materialise_upstream_of_scores(instance, defs)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    instance.report_runless_asset_event(dg.AssetMaterialization("churn_champion"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    # The scores, the drift monitor and what reads the scores: one tick, so one run.
    assert _requested(result, defs) == {
        key: ["None"]
        for key in (
            "churn_scores",
            "feature_drift",
            "realized_performance",
            "customer_360",
            "churn_risk_by_segment",
            "retention_targets",
            "model_performance_over_time",
            "online_predictions_realized",
        )
    }


def test_a_failed_blocking_check_stops_everything_downstream(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    _materialise_upstream_of_scores(instance, defs)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    graph = defs.resolve_asset_graph()
    features = dg.AssetKey("current_features")
    blocking = [
        key
        for key in graph.get_check_keys_for_assets({features})
        if graph.get_check_spec(key).blocking
    ]
    assert blocking, "current_features has no blocking check to fail"
    _materialise(instance, defs, "current_features")
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=features, check_name=blocking[0].name, passed=False)
    )
    instance.report_runless_asset_event(dg.AssetMaterialization("churn_champion"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert "feature_drift" not in _requested(result, defs)


def test_every_asset_but_the_sensor_driven_ones_has_a_condition(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    without = {
        key.to_user_string()
        for key in graph.materializable_asset_keys
        if graph.get(key).automation_condition is None
    }
    # raw files: raw_files_sensor; the champion: champion_promotion_sensor; the shadow
    # comparison is on demand (`churn status` computes it live)
    assert without == {"raw_customers", "raw_orders", "churn_champion", "shadow_comparison"}
