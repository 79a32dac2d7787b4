"""Run jobs and sensors in process, against the persistent instance under ``CHURN_HOME``.

This is what `churn run` / `churn demo` use instead of the daemon: the same job and sensor
definitions, executed one after another in this process, with their results recorded in
the same instance that `churn dev` shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from churn_assets import periods
from churn_assets.defs.partitions import registered_periods as registered_periods
from churn_assets.periods import Period

# INFO, not DEBUG: step and dbt progress without every engine event.
_QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_job(
    instance: dg.DagsterInstance,
    job_name: str,
    ops_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    partition_key: str | None = None,
) -> dg.ExecuteInProcessResult:
    from churn_assets.definitions import defs

    run_config: dict[str, Any] = dict(_QUIET)
    if ops_config:
        run_config["ops"] = ops_config
    job = defs().resolve_job_def(job_name)
    return job.execute_in_process(
        run_config=run_config,
        instance=instance,
        raise_on_error=False,
        tags=tags,
        partition_key=partition_key,
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
    result = run_job(instance, "training_job", tags=dict(request.tags))  # unpartitioned
    return f"retraining: drift gate failed, launched training_job ({request.run_key})", result


# The run tags of a single-run backfill: every period from start to end, in one run.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def period_range_tags(keys: list[str]) -> dict[str, str]:
    """Run tags that make one run build every period from ``keys[0]`` to ``keys[-1]``."""
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def periods_in_files(raw_dir: Path, period: Period) -> list[str] | None:
    """The periods of the orders file, read from its ``ordered_at`` column only; ``None``
    when it cannot be read (the run's ingest step then reports the contract violation)."""
    import pyarrow.compute as pc

    from churn_assets.data.contract import find_table_file

    try:
        path = find_table_file(raw_dir, "orders")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            column = pq.read_table(path, columns=["ordered_at"]).column("ordered_at")
        else:
            from pyarrow import csv

            options = csv.ConvertOptions(
                include_columns=["ordered_at"], column_types={"ordered_at": "timestamp[s]"}
            )
            column = csv.read_csv(path, convert_options=options).column("ordered_at")
        bounds = pc.min_max(column)
        first, last = bounds["min"].as_py(), bounds["max"].as_py()
    except Exception:
        return None
    if first is None or last is None:
        return None
    return [periods.as_key(e) for e in periods.period_ends(first.date(), last.date(), period)]


def register_periods(instance: dg.DagsterInstance, keys: list[str]) -> None:
    """Make sure the periods a run is launched for exist, before it starts.

    Only adds: retiring stale periods and fixing their order is the ingest step's job,
    inside the run and under the warehouse write lock. Deleting here would pull a period
    from under another process's run that is building it right now.
    """
    from churn_assets.defs.partitions import PERIODS_NAME, registered_periods

    existing = set(registered_periods(instance))
    missing = [key for key in keys if key not in existing]
    if missing:
        instance.add_dynamic_partitions(PERIODS_NAME, missing)
