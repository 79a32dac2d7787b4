"""Retraining: a failed drift gate launches ``training_job``, once per failure, with a cooldown."""

import json
import time

import dagster as dg

from churn_assets.defs.jobs import training_job
from churn_assets.defs.resources import ChurnPolicy
from churn_assets.settings import load_settings

DRIFT_GATE = dg.AssetCheckKey(dg.AssetKey("feature_drift"), "drift_gate")


def retrain_decision(
    instance: dg.DagsterInstance, cursor: str | None, now: float, cooldown_seconds: int
) -> dg.SensorResult | dg.SkipReason:
    """Pure over the instance's check history: which drift failure (if any) to act on."""
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key([DRIFT_GATE])
    record = records.get(DRIFT_GATE)
    state = json.loads(cursor) if cursor else {"last_execution_id": 0, "last_triggered_at": 0.0}
    if record is None or record.event is None:
        return dg.SkipReason("the drift gate has not been evaluated yet")
    evaluation = record.event.asset_check_evaluation
    if evaluation is None:  # planned but not finished
        return dg.SkipReason(f"drift gate evaluation {record.id} is still in progress")
    share = evaluation.metadata.get("drift_share")
    share_text = f"{share.value:.2f}" if isinstance(share, dg.FloatMetadataValue) else "?"
    if evaluation.passed:
        return dg.SkipReason(
            f"latest drift gate (evaluation {record.id}) passed: share {share_text}"
        )
    if record.id <= state["last_execution_id"]:
        return dg.SkipReason(f"already retrained for drift evaluation {record.id}")
    waited = now - float(state["last_triggered_at"])
    if waited < cooldown_seconds:
        return dg.SkipReason(
            f"drift (share {share_text}) but in cooldown: {int(cooldown_seconds - waited)} s left"
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-{record.id}",
                tags={"churn/trigger": "drift", "churn/drift_check_run": record.run_id},
            )
        ],
        cursor=json.dumps({"last_execution_id": record.id, "last_triggered_at": now}),
    )


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=load_settings().sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When the drift gate fails, rebuild features and labels and retrain; once per "
    "failed evaluation and at most once per CHURN_RETRAIN_COOLDOWN_SECONDS.",
)
def retrain_on_drift_sensor(
    context: dg.SensorEvaluationContext, policy: ChurnPolicy
) -> dg.SensorResult | dg.SkipReason:
    return retrain_decision(
        context.instance, context.cursor, time.time(), policy.policy().retrain_cooldown_seconds
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[retrain_on_drift_sensor])
