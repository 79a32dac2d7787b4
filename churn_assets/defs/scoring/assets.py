"""Batch scores for analysts: every current customer scored with the champion's ONNX file."""

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np

from churn_assets.data.scores import SCORES_SCHEMA, write_scores
from churn_assets.data.snapshot import read_feature_table
from churn_assets.defs.resources import ChurnPolicy, MlflowResource, WarehouseResource
from churn_assets.ml import tracking
from churn_assets.schema import CURRENT_FEATURES_TABLE


@dg.asset(
    deps=[dg.AssetKey("current_features"), dg.AssetKey("churn_champion")],
    group_name="scoring",
    kinds={"onnx", "postgres"},
    metadata={"dagster/table_name": f"{SCORES_SCHEMA}.churn_scores"},
)
def churn_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    policy: ChurnPolicy,
) -> dg.MaterializeResult:
    """Churn probability and risk band for every customer in `marts.current_features`,
    scored in batches by onnxruntime with the champion, with lineage columns (model
    version and sha256, feature as_of, Dagster run). Replaces `scoring.churn_scores` in one
    transaction and appends to `scoring.churn_scores_history`."""
    from churn_assets.ml.bands import RiskBands
    from churn_assets.ml.champion import CHAMPION, fetch_version
    from churn_assets.ml.export import OnnxScorer, sha256_file
    from churn_assets.ml.scoring import score_in_batches

    tracking.check_reachable(mlflow.tracking_uri)
    version = tracking.alias_version(mlflow.tracking_uri, CHAMPION, mlflow.model_name)
    if version is None:
        raise dg.Failure(description="no champion yet: nothing to score with")
    with warehouse.connect() as conn:
        features = read_feature_table(conn, CURRENT_FEATURES_TABLE)
    with tempfile.TemporaryDirectory(prefix="churn-score-") as tmp:
        files = fetch_version(mlflow.tracking_uri, version, Path(tmp), mlflow.model_name)
        if not files.gates_passed:
            raise dg.Failure(description=f"champion v{version} is unusable: {files.gate_problem}")
        sha256 = sha256_file(files.onnx_path)
        probabilities = score_in_batches(OnnxScorer(files.onnx_path), features)
    scored_at = datetime.now(UTC).isoformat()
    scores = features[["customer_id"]].assign(
        churn_probability=probabilities.astype(np.float64),
        risk_band=RiskBands.from_policy(policy.policy()).bands(probabilities),
        model_name=mlflow.model_name,
        model_version=version,
        model_sha256=sha256,
        feature_as_of=features["as_of"].astype(str),
        scored_at=scored_at,
        dagster_run_id=context.run.run_id,
    )
    with warehouse.connect() as conn:
        write_scores(conn, scores)
    bands = scores["risk_band"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scores),
            "model_version": version,
            "model_sha256": sha256,
            "feature_as_of": ", ".join(sorted(set(scores["feature_as_of"]))),
            "mean_churn_probability": dg.MetadataValue.float(float(probabilities.mean()))
            if len(scores)
            else 0.0,
            "risk_bands": dg.MetadataValue.json({str(k): int(v) for k, v in bands.items()}),
            "preview": dg.MetadataValue.md(
                scores.sort_values("churn_probability", ascending=False)
                .head(10)[["customer_id", "churn_probability", "risk_band"]]
                .to_markdown(index=False)
            ),
        }
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[churn_scores])
