"""The one entry point: autoloads ``churn_assets/defs`` and adds cross-cutting wiring."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

# Materialises every asset and runs every check, in dependency order: the job behind
# `churn run`, `churn demo` and the UI's "Materialize all".
churn_pipeline = dg.define_asset_job(
    "churn_pipeline",
    selection=dg.AssetSelection.all(),
    description="Raw files -> warehouse -> dbt features, labels and training snapshot.",
)


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(loaded, dg.Definitions(jobs=[churn_pipeline]))
