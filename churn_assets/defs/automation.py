"""When each asset updates by itself under the daemon: the automation conditions, in one
place, and the sensors that evaluate them. (A person's run, ``churn run``, materialises
the whole graph in one run instead; nothing outside the daemon evaluates these.)

The chain:

- new raw files (``raw_files_sensor``, by content fingerprint) -> ingest;
- ingest -> staging views -> the features, labels and snapshots of the periods the load
  can have changed (the new period, the periods whose labels the new orders mature, any
  period with revised orders or customers: ``churn_assets/defs/rebuild.py``; the
  single-run backfill policy makes that one dbt invocation) -> ``current_features``;
- new features or a new champion -> drift monitor; the newest period is scored;
- new scores or labels -> realized performance -> analyst tables;
- the first model is trained once the training snapshots exist; later models come from
  the retraining sensor, and ``churn_champion`` from the promotion sensor (both sensors
  close a loop the graph cannot express: a check result launching its own upstream).

No eager condition moves past an upstream blocking check (gate) that failed: a failed dbt
test, GX suite or AUC gate stops everything downstream, under automation as in a run.
"""

from __future__ import annotations

import warnings

import dagster as dg

from churn_assets.defs.rebuild import latest_rebuild_keys
from churn_assets.lib.dbt import PERIOD_MODELS
from churn_assets.settings import load_settings

# No upstream asset's latest blocking check (gate) failed. Inside one run the run machinery
# already skips what follows a failed blocking check; this carries that across runs.
# (Dagster's all_deps_blocking_checks_passed would also wait for checks that have not
# reported yet, costing a run per layer of checks.)
NO_FAILED_UPSTREAM_GATE = ~dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.any_checks_match(
        dg.AutomationCondition.check_failed(), blocking_only=True
    )
).with_label("no upstream gate failed")

# Update when an upstream asset updates (or this one is newly missing), unless a gate
# upstream failed.
GATED_EAGER = (dg.AutomationCondition.eager() & NO_FAILED_UPSTREAM_GATE).with_label(
    "eager, unless an upstream gate failed"
)


class PeriodsTheLoadChanged(dg.AutomationCondition):
    """True for the periods the last load can have changed: the ones ``raw_orders``
    records from its ``rebuild_from`` on (``churn_assets/defs/rebuild.py``), every period
    when the load did not say (one made before the rule existed)."""

    @property
    def description(self) -> str:
        return "Periods the last load can have changed"

    @property
    def name(self) -> str:
        return "periods_the_load_changed"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        keys = latest_rebuild_keys(context.asset_graph_view.instance)
        if keys is None:
            return dg.AutomationResult(context, true_subset=context.candidate_subset)
        subset = context.candidate_subset.compute_intersection_with_partition_keys(set(keys))
        return dg.AutomationResult(context, true_subset=subset)


# The per-period marts: the periods the last load can have changed, when the staging views
# update. A month's file changes a few: the new period, those whose label windows its
# orders reach, and any whose orders or customers it revised; rebuilding every period
# would cost a whole history's build each month. Dagster's eager ignores an upstream
# update made by a run that also built this asset (for one of its partitions: the new
# period), which would leave the older periods' labels as they were although the new
# orders close their label windows. Unlike eager, a newly added period is not a trigger
# of its own: the file that adds it also updates the staging views, and under the daemon
# (two automation sensors) the new period would otherwise be built once before the
# staging run, then again with the others: four runs a month for nothing (the periods,
# then the features, scores and analyst tables they update). A request is handled once
# (``since_last_handled``): a failed rebuild waits for the next load, which rebuilds it.
_ANY_DEP_UPDATED = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.newly_updated() | dg.AutomationCondition.will_be_requested()
).with_label("any dep updated")
CHANGED_PERIODS_EAGER = (
    _ANY_DEP_UPDATED.since_last_handled()
    & PeriodsTheLoadChanged()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & NO_FAILED_UPSTREAM_GATE
).with_label(
    "the periods the last load can have changed, when the staging views update, unless an "
    "upstream gate failed"
)

# The backtest replays training: it follows a new model, not every new month of snapshots.
AFTER_A_NEW_MODEL = (
    dg.AutomationCondition.eager().allow(dg.AssetSelection.assets("churn_model"))
    & NO_FAILED_UPSTREAM_GATE
).with_label("after a new model, unless an upstream gate failed")

# What reads the scores (realized performance, the analyst tables) follows the scores only:
# before the first champion there is nothing to read, and the labels' periods that were
# never scored (all but the newest, at first) do not count as "missing".
_SCORE_LINEAGE = dg.AssetSelection.assets("churn_scores", "realized_performance", "customer_360")
EAGER_OVER_SCORED_PERIODS = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .allow(_SCORE_LINEAGE)
    & NO_FAILED_UPSTREAM_GATE
).with_label("when the scores update, unless an upstream gate failed")

# The first model: eager while it was never built (the first training snapshots, or the
# next ones if the first attempt failed for want of labelled periods). After that,
# retraining is the retraining sensor's decision (a failed drift gate or realized-
# performance check), not a reaction to every new month.
FIRST_TRAINING = (dg.AutomationCondition.missing() & GATED_EAGER).with_label(
    "until the first model exists: eager, unless an upstream gate failed"
)

# Reference data with no upstream (the dbt seed): built when missing. Dagster's eager and
# on_missing conditions skip assets that were already missing when automation started.
WHEN_MISSING = (
    dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.execution_failed()
).with_label("when missing")


# Every check runs with its asset: requested whenever the asset is. Without a condition of
# its own a check is never "requested", so a downstream asset would wait a whole extra
# tick (and run) for its upstream's blocking checks to report, and a run requested by the
# daemon would not include the checks of the assets it materialises.
def with_its_asset(asset: dg.AssetKey) -> dg.AutomationCondition:
    """Requested exactly when ``asset`` is (not when a dbt relationships test's other
    model is)."""
    return dg.AutomationCondition.asset_matches(
        asset, dg.AutomationCondition.will_be_requested()
    ).with_label("with its asset")


# Two sensors evaluate the conditions, in the code server (custom Python conditions such
# as PeriodsTheLoadChanged need it; `use_user_code_server` is a beta parameter, whose warning would
# greet every command). The per-period marts request many periods at once: as a backfill,
# which their single-run backfill policy makes one run. Everything else requests at most
# one partition (the newest scores) and becomes runs directly: the backfill daemon submits
# every 30 s, and a month's chain of updates would otherwise wait for it at every link.
_PER_PERIOD = dg.AssetSelection.assets(*PERIOD_MODELS)
_PER_PERIOD_WITH_CHECKS = _PER_PERIOD | dg.AssetSelection.checks_for_assets(*PERIOD_MODELS)
AUTOMATION_SENSOR = "churn_automation"
PERIODS_AUTOMATION_SENSOR = "churn_automation_periods"


def build_automation_sensors(interval_seconds: int) -> list[dg.SensorDefinition]:
    """The two automation sensors, evaluating every ``interval_seconds``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [
            dg.AutomationConditionSensorDefinition(
                AUTOMATION_SENSOR,
                target=(dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks())
                - _PER_PERIOD_WITH_CHECKS,
                use_user_code_server=True,
                emit_backfills=False,
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=interval_seconds,
                description="Evaluates the automation condition of every asset but the "
                "per-period marts: new data flows to the drift monitor and the newest period's "
                "scores; a new champion re-scores the current period.",
            ),
            dg.AutomationConditionSensorDefinition(
                PERIODS_AUTOMATION_SENSOR,
                target=_PER_PERIOD_WITH_CHECKS,
                use_user_code_server=True,
                emit_backfills=True,
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=interval_seconds,
                description="Evaluates the per-period marts' automation condition: the "
                "periods the last load can have changed are rebuilt in one run (a backfill) "
                "when the staging views update.",
            ),
        ]


@dg.definitions
def defs() -> dg.Definitions:
    # The interval is read when the code loads: Dagster needs it to define the sensors.
    return dg.Definitions(sensors=build_automation_sensors(load_settings().sensor_interval_seconds))
