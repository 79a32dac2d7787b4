"""Freshness of the batch scores: a WARN check that fails when ``churn_scores`` has not
been refreshed for one period plus a grace period (the ``policy`` resource's
``scores_freshness_grace_hours``, default ``CHURN_SCORES_FRESHNESS_GRACE_HOURS``).

Measured on the last materialisation (when scores were written), not on the period the
scores are for: the question is "did this month's run happen", which a data set whose
newest period lies in the past (the demo's) must not fail on by construction.

The grace is read in the check's run, from the run's ``policy`` resource, so a run can
override it in the launchpad (Dagster's ``build_last_update_freshness_checks`` fixes it
when the code loads). The result carries the metadata Dagster's freshness checks carry, so
``build_sensor_for_freshness_checks`` below schedules it as it would one of those.
"""

import time
import warnings
from datetime import timedelta

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_factories.utils import (
    FRESH_UNTIL_METADATA_KEY,
    FRESHNESS_PARAMS_METADATA_KEY,
    LAST_UPDATED_TIMESTAMP_METADATA_KEY,
    LOWER_BOUND_DELTA_PARAM_KEY,
    LOWER_BOUND_TIMESTAMP_METADATA_KEY,
    retrieve_last_update_record,
    retrieve_timestamp_from_record,
)

from churn_assets.defs.resources import ChurnPolicy
from churn_assets.periods import Period, longest_period
from churn_assets.settings import load_settings

SCORES = dg.AssetKey("churn_scores")


def scores_freshness_window(period: Period, grace_hours: float) -> timedelta:
    """One period plus the grace period."""
    return longest_period(period) + timedelta(hours=grace_hours)


def freshness_result(updated: float | None, now: float, window: timedelta) -> dg.AssetCheckResult:
    """Pass when the scores were written (``updated``, a timestamp) within ``window`` of
    ``now``; a pass says until when it holds (``dagster/fresh_until_timestamp``), which the
    sensor waits for before it evaluates again."""
    allowed = window.total_seconds()
    lower_bound = now - allowed
    metadata: dict[str, dg.MetadataValue] = {
        FRESHNESS_PARAMS_METADATA_KEY: dg.MetadataValue.json(
            {LOWER_BOUND_DELTA_PARAM_KEY: allowed}
        ),
        LOWER_BOUND_TIMESTAMP_METADATA_KEY: dg.MetadataValue.timestamp(lower_bound),
    }
    passed = False
    description = "churn_scores has never been written"
    if updated is not None:
        passed = updated >= lower_bound
        metadata[LAST_UPDATED_TIMESTAMP_METADATA_KEY] = dg.MetadataValue.timestamp(updated)
        if passed:
            metadata[FRESH_UNTIL_METADATA_KEY] = dg.MetadataValue.timestamp(updated + allowed)
        description = (
            f"scores last written {_days(now - updated)} ago; allowed: {_days(allowed)} "
            "(one period plus the grace)"
        )
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days"


@dg.asset_check(asset=SCORES, name="freshness_check")
def scores_freshness_check(
    context: dg.AssetCheckExecutionContext, policy: ChurnPolicy
) -> dg.AssetCheckResult:
    """Scores older than one period plus the grace (policy ``scores_freshness_grace_hours``):
    the period's data did not arrive, or scoring stopped."""
    grace = policy.policy().scores_freshness_grace_hours
    window = scores_freshness_window(load_settings().period, grace)
    record = retrieve_last_update_record(context.instance, SCORES, partition_key=None)
    updated = retrieve_timestamp_from_record(record) if record is not None else None
    return freshness_result(updated, time.time(), window)


# Evaluates the freshness check on a schedule of its own (a run of the check alone): the UI
# shows it on churn_scores. Dagster marks this sensor superseded by FreshnessPolicy, which
# fixes its window when the code loads: a grace a run can override needs a check.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    scores_freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=[scores_freshness_check],
        name="scores_freshness_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=[scores_freshness_check], sensors=[scores_freshness_sensor])
