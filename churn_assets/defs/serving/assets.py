"""The online scorer's feed on Spark, its prediction log, and what the log says about the
challenger.

``current_features_export`` writes the file the scorer loads its copy of the features from
when the engine is Spark (it needs no JVM that way). ``churn serve`` runs outside Dagster
and writes ``scoring.online_predictions`` itself: here it is an external asset, so the graph
shows where the analyst model and the shadow comparison read from. ``shadow_comparison`` is
on demand (no automation condition): the log grows with every request, not with any event
Dagster sees, and ``churn status`` computes the same comparison live.
"""

from typing import Any

import dagster as dg

from churn_assets.defs.automation import GATED_EAGER
from churn_assets.defs.resources import WarehouseResource
from churn_assets.ml.shadow import describe, pairs_from_groups
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.settings import load_settings
from churn_assets.tables.feature_export import EXPORT_ASSET, write_feature_export

GROUP = "serving"


# In the features group, beside current_features, not in serving: every job that rebuilds
# the table (a person's run, `churn backfill`, new data) selects that group, so the file is
# rewritten in the same run and a scorer never serves an older period than the warehouse.
# Defined on both engines, being cheap (a million synthetic customers: 22 MiB, written in
# 1 s): the scorer reads it on Spark; on Postgres it could feed a scorer that cannot reach
# the warehouse, though the scorer reads the table there.
@dg.asset(
    name=EXPORT_ASSET,
    deps=[dg.AssetKey("current_features")],
    group_name="features",
    kinds={"parquet"},
    automation_condition=GATED_EAGER,
)
def current_features_export(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The newest period's features (`marts.current_features`) as one Parquet file at
    CHURN_ONLINE_FEATURES_PATH: what the online scorer loads its copy of the features from
    on Spark, without a JVM. Replaced atomically after every build of current_features."""
    exported = write_feature_export(
        warehouse.client().read_current_features(), load_settings().online_features_path
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": exported.rows,
            "as_of": exported.as_of.isoformat() if exported.as_of else "none (no rows)",
            "path": dg.MetadataValue.path(str(exported.path)),
            "bytes": exported.bytes,
        }
    )


online_predictions = dg.AssetSpec(
    "online_predictions",
    group_name=GROUP,
    kinds={"postgres"},
    description=f"Every prediction `churn serve` answered (`{ONLINE_PREDICTIONS_TABLE}`), "
    "written by the scorer, not by Dagster. A row is one POST /predict (or one item of a "
    "POST /predict/batch, batch_item its index): the model that "
    "answered (served_by: champion, or canary for the challenger's share), its probability "
    "and risk band, the features' as_of when asked by customer id, and the other model's "
    "result (shadow_*) while the challenger differs from the champion. Kept for "
    "CHURN_PREDICTION_LOG_RETENTION_DAYS: the scorer deletes older rows.",
    metadata={"dagster/table_name": ONLINE_PREDICTIONS_TABLE},
)

_PAIR_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("champion_version", "string"),
        dg.TableColumn("challenger_version", "string"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("band_agreement", "float", description="share with equal risk bands"),
        dg.TableColumn("mean_abs_diff", "float", description="mean |probability difference|"),
        dg.TableColumn("rank_correlation", "float", description="Spearman; empty if undefined"),
        dg.TableColumn("first_scored_at", "string"),
        dg.TableColumn("last_scored_at", "string"),
    ]
)


@dg.asset(deps=[online_predictions], group_name=GROUP, kinds={"postgres", "pandas"})
def shadow_comparison(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """How the challenger would have served live traffic: for each (champion, challenger)
    pair in the online prediction log, the share of requests both put in the same risk
    band, the mean absolute difference of their probabilities and the Spearman rank
    correlation. On demand; `churn status` computes it live."""
    pairs = pairs_from_groups(warehouse.client().read_shadow_groups())
    summary = describe(pairs)
    context.log.info(summary)
    metadata: dict[str, Any] = {
        "rows": sum(pair.rows for pair in pairs),
        "summary": summary,
        "pairs": dg.MetadataValue.table(
            [dg.TableRecord(pair.as_dict()) for pair in pairs], schema=_PAIR_SCHEMA
        ),
    }
    if pairs:  # the newest pair as plain numbers, so they plot across materialisations
        newest = pairs[-1]
        metadata |= {
            "champion_version": newest.champion_version,
            "challenger_version": newest.challenger_version,
            "band_agreement": newest.band_agreement,
            "mean_abs_diff": newest.mean_abs_diff,
            "rank_correlation": newest.rank_correlation,
        }
    return dg.MaterializeResult(metadata=metadata)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[current_features_export, online_predictions, shadow_comparison])
