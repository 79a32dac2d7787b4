"""Promotion: a sensor that notices newly registered versions and requests the decision.

A tick lists registry versions (one search call, no download) and requests one run of
``promotion_job`` per version it has not seen, keyed ``promote-v<N>@<registry>``: the run key keeps
a version from being requested twice, the cursor from being looked at twice, and the
asset itself skips a version that already has a decision (decided once, whatever asks).
"""

import hashlib
import json

import dagster as dg
from dagster._core.storage.tags import PRIORITY_TAG

from churn_assets.defs.promotion.assets import CHALLENGER_TAG, CHAMPION_ASSET
from churn_assets.defs.resources import MlflowResource
from churn_assets.settings import load_settings
from churn_assets.urls import mask_url

# Dagster's run-queue priority (``PRIORITY_TAG``, ``dagster/priority``; higher is dequeued
# first, the default is 0). A decision takes seconds, and the runs queued behind it (scores,
# drift, analyst tables) serve whatever is champion when they start: in the production
# topology a decision waited 84 s behind six of them, which then scored with the champion it
# replaced.
PROMOTION_PRIORITY = 10
PROMOTION_SENSOR = "champion_promotion_sensor"

promotion_job = dg.define_asset_job(
    "promotion_job",
    selection=[CHAMPION_ASSET],
    description="Decide whether registered versions replace the champion; move the aliases.",
)


def promotion_requests(
    mlflow: MlflowResource, after_version: int
) -> tuple[list[dg.RunRequest], int]:
    """One run request per undecided version newer than ``after_version``, and the newest.

    The run key names the registry too: pointed at another store (``MLFLOW_TRACKING_URI``),
    the same instance must not take that store's v1 for the v1 it already decided.
    """
    from churn_assets.ml.champion import undecided_versions

    versions = undecided_versions(mlflow.tracking_uri, after_version, mlflow.model_name)
    registry = hashlib.sha256(_registry_key(mlflow).encode()).hexdigest()[:8]
    requests = [
        dg.RunRequest(
            run_key=f"promote-v{version}@{registry}",
            run_config={"ops": {"churn_champion": {"config": {"version": version}}}},
            tags={CHALLENGER_TAG: version, PRIORITY_TAG: str(PROMOTION_PRIORITY)},
        )
        for version in versions
    ]
    return requests, max([after_version, *(int(v) for v in versions)])


def build_promotion_sensor(interval_seconds: int) -> dg.SensorDefinition:
    """The sensor, looking every ``interval_seconds``."""
    return dg.sensor(
        name=PROMOTION_SENSOR,
        job=promotion_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a promotion decision (a run of churn_champion) for each newly "
        "registered version of churn-model.",
    )(promotion_tick)


def promotion_tick(
    context: dg.SensorEvaluationContext, mlflow: MlflowResource
) -> dg.SensorResult | dg.SkipReason:
    """One tick: a run request per version registered since the cursor's."""
    # mlflow loads in the tick, not with the code location (which every run process loads).
    from churn_assets.ml import tracking

    if tracking.local_store_missing(mlflow.tracking_uri):
        return dg.SkipReason("no model registered yet (the local MLflow store does not exist)")
    try:
        tracking.check_reachable(mlflow.tracking_uri)
    except tracking.RegistryUnavailable as exc:
        return dg.SkipReason(f"registry unreachable, nothing requested: {exc}")
    # The newest version looked at, per registry (a cursor from before is per nothing: 0).
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    last = int(seen.get(_registry_key(mlflow), 0)) if "last_version" not in seen else 0
    requests, newest = promotion_requests(mlflow, last)
    if not requests:
        return dg.SkipReason(f"no undecided version of {mlflow.model_name} after v{last}")
    cursor = {key: value for key, value in seen.items() if key != "last_version"}
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps({**cursor, _registry_key(mlflow): newest})
    )


def _registry_key(mlflow: MlflowResource) -> str:
    """The registry's name in the cursor (which the UI shows) and run keys: its URI with
    the password masked, so it is not shown and a changed password is the same registry."""
    return mask_url(mlflow.tracking_uri)


@dg.definitions
def defs() -> dg.Definitions:
    # The interval is read when the code loads: Dagster needs it to define the sensor.
    return dg.Definitions(
        jobs=[promotion_job],
        sensors=[build_promotion_sensor(load_settings().sensor_interval_seconds)],
    )
