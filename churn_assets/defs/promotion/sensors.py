"""Promotion: a sensor that decides, once per registered version, whether it becomes champion.

The decision logic is pure (``churn_assets.ml.promote.should_promote``); the sensor only
finds undecided versions in the MLflow registry, applies the decision there (aliases
``champion``/``challenger`` and ``promotion.*`` tags) and reports it to Dagster as a
materialisation of the ``churn_champion`` asset, so the UI shows the champion's history.
"""

import json

import dagster as dg

from churn_assets.defs.resources import ChurnPolicy, MlflowResource
from churn_assets.ml import tracking
from churn_assets.ml.champion import CHAMPION
from churn_assets.ml.promote import PromotionPolicy
from churn_assets.settings import load_settings

CHAMPION_ASSET = dg.AssetKey("churn_champion")

churn_champion = dg.AssetSpec(
    CHAMPION_ASSET,
    group_name="promotion",
    kinds={"mlflow", "onnx"},
    description="The `champion` alias of `churn-model` in the MLflow registry. Each "
    "materialisation is a promotion decision made by `champion_promotion_sensor` "
    "(reason, both models' metrics on the challenger's holdout, bootstrap interval).",
    deps=[dg.AssetKey("churn_model_version")],
)


def promotion_events(
    mlflow: MlflowResource, policy: PromotionPolicy, after_version: int
) -> tuple[list[dg.AssetMaterialization], int, list[str]]:
    """Decide every undecided version newer than ``after_version``; return the Dagster
    events, the newest version decided and one log line per decision."""
    from churn_assets.ml.champion import apply_decision, decide, undecided_versions

    events: list[dg.AssetMaterialization] = []
    lines: list[str] = []
    newest = after_version
    for version in undecided_versions(mlflow.tracking_uri, after_version, mlflow.model_name):
        try:
            decision = decide(mlflow.tracking_uri, version, policy, mlflow.model_name)
        except tracking.RegistryUnavailable as exc:
            # The registry went away mid-tick: keep what was decided, retry the rest later.
            lines.append(f"v{version}: not decided, registry unreachable: {exc}")
            break
        apply_decision(mlflow.tracking_uri, decision, mlflow.model_name)
        champion = tracking.alias_version(mlflow.tracking_uri, CHAMPION, mlflow.model_name)
        events.append(
            dg.AssetMaterialization(
                asset_key=CHAMPION_ASSET,
                description=decision.reason,
                metadata={
                    "champion_version": champion or "none",
                    "challenger_version": version,
                    "promoted": decision.promote,
                    "reason": decision.reason,
                    "decision": dg.MetadataValue.json(
                        json.loads(json.dumps(decision.as_dict(), default=str))
                    ),
                },
            )
        )
        lines.append(f"v{version}: {'promoted' if decision.promote else 'kept'}: {decision.reason}")
        newest = max(newest, int(version))
    return events, newest, lines


@dg.sensor(
    minimum_interval_seconds=load_settings().sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Decides once per new registered version of churn-model whether it replaces "
    "the champion (AUC gain, paired bootstrap, Brier), and moves the MLflow aliases.",
)
def champion_promotion_sensor(
    context: dg.SensorEvaluationContext, mlflow: MlflowResource, policy: ChurnPolicy
) -> dg.SensorResult | dg.SkipReason:
    if tracking.local_store_missing(mlflow.tracking_uri):
        return dg.SkipReason("no model registered yet (the local MLflow store does not exist)")
    try:
        tracking.check_reachable(mlflow.tracking_uri)
    except tracking.RegistryUnavailable as exc:
        # Nothing is read or written: no half-promotion when the registry is down.
        return dg.SkipReason(f"registry unreachable, nothing decided: {exc}")
    cursor = json.loads(context.cursor) if context.cursor else {"last_version": 0}
    rules = PromotionPolicy.from_policy(policy.policy())
    events, newest, lines = promotion_events(mlflow, rules, int(cursor["last_version"]))
    if not events:
        return dg.SkipReason(
            "; ".join(lines)
            or f"no undecided version of {mlflow.model_name} after v{cursor['last_version']}"
        )
    for line in lines:
        context.log.info(line)
    return dg.SensorResult(asset_events=events, cursor=json.dumps({"last_version": newest}))


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[churn_champion], sensors=[champion_promotion_sensor])
