"""The gates: blocking asset checks, so a failure stops everything downstream in the run."""

import json

import dagster as dg
import pandas as pd

from churn_assets.data.dataset import RAW_SOURCE_ATTR
from churn_assets.defs.automation import with_its_asset
from churn_assets.defs.resources import ChurnPolicy, MlflowResource
from churn_assets.defs.training.assets import churn_model, churn_model_onnx, training_dataset
from churn_assets.ml.artifacts import ExportedModel, TrainedModel
from churn_assets.ml.gates import Gate, auc_gate, parity_gate
from churn_assets.policy import env_name

# mlflow and the quality suite (GX) are imported in the check bodies: every run process
# loads this module to read the code location. The gates are plain values (ml/gates.py).


@dg.asset_check(
    asset=training_dataset,
    blocking=True,
    automation_condition=with_its_asset(training_dataset.key),
)
def training_data_quality(
    context: dg.AssetCheckExecutionContext, training_dataset: pd.DataFrame, policy: ChurnPolicy
) -> dg.AssetCheckResult:
    """Enough labelled customers, churners and non-churners to train and hold out, then the
    Great Expectations suite: columns and dtypes, nulls, ranges, label values, a label rate
    that is not broken (nobody or everybody churned, a jump since the previous training
    snapshot), unique customers. No model trains on data that fails it; every failure names
    the policy variable that moves it."""
    from churn_assets.quality.training_data import (
        TrainingDataRules,
        too_little_data,
        validate_training_dataset,
    )

    source = training_dataset.attrs.get(RAW_SOURCE_ATTR)
    previous = _previous_label_rate(context, source)
    rules = TrainingDataRules(policy.policy(), previous_label_rate=previous)
    shortage = too_little_data(training_dataset, rules)
    report = validate_training_dataset(training_dataset, rules)
    failures = [str(f) for f in report.failures]
    # The shortage message already gives the row count against its minimum: the suite's
    # row-count failure would only repeat it in the gate line.
    repeated = env_name("min_labelled_customers") if shortage else None
    problems = ([shortage] if shortage else []) + [
        str(f) for f in report.failures if repeated is None or f.setting != repeated
    ]
    return dg.AssetCheckResult(
        passed=report.success and shortage is None,
        severity=dg.AssetCheckSeverity.ERROR,
        # One line (the CLI prints it as the gate's reason); " | " because each failure
        # uses "; " inside.
        description=" | ".join(problems) if problems else None,
        metadata={
            "summary": dg.MetadataValue.md(
                (f"**{shortage}**\n\n" if shortage else "") + report.summary_markdown()
            ),
            "expectations_evaluated": report.evaluated,
            "expectations_failed": len(report.failures),
            "failures": dg.MetadataValue.json(([shortage] if shortage else []) + failures),
            "previous_label_rate": dg.MetadataValue.float(previous)
            if previous is not None
            else "none (no earlier accepted training snapshot of this raw source: the "
            "label-rate change rule was not applied)",
        },
    )


_HISTORY = 50
"""How many recent snapshots and check results are searched for the previous label rate."""


def _previous_label_rate(
    context: dg.AssetCheckExecutionContext, source: str | None
) -> float | None:
    """The label rate of the latest earlier training snapshot that passed this check and was
    built from the same raw source.

    Only the same source compares: pointing the platform at another data set (the demo, then
    your own files) is a new history, not a jump in one feed. Only accepted snapshots count:
    a broken label the check refused must not become the baseline its fix is compared with.
    """
    if source is None:
        return None
    accepted = _accepted_snapshots(context.instance)
    records = context.instance.fetch_materializations(
        dg.AssetKey("training_dataset"), limit=_HISTORY
    ).records
    for record in records:
        if record.run_id == context.run.run_id or record.storage_id not in accepted:
            continue  # this run's own snapshot (the one being checked), or a refused one
        materialization = record.asset_materialization
        if materialization is None:
            continue
        earlier_source = materialization.metadata.get("raw_source")
        if getattr(earlier_source, "value", None) != source:
            continue
        value = materialization.metadata.get("label_rate")
        if isinstance(value, dg.FloatMetadataValue) and value.value is not None:
            return float(value.value)
    return None


def _accepted_snapshots(instance: dg.DagsterInstance) -> set[int]:
    """Storage ids of the ``training_dataset`` materialisations this check passed."""
    key = dg.AssetCheckKey(dg.AssetKey("training_dataset"), "training_data_quality")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=_HISTORY)
    accepted: set[int] = set()
    for execution in history:
        evaluation = execution.event.asset_check_evaluation if execution.event else None
        if evaluation is not None and evaluation.passed and evaluation.target_materialization_data:
            accepted.add(evaluation.target_materialization_data.storage_id)
    return accepted


@dg.asset_check(
    asset=churn_model,
    blocking=True,
    automation_condition=with_its_asset(churn_model.key),
)
def auc_gate_check(
    churn_model: TrainedModel, mlflow: MlflowResource, policy: ChurnPolicy
) -> dg.AssetCheckResult:
    """Holdout ROC AUC >= the policy's min_auc (CHURN_MIN_AUC). A weak model is never
    exported, registered or promoted."""
    gate = auc_gate(churn_model.metrics["roc_auc"], policy.policy().min_auc)
    _tag_run(mlflow, churn_model, "gate.auc", gate)
    return _result(gate)


@dg.asset_check(
    asset=churn_model_onnx,
    blocking=True,
    automation_condition=with_its_asset(churn_model_onnx.key),
)
def onnx_parity_check(
    churn_model_onnx: ExportedModel, mlflow: MlflowResource, policy: ChurnPolicy
) -> dg.AssetCheckResult:
    """onnxruntime and torch agree within the policy's parity_tolerance
    (CHURN_PARITY_TOLERANCE) on every holdout row, so what is served is what was evaluated."""
    gate = parity_gate(churn_model_onnx.parity_max_abs_diff, policy.policy().parity_tolerance)
    _tag_run(mlflow, churn_model_onnx.trained, "gate.onnx_parity", gate)
    return _result(gate)


def _result(gate: Gate) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=bool(gate.passed),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "observed": dg.MetadataValue.float(float(gate.observed or 0.0)),
            "threshold": dg.MetadataValue.float(gate.threshold),
            "rule": f"{gate.name} {gate.comparison} {gate.threshold}",
        },
    )


def _tag_run(mlflow: MlflowResource, model: TrainedModel, key: str, gate: Gate) -> None:
    """Record the gate outcome on the MLflow run too, so MLflow alone tells the story."""
    from churn_assets.ml import tracking

    if not model.mlflow_run_id:
        return
    try:
        tracking.check_reachable(mlflow.tracking_uri)
    except tracking.RegistryUnavailable:
        return
    from mlflow.tracking import MlflowClient

    value = json.dumps(
        {"observed": gate.observed, "threshold": gate.threshold, "passed": gate.passed}
    )
    MlflowClient(mlflow.tracking_uri).set_tag(model.mlflow_run_id, key, value)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=[training_data_quality, auc_gate_check, onnx_parity_check])
