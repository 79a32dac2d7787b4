"""``churn_champion``: the promotion decision, made in a run.

The decision logic is pure (``churn_assets.ml.promote.should_promote``) and the registry
work lives in ``churn_assets.ml.champion``; this asset downloads both models, scores them
on the challenger's holdout, applies the decision in MLflow (aliases ``champion`` and
``challenger``, ``promotion.*`` tags) and reports it. In a run, not in a sensor tick: the
downloads and the bootstrap get run logs, a retry policy and no tick timeout.

Each run that decides is a materialisation of the champion alias, whatever the verdict
(metadata ``promoted``; data version: the champion's version): in a person's run the scores
follow the decision, and a step that produced nothing would skip them. When one run
decides several versions, the others' decisions are observations with the same metadata.
"""

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg

from churn_assets.defs.resources import ChurnPolicy, MlflowResource

# ``churn_assets.ml.champion`` and ``ml.promote`` (mlflow, torch, sklearn) are imported in the
# asset body: every run process loads this module to read the code location.
if TYPE_CHECKING:
    from churn_assets.ml.promote import PromotionDecision

CHAMPION_ASSET = dg.AssetKey("churn_champion")
CHALLENGER_TAG = "churn/challenger_version"

# The registry can blink (a tracking server restarting): retry the whole decision, which
# is safe because a version is only marked decided after its aliases moved.
REGISTRY_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)


class PromotionConfig(dg.Config):
    """Run options for a promotion decision.

    Attributes:
        version: The registered version to decide; empty decides every undecided version,
            oldest first (what "Materialize" in the UI does).
    """

    version: str = ""


@dg.asset(
    key=CHAMPION_ASSET,
    deps=[dg.AssetKey("churn_model_version")],
    group_name="promotion",
    kinds={"mlflow", "onnx"},
    retry_policy=REGISTRY_RETRY,
    output_required=False,
    description="The `champion` alias of `churn-model` in the MLflow registry. A run decides "
    "whether a registered version replaces it (AUC gain, paired bootstrap, Brier, both "
    "models on the challenger's holdout); champion_promotion_sensor requests one run per "
    "new version. Materialised at each decision; the metadata says whether it promoted.",
)
def churn_champion(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    mlflow: MlflowResource,
    policy: ChurnPolicy,
) -> Iterator[dg.MaterializeResult]:
    from churn_assets.ml import tracking
    from churn_assets.ml.champion import (
        CHAMPION,
        apply_decision,
        decide,
        record_rollout_history,
        undecided_versions,
    )
    from churn_assets.ml.promote import PromotionPolicy

    tracking.check_reachable(mlflow.tracking_uri)  # RegistryUnavailable -> retried
    pending = undecided_versions(mlflow.tracking_uri, 0, mlflow.model_name)
    if config.version:
        pending = [v for v in pending if v == config.version]
    if not pending:
        context.log.info(
            f"nothing to decide: v{config.version} already has a decision"
            if config.version
            else f"every version of {mlflow.model_name} already has a decision"
        )
        return
    rules = PromotionPolicy.from_policy(policy.policy())
    decisions = []
    for version in pending:
        decision = decide(mlflow.tracking_uri, version, rules, mlflow.model_name)
        apply_decision(mlflow.tracking_uri, decision, mlflow.model_name)
        verdict = "promoted" if decision.promote else "kept"
        context.log.info(f"v{version}: {verdict}: {decision.reason}")
        decisions.append((version, decision))
    champion = tracking.alias_version(mlflow.tracking_uri, CHAMPION, mlflow.model_name)
    promoted = [version for version, decision in decisions if decision.promote]
    # The record of the materialisation: the version now champion if one was promoted, else
    # the last one decided (kept). No champion at all: nothing for what follows to use, so
    # no materialisation and the steps after it are skipped.
    recorded = (promoted[-1] if promoted else decisions[-1][0]) if champion else None
    for version, decision in decisions:
        if version == recorded:
            continue
        context.log_event(
            dg.AssetObservation(
                asset_key=CHAMPION_ASSET,
                description=decision.reason,
                metadata=_decision_metadata(champion, version, decision),
            )
        )
    if recorded is not None:
        metadata = _decision_metadata(champion, recorded, dict(decisions)[recorded])
        if promoted and champion is not None:  # the new champion's card gets the history
            history = record_rollout_history(mlflow.tracking_uri, champion, mlflow.model_name)
            metadata["rollout_history"] = dg.MetadataValue.md(history)
        yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(f"v{champion}"))


def _decision_metadata(
    champion: str | None, version: str, decision: "PromotionDecision"
) -> dict[str, Any]:
    return {
        "champion_version": champion or "none",
        "challenger_version": version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "decision": dg.MetadataValue.json(json.loads(json.dumps(decision.as_dict(), default=str))),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[churn_champion])
