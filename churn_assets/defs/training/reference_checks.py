"""The reference-model check: is the network better than a logistic regression?

A warning, not a gate: on a few hundred holdout rows a small AUC difference can be noise,
so a trailing MLP is still exported and registered, and its model card says it trails.
"""

import dagster as dg

from churn_assets.defs.automation import with_its_asset
from churn_assets.defs.resources import ChurnPolicy
from churn_assets.defs.training.assets import churn_model
from churn_assets.ml.artifacts import TrainedModel
from churn_assets.ml.gates import reference_gate
from churn_assets.policy import env_name

TOLERANCE_VARIABLE = env_name("reference_auc_tolerance")


@dg.asset_check(
    asset=churn_model,
    blocking=False,
    automation_condition=with_its_asset(churn_model.key),
)
def reference_model_check(churn_model: TrainedModel, policy: ChurnPolicy) -> dg.AssetCheckResult:
    """Holdout ROC AUC of the MLP >= that of the logistic-regression reference (same features,
    same training rows, same holdout) minus the policy's reference_auc_tolerance
    (CHURN_REFERENCE_AUC_TOLERANCE). Severity WARN: nothing downstream is stopped."""
    tolerance = policy.policy().reference_auc_tolerance
    mlp_auc = churn_model.metrics["roc_auc"]
    reference_auc = churn_model.metrics.get("reference_auc")
    gate = reference_gate(mlp_auc, reference_auc, tolerance)
    rule = f"{gate.name} {gate.comparison} {gate.threshold:g} ({TOLERANCE_VARIABLE})"
    if reference_auc is None or gate.observed is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no reference AUC recorded: the model was trained before the "
            "reference model existed; retrain to compare",
            metadata={"rule": rule, "tolerance_variable": TOLERANCE_VARIABLE},
        )
    return dg.AssetCheckResult(
        passed=bool(gate.passed),
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if gate.passed
        else f"the MLP trails the logistic-regression reference by {-gate.observed:.4f} AUC "
        f"(tolerance {tolerance:g}, {TOLERANCE_VARIABLE})",
        metadata={
            "mlp_auc": dg.MetadataValue.float(mlp_auc),
            "reference_auc": dg.MetadataValue.float(reference_auc),
            "observed": dg.MetadataValue.float(gate.observed),
            "tolerance": dg.MetadataValue.float(tolerance),
            "tolerance_variable": TOLERANCE_VARIABLE,
            "rule": rule,
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=[reference_model_check])
