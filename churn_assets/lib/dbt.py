"""dbt glue shared by the Dagster areas: the project, the translator, CLI-arg builders."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject

from churn_assets.settings import DBT_PROJECT_DIR, load_settings

# dbt source table -> the Dagster asset that loads it, so the UI draws one lineage graph
# from the raw files to the features.
SOURCE_ASSET_KEYS: Mapping[tuple[str, str], dg.AssetKey] = {
    ("raw", "customers"): dg.AssetKey("raw_customers"),
    ("raw", "orders"): dg.AssetKey("raw_orders"),
    ("scoring", "churn_scores"): dg.AssetKey("churn_scores"),
    ("scoring", "realized_performance"): dg.AssetKey("realized_performance"),
}
# dbt folder (fqn[1]) -> Dagster group; everything else lands in "features".
_GROUPS_BY_FOLDER = {"staging": "staging", "marts": "features", "analytics": "analytics"}
# The analyst views read the batch scores, which the Dagster step `churn_scores` writes
# after the features: they are a separate dbt step so the graph has no cycle.
ANALYTICS_SELECT = "path:models/analytics"
# The per-period marts (incremental on as_of): one Dagster asset per model, partitioned by
# period. current_features follows the newest period and is a step of its own after them.
PERIOD_MODELS = ("customer_features", "churn_labels", "training_snapshot")
PERIOD_SELECT = " ".join(PERIOD_MODELS)
CURRENT_SELECT = "current_features"


@cache
def churn_dbt_project() -> DbtProject:
    """The dbt project, with a manifest guaranteed to exist.

    ``prepare_if_dev`` re-parses under ``dagster dev``; outside it we still parse once when
    no manifest exists, so a fresh clone loads under any entry point (pytest, ``churn``).
    """
    _put_interpreter_bin_on_path()
    settings = load_settings()
    project = DbtProject(project_dir=DBT_PROJECT_DIR, target=settings.dbt_target)
    if settings.warehouse_url:
        # The manifest records the database name; Dagster's row-count queries use it, so
        # parse against the configured warehouse (no connection is made to parse).
        from churn_assets.warehouse import parse_url

        with environ(parse_url(settings.warehouse_url).dbt_env()):
            project.preparer.prepare(project)
        return project
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        project.preparer.prepare(project)
    return project


def _put_interpreter_bin_on_path() -> None:
    """Make the venv's ``dbt`` findable when ``churn`` runs without an activated venv.

    dagster-dbt looks ``dbt`` up on PATH (also inside ``prepare``, which accepts no
    executable), so `.venv/bin/churn demo` would otherwise fail with "dbt not found".
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if (Path(bin_dir) / "dbt").exists() and bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir


class ChurnDbtTranslator(DagsterDbtTranslator):
    """Maps dbt sources onto the ingest assets and dbt folders onto Dagster groups."""

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
        from churn_assets.defs.automation import with_its_asset

        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        return spec._replace(automation_condition=with_its_asset(spec.asset_key)) if spec else None


def _automation_condition(props: Mapping[str, Any]) -> dg.AutomationCondition:
    # Seeds have no upstream; the analyst tables read the scored periods only; everything
    # else follows its upstream (see churn_assets.defs.automation).
    from churn_assets.defs import automation

    if props["resource_type"] == "seed":
        return automation.WHEN_MISSING
    if _group_name(props) == "analytics":
        return automation.EAGER_OVER_SCORED_PERIODS
    if props["name"] in PERIOD_MODELS:
        return automation.EVERY_PERIOD_EAGER
    return automation.GATED_EAGER


def _group_name(props: Mapping[str, Any]) -> str:
    fqn = props.get("fqn", [])
    if props["resource_type"] == "seed":
        return "staging"
    folder = fqn[1] if len(fqn) > 2 else ""
    return _GROUPS_BY_FOLDER.get(folder, "features")


def dbt_vars(period_ends: list[str], window_days: int) -> dict[str, Any]:
    """The dbt ``--vars`` for a run: the periods it builds (none for unpartitioned steps)."""
    variables: dict[str, Any] = {"churn_window_days": window_days}
    if period_ends:
        variables["period_ends"] = sorted(period_ends)
    return variables


def dbt_build_args(*, period_ends: list[str], window_days: int, full_refresh: bool) -> list[str]:
    """``dbt build`` arguments for one run (pure, so tests can check them)."""
    args = ["build", "--vars", json.dumps(dbt_vars(period_ends, window_days), sort_keys=True)]
    # A test runs with a step only if each model it reads is built in that step or
    # upstream of it: the staging step must not run the marts' relationship tests (the
    # marts may not exist yet; they run them in their own step, under automation a run of
    # its own). dbt's default, "eager", would run them.
    args += ["--indirect-selection", "buildable"]
    if full_refresh:
        args.append("--full-refresh")
    return args


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """Temporarily sets environment variables (profiles.yml reads the warehouse from them)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
