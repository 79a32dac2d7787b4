"""Batch scores per period, and how they held up once the period's labels matured."""

import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from churn_assets.defs.automation import EAGER_OVER_SCORED_PERIODS, GATED_EAGER, with_its_asset
from churn_assets.defs.resources import ChurnPolicy, MlflowResource, WarehouseResource
from churn_assets.schema import REALIZED_TABLE
from churn_assets.tables.scores import SCORES_TABLE

GROUP = "scoring"


# The scores are the newest period's: a new period's features or a new champion score it.
# Older periods keep the scores they were given when they were newest
# (`scoring.churn_scores_history`), which is what realized performance judges.
@dg.asset(
    deps=[
        dg.AssetDep("customer_features", partition_mapping=dg.LastPartitionMapping()),
        dg.AssetKey("churn_champion"),
    ],
    group_name=GROUP,
    kinds={"onnx", "postgres"},
    metadata={"dagster/table_name": SCORES_TABLE},
    automation_condition=GATED_EAGER,
)
def churn_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    policy: ChurnPolicy,
) -> dg.MaterializeResult:
    """Churn probability and risk band for every customer of the newest period, scored in
    batches by onnxruntime with the champion, with lineage columns (model version and sha256,
    the model's data-through date, feature as_of, Dagster run). They replace
    `scoring.churn_scores` and, in the same transaction, that version's earlier scores of the
    period in `scoring.churn_scores_history`."""
    # mlflow, onnxruntime and torch load here, not with the code location (every run process).
    from churn_assets.ml import tracking
    from churn_assets.ml.bands import RiskBands
    from churn_assets.ml.champion import CHAMPION, fetch_version
    from churn_assets.ml.export import OnnxScorer, sha256_file
    from churn_assets.ml.scoring import score_in_batches

    tracking.check_reachable(mlflow.tracking_uri)
    version = tracking.alias_version(mlflow.tracking_uri, CHAMPION, mlflow.model_name)
    if version is None:
        raise dg.Failure(description="no champion yet: nothing to score with")
    data_through = _data_through(mlflow, version)
    bands = RiskBands.from_policy(policy.policy())
    period = warehouse.client().newest_feature_period()
    if period is None:
        raise dg.Failure(description="no features yet: build customer_features first")
    with tempfile.TemporaryDirectory(prefix="churn-score-") as tmp:
        files = fetch_version(mlflow.tracking_uri, version, Path(tmp), mlflow.model_name)
        if not files.gates_passed:
            raise dg.Failure(description=f"champion v{version} is unusable: {files.gate_problem}")
        sha256 = sha256_file(files.onnx_path)
        features = warehouse.client().read_period_features([period])
        probabilities = score_in_batches(OnnxScorer(files.onnx_path), features)
    scores = features[["customer_id"]].assign(
        churn_probability=probabilities.astype(np.float64),
        risk_band=bands.bands(probabilities),
        model_name=mlflow.model_name,
        model_version=version,
        model_sha256=sha256,
        feature_as_of=period.isoformat(),
        scored_at=datetime.now(UTC).isoformat(),
        dagster_run_id=context.run.run_id,
        model_data_through=data_through,
    )
    warehouse.client().write_scores(scores)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scores),
            "as_of": period.isoformat(),
            "mean_churn_probability": float(probabilities.mean()),
            "high_risk": int((scores["risk_band"] == "high").sum()),
            "model_version": version,
            "model_sha256": sha256,
            "model_data_through": data_through or "unknown",
        }
    )


def _data_through(mlflow: MlflowResource, version: str) -> str | None:
    from mlflow.tracking import MlflowClient

    from churn_assets.ml import tracking

    tags = MlflowClient(mlflow.tracking_uri).get_model_version(mlflow.model_name, version).tags
    return tags.get(tracking.TAG_DATA_THROUGH)


@dg.asset(
    deps=[churn_scores, dg.AssetKey("churn_labels")],
    group_name=GROUP,
    kinds={"postgres", "pandas"},
    metadata={"dagster/table_name": REALIZED_TABLE},
    automation_condition=EAGER_OVER_SCORED_PERIODS,
)
def realized_performance(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """For every scored period whose labels have matured: each model version's realized AUC,
    Brier score, mean predicted vs observed churn rate, beside its holdout AUC. Only scores
    made by a model trained on data up to the period (its data-through date on or before the
    period's as_of) count: a model trained later has seen the outcome."""
    from churn_assets.ml.realized import realized_performance as compute

    scored = warehouse.client().read_matured_scores()
    realized = compute(scored) if len(scored) else _empty_realized()
    holdout = {str(v): _holdout_auc(mlflow, str(v)) for v in set(realized["model_version"])}
    realized["holdout_auc"] = [holdout[str(v)] for v in realized["model_version"]]
    warehouse.client().write_realized_performance(realized)
    context.log.info(f"realized performance for {len(realized)} (version, period) pair(s)")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(realized),
            "realized": dg.MetadataValue.md(
                realized.to_markdown(index=False, floatfmt=".4f")
                if len(realized)
                else "no scored period has matured labels yet"
            ),
        }
    )


def _empty_realized() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            "model_version",
            "as_of",
            "rows",
            "auc",
            "brier",
            "mean_predicted",
            "observed_rate",
        ]
    )


def _holdout_auc(mlflow: MlflowResource, version: str) -> float | None:
    """The version's AUC on its (out-of-time) holdout, from its MLflow run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow.tracking_uri)
    run_id = client.get_model_version(mlflow.model_name, version).run_id
    return client.get_run(run_id).data.metrics.get("roc_auc") if run_id else None


@dg.asset_check(
    asset=realized_performance,
    blocking=False,
    automation_condition=with_its_asset(realized_performance.key),
)
def realized_performance_check(
    warehouse: WarehouseResource, mlflow: MlflowResource, policy: ChurnPolicy
) -> dg.AssetCheckResult:
    """WARN: the champion's realized AUC fell below its holdout AUC by more than
    CHURN_REALIZED_AUC_TOLERANCE. The retraining sensor treats a failure as a trigger.

    Only the version serving now is judged: a retired champion's periods stay in the
    table for analysts, but retraining because of them would repeat every month.
    """
    from churn_assets.ml import tracking
    from churn_assets.ml.champion import CHAMPION
    from churn_assets.ml.realized import realized_failures

    realized = warehouse.client().read_realized_performance()
    champion = tracking.alias_version(mlflow.tracking_uri, CHAMPION, mlflow.model_name)
    judged = realized[realized["model_version"].astype(str) == str(champion)]
    holdout = {
        str(version): float(auc)
        for version, auc in zip(judged["model_version"], judged["holdout_auc"], strict=True)
        if auc is not None and not math.isnan(auc)
    }
    failures = realized_failures(judged, holdout, policy.policy().realized_auc_tolerance)
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN,
        description=" | ".join(failures) if failures else None,
        metadata={
            "champion_version": champion or "none",
            "periods_judged": len(judged),
            "pairs_in_table": len(realized),
            "tolerance": dg.MetadataValue.float(policy.policy().realized_auc_tolerance),
            "failures": dg.MetadataValue.json(failures),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[churn_scores, realized_performance], asset_checks=[realized_performance_check]
    )
