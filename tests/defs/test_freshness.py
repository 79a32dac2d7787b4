"""The scores' freshness check reads its grace from the run's policy resource: a run can
override it, and the verdict follows."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from churn_assets.defs.resources import policy_resource
from churn_assets.defs.scoring.freshness import (
    SCORES,
    scores_freshness_check,
    scores_freshness_sensor,
)
from churn_assets.policy import load_policy

DAY = 86_400.0


def _defs() -> dg.Definitions:
    """The check and its sensor with the deployment's policy resource."""
    return dg.Definitions(
        assets=[dg.AssetSpec(SCORES)],
        asset_checks=[scores_freshness_check],
        sensors=[scores_freshness_sensor],
        jobs=[
            dg.define_asset_job(
                "freshness", selection=dg.AssetSelection.checks(scores_freshness_check)
            )
        ],
        resources={"policy": policy_resource()},
    )


def _check_run(instance: dg.DagsterInstance, run_config: dict) -> dg.AssetCheckEvaluation:
    """One run of the freshness check alone, as its sensor requests it."""
    result = (
        _defs()
        .resolve_job_def("freshness")
        .execute_in_process(instance=instance, run_config=run_config)
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


@pytest.mark.parametrize(
    ("grace_hours", "fresh"),
    [
        (None, True),  # the default grace, 48 h: 31 days + 2 > 32 days
        (12.0, False),  # this run's grace, 12 h: 31.5 days < 32 days
    ],
)
def test_a_runs_grace_in_the_policy_resource_decides_the_freshness_verdict(
    instance: dg.DagsterInstance, grace_hours: float | None, fresh: bool
) -> None:
    assert load_policy().scores_freshness_grace_hours == 48.0
    # scores written 32 days ago (a monthly period lasts at most 31)
    written = time.time() - 32 * DAY
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            SCORES, metadata={"dagster/last_updated_timestamp": dg.MetadataValue.timestamp(written)}
        )
    )
    run_config = (
        {}
        if grace_hours is None
        else {"resources": {"policy": {"config": {"scores_freshness_grace_hours": grace_hours}}}}
    )
    evaluation = _check_run(instance, run_config)
    assert evaluation.passed is fresh, evaluation.description
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    # a pass says until when it holds: the freshness sensor waits for it
    assert ("dagster/fresh_until_timestamp" in evaluation.metadata) is fresh


def test_the_freshness_sensor_requests_the_check_until_a_pass_says_until_when_it_holds(
    instance: dg.DagsterInstance,
) -> None:
    # Dagster's freshness sensor schedules the check from the result's metadata alone.
    def tick() -> list[dg.RunRequest]:
        with dg.build_sensor_context(instance=instance, definitions=_defs()) as context:
            return list(scores_freshness_sensor.evaluate_tick(context).run_requests or [])

    (request,) = tick()  # never evaluated
    assert request.asset_check_keys == [scores_freshness_check.check_key]
    instance.report_runless_asset_event(dg.AssetMaterialization(SCORES))  # written now
    assert _check_run(instance, {}).passed
    assert tick() == []  # fresh for another period and the grace
