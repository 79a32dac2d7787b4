"""Run jobs and sensors in process, against the persistent instance under ``CHURN_HOME``.

This is what `churn run` / `churn demo` use instead of the daemon: the same job and sensor
definitions, executed one after another in this process, with their results recorded in
the same instance that `churn dev` shows.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

# INFO, not DEBUG: step and dbt progress without every engine event.
_QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_job(
    instance: dg.DagsterInstance,
    job_name: str,
    ops_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    from churn_assets.definitions import defs

    run_config: dict[str, Any] = dict(_QUIET)
    if ops_config:
        run_config["ops"] = ops_config
    job = defs().resolve_job_def(job_name)
    return job.execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False, tags=tags
    )


def promote(instance: dg.DagsterInstance) -> list[str]:
    """Evaluate the promotion sensor once; record its champion events in the instance."""
    from churn_assets.defs.promotion.sensors import champion_promotion_sensor
    from churn_assets.defs.resources import mlflow_resource, policy_resource

    context = dg.build_sensor_context(
        instance=instance, resources={"mlflow": mlflow_resource(), "policy": policy_resource()}
    )
    result = champion_promotion_sensor(context)
    if isinstance(result, dg.SkipReason):
        return [f"promotion: {result.skip_message}"]
    assert isinstance(result, dg.SensorResult)
    lines = []
    for event in result.asset_events:
        # The daemon records a sensor's asset events itself; in process we do it here.
        instance.report_runless_asset_event(event)
        version = event.metadata["challenger_version"]
        lines.append(f"promotion: v{getattr(version, 'value', version)}: {event.description}")
    return lines


def retrain_if_drifted(
    instance: dg.DagsterInstance,
) -> tuple[str, dg.ExecuteInProcessResult | None]:
    """Evaluate the retraining sensor once (no cooldown in process); run what it requests."""
    from churn_assets.defs.monitoring.sensors import retrain_decision

    decision = retrain_decision(instance, cursor=None, now=0.0, cooldown_seconds=0)
    if isinstance(decision, dg.SkipReason):
        return f"retraining: skipped ({decision.skip_message})", None
    request = decision.run_requests[0]  # type: ignore[index]
    result = run_job(instance, "training_job", tags=dict(request.tags))
    return f"retraining: drift gate failed, launched training_job ({request.run_key})", result
