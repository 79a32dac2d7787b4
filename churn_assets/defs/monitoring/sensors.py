"""Retraining: a failed drift gate, or realized performance that fell below the holdout,
launches ``training_job``, once per failure, with one cooldown for both."""

import json
import time

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecord

from churn_assets.defs.jobs import training_job
from churn_assets.defs.partitions import registered_periods
from churn_assets.defs.rebuild import last_load_record, rebuild_keys
from churn_assets.defs.resources import ChurnPolicy
from churn_assets.settings import load_settings

DRIFT_GATE = dg.AssetCheckKey(dg.AssetKey("feature_drift"), "drift_gate")
REALIZED_CHECK = dg.AssetCheckKey(dg.AssetKey("realized_performance"), "realized_performance_check")
# The checks whose failure means "the champion no longer fits the data", and the name a
# run request carries (tag ``churn/trigger``).
TRIGGERS = {DRIFT_GATE: "drift", REALIZED_CHECK: "realized"}
RETRAIN_SENSOR = "retrain_on_drift_sensor"


def retrain_decision(
    instance: dg.DagsterInstance, cursor: str | None, now: float, cooldown_seconds: int
) -> dg.SensorResult | dg.SkipReason:
    """Pure over the instance's check history: which failure (if any) to act on.

    Execution ids are storage ids, increasing across both checks, so one cursor value
    ("acted on everything up to this id") covers them both.
    """
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(TRIGGERS))
    state = json.loads(cursor) if cursor else {"last_execution_id": 0, "last_triggered_at": 0.0}
    not_ready = _not_ready_to_retrain(instance)
    drift = records.get(DRIFT_GATE)
    realized = records.get(REALIZED_CHECK)
    evaluation = realized.event.asset_check_evaluation if realized and realized.event else None
    if (
        realized is not None
        and evaluation is not None
        and not evaluation.passed
        and realized.id > state["last_execution_id"]
        # the newer failure wins; a drift failure already acted on does not block this one
        and (drift is None or drift.id < realized.id or _passed(drift))
    ):
        detail = (evaluation.description or "realized AUC below holdout")[:200]
        return _request(realized, "realized", detail, state, now, cooldown_seconds, not_ready)
    return _drift_decision(drift, state, now, cooldown_seconds, not_ready)


def _passed(record: AssetCheckExecutionRecord) -> bool:
    evaluation = record.event.asset_check_evaluation if record.event else None
    return evaluation is not None and evaluation.passed


def _drift_decision(
    record: AssetCheckExecutionRecord | None,
    state: dict[str, float],
    now: float,
    cooldown_seconds: int,
    not_ready: str | None,
) -> dg.SensorResult | dg.SkipReason:
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
    return _request(record, "drift", f"share {share_text}", state, now, cooldown_seconds, not_ready)


def _request(
    record: AssetCheckExecutionRecord,
    trigger: str,
    detail: str,
    state: dict[str, float],
    now: float,
    cooldown_seconds: int,
    not_ready: str | None,
) -> dg.SensorResult | dg.SkipReason:
    waited = now - float(state["last_triggered_at"])
    if not_ready:
        return dg.SkipReason(f"{trigger} ({detail}) but {not_ready}")
    if waited < cooldown_seconds:
        return dg.SkipReason(
            f"{trigger} ({detail}) but in cooldown: {int(cooldown_seconds - waited)} s left"
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{trigger}-{record.id}",
                tags={
                    "churn/trigger": trigger,
                    f"churn/{trigger}_check_run": record.run_id,
                    # the drift check run tag keeps its historical name
                    **({"churn/drift_check_run": record.run_id} if trigger == "drift" else {}),
                },
            )
        ],
        cursor=json.dumps({"last_execution_id": record.id, "last_triggered_at": now}),
    )


def _not_ready_to_retrain(instance: dg.DagsterInstance) -> str | None:
    """Why a retrain now would be wasted, or None.

    Training is deterministic, so with no load since the newest model it would give the
    same model again (a drift gate compares with a reference one label window old and can
    keep failing). And right after a load, the training snapshots it changes are not
    rebuilt yet: the periods the load can have changed (its new period, the older ones
    whose labels the new orders mature, any it revised) are rebuilt in a later run, and
    training in between would learn last month's labels.
    """
    load = last_load_record(instance)
    records = instance.fetch_materializations(dg.AssetKey("churn_model"), limit=1).records
    raw, model = (load.storage_id if load else 0), (records[0].storage_id if records else 0)
    if model and raw and model > raw:
        return "no data was loaded since the last model was trained"
    if load is not None and (stale := _snapshots_older_than(instance, load)):
        return (
            f"waiting for the training snapshots of the data just loaded ({len(stale)} "
            f"period(s) not rebuilt yet, e.g. {stale[0]})"
        )
    return None


def _snapshots_older_than(instance: dg.DagsterInstance, load: dg.EventLogRecord) -> list[str]:
    """The periods the ``load`` can have changed (every period when it did not say) whose
    training snapshot was last built before it (or never)."""
    periods = rebuild_keys(instance, load)
    if periods is None:
        periods = registered_periods(instance)
    built = instance.get_latest_storage_id_by_partition(
        dg.AssetKey("training_snapshot"), DagsterEventType.ASSET_MATERIALIZATION, set(periods)
    )
    return sorted(p for p in periods if built.get(p, 0) < load.storage_id)


def build_retrain_sensor(interval_seconds: int) -> dg.SensorDefinition:
    """The sensor, looking every ``interval_seconds``."""
    return dg.sensor(
        name=RETRAIN_SENSOR,
        job=training_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When the drift gate fails, or a version's realized AUC falls below its "
        "holdout AUC (realized_performance_check), retrain on the newest labelled periods; "
        "once per failed evaluation and at most once per CHURN_RETRAIN_COOLDOWN_SECONDS.",
    )(retrain_tick)


def retrain_tick(
    context: dg.SensorEvaluationContext, policy: ChurnPolicy
) -> dg.SensorResult | dg.SkipReason:
    """One tick: :func:`retrain_decision` now, with the policy's cooldown."""
    return retrain_decision(
        context.instance, context.cursor, time.time(), policy.policy().retrain_cooldown_seconds
    )


@dg.definitions
def defs() -> dg.Definitions:
    # The interval is read when the code loads: Dagster needs it to define the sensor.
    return dg.Definitions(sensors=[build_retrain_sensor(load_settings().sensor_interval_seconds)])
