"""How dbt's nodes become Dagster assets: keys, groups, lineage onto the ingest assets, and
each model's automation condition (named in :mod:`churn_assets.defs.automation`).

It lives in ``defs/`` because it picks automation conditions: ``lib/`` never imports
``defs/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject

from churn_assets.defs import automation
from churn_assets.lib.dbt import PERIOD_MODELS

# dbt source table -> the Dagster asset that loads it, so the UI draws one lineage graph
# from the raw files to the features.
SOURCE_ASSET_KEYS: Mapping[tuple[str, str], dg.AssetKey] = {
    ("raw", "customers"): dg.AssetKey("raw_customers"),
    ("raw", "orders"): dg.AssetKey("raw_orders"),
    ("scoring", "churn_scores"): dg.AssetKey("churn_scores"),
    ("scoring", "realized_performance"): dg.AssetKey("realized_performance"),
    # Written by the online scorer; an external asset in defs/serving/.
    ("scoring", "online_predictions"): dg.AssetKey("online_predictions"),
}
# dbt folder (fqn[1]) -> Dagster group; everything else lands in "features".
_GROUPS_BY_FOLDER = {"staging": "staging", "marts": "features", "analytics": "analytics"}


class ChurnDbtTranslator(DagsterDbtTranslator):
    """Maps dbt sources onto the ingest assets, dbt folders onto Dagster groups, and gives
    each model and test its automation condition."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            key = SOURCE_ASSET_KEYS.get((props["source_name"], props["name"]))
            return spec.replace_attributes(key=key) if key else spec
        # Keys are bare model names: the schema (staging/marts) is a storage detail that
        # dagster-dbt would otherwise prefix, and it is in the table-name metadata anyway.
        return spec.replace_attributes(
            key=dg.AssetKey(props["name"]),
            group_name=_group_name(props),
            automation_condition=_automation_condition(props),
        )

    def get_asset_check_spec(
        self,
        asset_spec: dg.AssetSpec,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: DbtProject | None,
    ) -> dg.AssetCheckSpec | None:
        # dbt tests run inside `dbt build` with their model: requested with it.
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        return spec._replace(automation_condition=automation.with_its_asset(spec.asset_key))


def _automation_condition(props: Mapping[str, Any]) -> dg.AutomationCondition:
    # Seeds have no upstream; the analyst tables read the scored periods only; everything
    # else follows its upstream (see churn_assets.defs.automation).
    if props["resource_type"] == "seed":
        return automation.WHEN_MISSING
    if _group_name(props) == "analytics":
        return automation.EAGER_OVER_SCORED_PERIODS
    if props["name"] in PERIOD_MODELS:
        return automation.CHANGED_PERIODS_EAGER
    return automation.GATED_EAGER


def _group_name(props: Mapping[str, Any]) -> str:
    fqn = props.get("fqn", [])
    if props["resource_type"] == "seed":
        return "staging"
    folder = fqn[1] if len(fqn) > 2 else ""
    return _GROUPS_BY_FOLDER.get(folder, "features")
