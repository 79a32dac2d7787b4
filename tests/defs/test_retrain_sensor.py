"""The retraining sensor against a real (temporary) Dagster instance."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from churn_assets.defs.monitoring import sensors
from churn_assets.defs.monitoring.sensors import DRIFT_GATE, REALIZED_CHECK, retrain_decision
from churn_assets.defs.partitions import PERIODS_NAME
from churn_assets.defs.resources import ChurnPolicy

RESOURCES = {"policy": ChurnPolicy()}


@pytest.fixture
def retrain_on_drift_sensor() -> dg.SensorDefinition:
    return sensors.defs().get_sensor_def(sensors.RETRAIN_SENSOR)


def _drift_evaluation(instance: dg.DagsterInstance, *, passed: bool, share: float) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=DRIFT_GATE.asset_key,
            check_name=DRIFT_GATE.name,
            passed=passed,
            metadata={"drift_share": share, "threshold": 0.3},
        )
    )


def test_retrain_sensor_skips_until_the_drift_gate_has_run(
    instance: dg.DagsterInstance, retrain_on_drift_sensor: dg.SensorDefinition
) -> None:
    result = retrain_on_drift_sensor(
        dg.build_sensor_context(instance=instance, resources=RESOURCES)
    )
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "the drift gate has not been evaluated yet"


def test_retrain_sensor_skips_when_the_latest_drift_gate_passed(
    instance: dg.DagsterInstance,
) -> None:
    _drift_evaluation(instance, passed=False, share=0.6)
    _drift_evaluation(instance, passed=True, share=0.1)  # latest wins
    result = retrain_decision(instance, None, now=1_000.0, cooldown_seconds=0)
    assert isinstance(result, dg.SkipReason)
    assert "passed: share 0.10" in (result.skip_message or "")


def test_retrain_sensor_requests_training_once_per_failed_evaluation(
    instance: dg.DagsterInstance, retrain_on_drift_sensor: dg.SensorDefinition
) -> None:
    _drift_evaluation(instance, passed=False, share=0.6)
    first = retrain_on_drift_sensor(dg.build_sensor_context(instance=instance, resources=RESOURCES))
    assert isinstance(first, dg.SensorResult)
    (request,) = first.run_requests or []
    assert request.tags["churn/trigger"] == "drift"
    assert retrain_on_drift_sensor.job_name == "training_job"
    # Same failed evaluation, next tick: no second run (no retrain storm).
    again = retrain_on_drift_sensor(
        dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=RESOURCES)
    )
    assert isinstance(again, dg.SkipReason)
    assert "already retrained for drift evaluation" in (again.skip_message or "")


@pytest.mark.parametrize(
    ("seconds_since_last", "expect_run"),
    [
        (10.0, False),  # a new drift failure 10 s after the last retrain: cooling down
        (4_000.0, True),  # past the one-hour cooldown: retrain again
    ],
)
def test_retrain_sensor_respects_the_cooldown(
    instance: dg.DagsterInstance, seconds_since_last: float, expect_run: bool
) -> None:
    cursor = json.dumps({"last_execution_id": 0, "last_triggered_at": 1_000.0})
    _drift_evaluation(instance, passed=False, share=0.5)
    result = retrain_decision(
        instance, cursor, now=1_000.0 + seconds_since_last, cooldown_seconds=3_600
    )
    assert isinstance(result, dg.SensorResult) is expect_run
    if not expect_run:
        assert "cooldown" in (result.skip_message or "")  # type: ignore[union-attr]


def _realized_evaluation(instance: dg.DagsterInstance, *, passed: bool) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=REALIZED_CHECK.asset_key,
            check_name=REALIZED_CHECK.name,
            passed=passed,
            description=None if passed else "v1 at 2025-07-31: realized AUC 0.52 ...",
        )
    )


def test_a_failed_realized_performance_check_is_a_second_trigger_with_the_same_cooldown(
    instance: dg.DagsterInstance,
) -> None:
    _drift_evaluation(instance, passed=True, share=0.1)
    _realized_evaluation(instance, passed=False)
    first = retrain_decision(instance, None, now=1_000.0, cooldown_seconds=600)
    assert isinstance(first, dg.SensorResult)
    (request,) = first.run_requests or []
    assert request.tags["churn/trigger"] == "realized"
    # acted on: the same failure never triggers again
    again = retrain_decision(instance, first.cursor, now=5_000.0, cooldown_seconds=600)
    assert isinstance(again, dg.SkipReason)
    # a drift failure right after is held back by the shared cooldown
    _drift_evaluation(instance, passed=False, share=0.6)
    held = retrain_decision(instance, first.cursor, now=1_100.0, cooldown_seconds=600)
    assert isinstance(held, dg.SkipReason)
    assert "cooldown" in (held.skip_message or "")
    later = retrain_decision(instance, first.cursor, now=1_700.0, cooldown_seconds=600)
    assert isinstance(later, dg.SensorResult)
    assert (later.run_requests or [])[0].tags["churn/trigger"] == "drift"


def test_no_retrain_on_the_same_data_nor_before_the_new_snapshots_exist(
    instance: dg.DagsterInstance,
) -> None:
    # Training is deterministic: a gate that keeps failing against the newest model, with
    # no new load since it was trained, would only retrain the same model again.
    periods = ["2025-11-30", "2025-12-31"]
    instance.add_dynamic_partitions(PERIODS_NAME, periods)
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_orders"))
    for period in periods:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("training_snapshot", partition=period)
        )
    instance.report_runless_asset_event(dg.AssetMaterialization("churn_model"))
    _drift_evaluation(instance, passed=False, share=0.6)

    def decide() -> dg.SensorResult | dg.SkipReason:
        return retrain_decision(instance, None, now=1_000.0, cooldown_seconds=0)

    skipped = decide()
    assert isinstance(skipped, dg.SkipReason)
    assert "no data was loaded since the last model was trained" in (skipped.skip_message or "")
    # a new month is loaded: wait until every period's training snapshot is rebuilt (the new
    # orders mature the older periods' labels), then retrain
    instance.add_dynamic_partitions(PERIODS_NAME, ["2026-01-31"])
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_orders"))
    waiting = decide()
    assert isinstance(waiting, dg.SkipReason)
    assert "waiting for the training snapshots" in (waiting.skip_message or "")
    assert "3 period(s) not rebuilt yet" in (waiting.skip_message or "")
    instance.report_runless_asset_event(
        dg.AssetMaterialization("training_snapshot", partition="2026-01-31")
    )
    newest_only = decide()  # the new period alone, as the first run after a load builds it
    assert isinstance(newest_only, dg.SkipReason)
    assert "2 period(s) not rebuilt yet, e.g. 2025-11-30" in (newest_only.skip_message or "")
    for period in periods:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("training_snapshot", partition=period)
        )
    assert isinstance(decide(), dg.SensorResult)


def test_after_a_load_the_sensor_waits_for_the_snapshots_of_the_periods_it_changed_only(
    instance: dg.DagsterInstance,
) -> None:
    # A month's load rebuilds the periods it can change (raw_orders' rebuild_from on): the
    # older periods' snapshots stay as they were and are not waited for.
    periods = ["2025-10-31", "2025-11-30", "2025-12-31"]
    instance.add_dynamic_partitions(PERIODS_NAME, periods)
    for period in periods[:2]:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("training_snapshot", partition=period)
        )
    instance.report_runless_asset_event(dg.AssetMaterialization("churn_model"))
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "raw_orders", metadata={"rebuild_from": "2025-11-30", "newest_period": "2025-12-31"}
        )
    )
    _drift_evaluation(instance, passed=False, share=0.6)

    def decide() -> dg.SensorResult | dg.SkipReason:
        return retrain_decision(instance, None, now=1_000.0, cooldown_seconds=0)

    waiting = decide()
    assert isinstance(waiting, dg.SkipReason)
    assert "2 period(s) not rebuilt yet, e.g. 2025-11-30" in (waiting.skip_message or "")
    for period in periods[1:]:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("training_snapshot", partition=period)
        )
    assert isinstance(decide(), dg.SensorResult)  # 2025-10-31's older snapshot is not waited for
