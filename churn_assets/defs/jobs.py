"""The jobs people and sensors launch. Each is a selection over the one asset graph."""

import dagster as dg

_MONITORING = dg.AssetSelection.groups("monitoring")
# Scoring needs a champion, which the promotion sensor sets after the pipeline has run.
_SCORING = dg.AssetSelection.groups("scoring", "analytics")

# Raw files -> features -> gated, registered model: `churn run`, `churn demo`, "Materialize all".
churn_pipeline = dg.define_asset_job(
    "churn_pipeline",
    selection=dg.AssetSelection.all() - _MONITORING - _SCORING,
    description="Raw files -> warehouse -> dbt features and labels -> validated dataset -> "
    "gated model -> ONNX -> registered version.",
)

# What the retraining sensor launches: rebuild features and labels for the latest complete
# label window from the raw tables already loaded, then train, gate, export and register.
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("staging", "features", "training"),
    description="Rebuild dbt features and labels for the latest complete window and retrain.",
)

# New data arrives: load it, rebuild the features, measure drift against the champion.
monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.groups("ingest", "staging", "features") | _MONITORING,
    description="Load the raw files, rebuild features and measure drift vs the champion.",
)


# Score every current customer with the champion, then refresh the analyst tables.
scoring_job = dg.define_asset_job(
    "scoring_job",
    selection=_SCORING,
    description="Batch-score current customers with the champion's ONNX; refresh analyst tables.",
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[churn_pipeline, training_job, monitoring_job, scoring_job])
