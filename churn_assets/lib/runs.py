"""A person's launch of a job, in this process: ``churn run``, ``churn backfill``, the demo.

What follows a launch under the daemon (promotion, drift, scores) is the daemon's business;
here a run is just one run of a job of the definitions, with the logs a terminal wants.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from churn_assets.lib.orphaned_runs import launcher_tags

# INFO, not DEBUG: step and dbt progress without every engine event.
_QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# Single-run backfill: every period from start to end in one run (Dagster's own tags, the
# ones its backfills set for assets with a single-run backfill policy).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def period_range_tags(keys: list[str]) -> dict[str, str]:
    """Run tags that make one run build every period from ``keys[0]`` to ``keys[-1]``."""
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def run_job(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    job_name: str,
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
    partition_key: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Run one job of ``definitions`` in process against ``instance``.

    Every launch carries :func:`~churn_assets.lib.orphaned_runs.launcher_tags`, so a run this
    process leaves unfinished (killed) is marked failed by the next command."""
    return definitions.resolve_job_def(job_name).execute_in_process(
        run_config={**_QUIET, **(run_config or {})},
        instance=instance,
        raise_on_error=False,
        tags={**(tags or {}), **launcher_tags()},
        partition_key=partition_key,
    )
