"""The jobs people and sensors launch. Each is a selection over the one asset graph.

Jobs that include the per-period assets are partitioned by period: launch them for one
period, or for a range in one run (the single-run backfill policy of those assets).
"""

import dagster as dg

_MONITORING = dg.AssetSelection.groups("monitoring")
_SCORING = dg.AssetSelection.groups("scoring", "analytics")
# The online scorer's log and its shadow comparison: written and read outside the pipeline.
_SERVING = dg.AssetSelection.groups("serving")
_PERIOD_FEATURES = dg.AssetSelection.groups("staging", "features")

# A person's run (`churn run`, the demo, "Materialize" on the job in the UI): the whole graph
# of what the files hold, in one run over the run's periods. Under the daemon the same
# assets update by their automation conditions and sensors instead, run by run.
churn_pipeline = dg.define_asset_job(
    "churn_pipeline",
    selection=dg.AssetSelection.all() - _SERVING,
    description="Raw files -> warehouse -> dbt features and labels of the run's periods -> "
    "training cohorts -> gated model -> ONNX -> registered version and its backtest -> "
    "promotion decision -> the newest period's scores -> drift monitor -> realized "
    "performance -> analyst tables.",
)

# The raw files alone: what `churn run` launches when the files cannot even be read for
# their periods, so the contract's own error is reported the usual way.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    description="Validate the raw files against the contract and load them.",
)

# `churn backfill`: the features, labels and training snapshots of a range of periods, from
# the raw tables already loaded, in one run and one dbt invocation.
history_job = dg.define_asset_job(
    "history_job",
    selection=_PERIOD_FEATURES,
    description="Rebuild the per-period features, labels and training snapshots of a range "
    "of periods (a backfill) from the loaded raw tables.",
)

# What the retraining sensor launches: train, gate, export and register from the training
# snapshots already built (the newest periods' labels are rebuilt when data arrives).
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training"),
    description="Retrain on the newest labelled periods: cohorts, out-of-time holdout, gates, "
    "registration, backtest.",
)

# New data arrives: load it, rebuild the periods' features, measure drift against the champion.
monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.groups("ingest") | _PERIOD_FEATURES | _MONITORING,
    description="Load the raw files, rebuild the periods' features and measure drift vs the "
    "champion.",
)

# Score the run's periods with the champion, judge matured periods, refresh analyst tables.
scoring_job = dg.define_asset_job(
    "scoring_job",
    selection=_SCORING,
    description="Batch-score the run's periods with the champion's ONNX; realized performance "
    "of matured periods; refresh analyst tables.",
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        jobs=[churn_pipeline, ingest_job, history_job, training_job, monitoring_job, scoring_job]
    )
