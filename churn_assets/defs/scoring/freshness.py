"""Freshness of the batch scores: a WARN check that fails when ``churn_scores`` has not
been refreshed for one period plus a grace period (``CHURN_SCORES_FRESHNESS_GRACE_HOURS``).

Measured on the last materialisation (when scores were written), not on the period the
scores are for: the question is "did this month's run happen", which a data set whose
newest period lies in the past (the demo's) must not fail on by construction.
"""

from datetime import timedelta

import dagster as dg

from churn_assets.periods import longest_period
from churn_assets.policy import load_policy
from churn_assets.settings import load_settings

SCORES = dg.AssetKey("churn_scores")


def scores_freshness_window() -> timedelta:
    """One period plus the grace period."""
    grace = timedelta(hours=load_policy().scores_freshness_grace_hours)
    return longest_period(load_settings().period) + grace


scores_freshness_checks = dg.build_last_update_freshness_checks(
    assets=[SCORES], lower_bound_delta=scores_freshness_window()
)

# Evaluates the freshness checks on a schedule of its own (no run needed): the UI shows
# them on churn_scores, and the alert sensor reports a failure like any other check.
scores_freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=scores_freshness_checks,
    name="scores_freshness_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=scores_freshness_checks, sensors=[scores_freshness_sensor])
