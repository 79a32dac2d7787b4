"""dbt models as assets: staging views, per-period features, labels and training snapshot,
the newest period's features, and the analyst tables.

Four dbt steps, because each has its own partitioning: the staging views (unpartitioned),
the per-period marts (partitioned by period; a backfill builds a whole range in one dbt
invocation), ``current_features`` (follows the newest period) and the analyst tables (after
the scores). dbt tests become asset checks (dagster-dbt's default), so a failing test shows
on the model it guards and ``dbt build`` skips everything downstream of it.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliInvocation, DbtCliResource, dbt_assets

from churn_assets.defs.dbt.translator import ChurnDbtTranslator
from churn_assets.defs.partitions import PERIODS, run_period_keys
from churn_assets.defs.resources import ChurnPolicy, LabelDefinition, WarehouseResource
from churn_assets.infra.warehouse import WarehouseError
from churn_assets.lib.dbt import (
    ANALYTICS_SELECT,
    CURRENT_SELECT,
    ONLINE_PREDICTIONS_MODEL,
    PERIOD_MODELS,
    PERIOD_SELECT,
    churn_dbt_project,
    dbt_build_args,
    dbt_build_env,
    dbt_failure_lines,
    environ,
    keep_parse_state,
    not_built_here,
    parse_state_dir,
)

_PREVIEW_ROWS = 10
# Singular tests that store their failing rows with a human-readable `failure` column.
_READABLE_TESTS = (
    "assert_label_window_is_complete",
    "assert_no_order_after_as_of_reaches_features",
    "assert_retention_targets_follow_expected_value",
)


class DbtBuildConfig(dg.Config):
    """Run options for a dbt step (the label window is the ``labels`` resource's, shared
    with the training steps; the retention rules are the ``policy`` resource's).

    Attributes:
        full_refresh: Rebuild incremental models from scratch (every other period's rows go;
            use it with a backfill of every period).
    """

    full_refresh: bool = False


@dbt_assets(
    manifest=churn_dbt_project().manifest_path,
    project=churn_dbt_project(),
    dagster_dbt_translator=ChurnDbtTranslator(),
    exclude=f"{ANALYTICS_SELECT} {PERIOD_SELECT} {CURRENT_SELECT}",
)
def churn_dbt_models(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    labels: LabelDefinition,
    policy: ChurnPolicy,
) -> Iterator[Any]:
    """Staging views over the raw tables and the reference seeds."""
    yield from _build(context, config, dbt, warehouse, labels, policy)


@dbt_assets(
    manifest=churn_dbt_project().manifest_path,
    project=churn_dbt_project(),
    dagster_dbt_translator=ChurnDbtTranslator(),
    select=PERIOD_SELECT,
    name="period_dbt_models",
    partitions_def=PERIODS,
    # A backfill of every period is one run and one dbt invocation: the SQL computes all
    # the run's periods in one pass over the orders.
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def period_dbt_models(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    labels: LabelDefinition,
    policy: ChurnPolicy,
) -> Iterator[Any]:
    """Features, labels and the training snapshot of the run's periods (partitions)."""
    yield from _build(context, config, dbt, warehouse, labels, policy, run_period_keys(context))


@dbt_assets(
    manifest=churn_dbt_project().manifest_path,
    project=churn_dbt_project(),
    dagster_dbt_translator=ChurnDbtTranslator(),
    select=CURRENT_SELECT,
    name="current_dbt_models",
)
def current_dbt_models(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    labels: LabelDefinition,
    policy: ChurnPolicy,
) -> Iterator[Any]:
    """The newest period's features (what the scorer and the drift monitor read)."""
    yield from _build(context, config, dbt, warehouse, labels, policy)


@dbt_assets(
    manifest=churn_dbt_project().manifest_path,
    project=churn_dbt_project(),
    dagster_dbt_translator=ChurnDbtTranslator(),
    select=ANALYTICS_SELECT,
    # On Spark, not the model over the online prediction log (kept on Postgres only).
    exclude=not_built_here(),
    name="analytics_dbt_models",
)
def analytics_dbt_models(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    labels: LabelDefinition,
    policy: ChurnPolicy,
) -> Iterator[Any]:
    """Analyst tables over the batch scores, their realized performance and the online
    prediction log (Postgres only)."""
    if dg.AssetKey(ONLINE_PREDICTIONS_MODEL) in context.selected_asset_keys:
        # The log is a dbt source the scorer creates on its first insert: create it (empty)
        # here too, so the step builds on a warehouse no scorer has written to yet.
        warehouse.client().create_prediction_log()
    yield from _build(context, config, dbt, warehouse, labels, policy)


def _build(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    labels: LabelDefinition,
    policy: ChurnPolicy,
    period_ends: list[str] | None = None,
) -> Iterator[Any]:
    args = dbt_build_args(
        window_days=labels.window_days, policy=policy.policy(), full_refresh=config.full_refresh
    )
    if period_ends:
        context.log.info(
            f"building {len(period_ends)} period(s): {period_ends[0]} .. {period_ends[-1]}"
        )
    connection = warehouse.dbt_env()
    state_dir = parse_state_dir(connection)
    run_env = {**connection, **dbt_build_env(period_ends or []), "DBT_TARGET_PATH": str(state_dir)}
    with environ(run_env):
        invocation = dbt.cli(args, context=context, raise_on_error=False)
        for event in invocation.stream():
            if period_ends:
                yield _with_snapshot_metadata(event, warehouse, period_ends)
            else:
                yield _with_row_count(event, invocation.manifest, warehouse)
    try:
        keep_parse_state(invocation.target_path, state_dir)
    except OSError as exc:  # only a cache: a full disk must not hide dbt's own outcome
        context.log.warning(f"dbt's parse state was not kept: {exc}")
    if not invocation.is_successful():
        raise dg.Failure(
            description=_failure_description(warehouse, _dbt_errors(invocation)),
            metadata={"dbt_log": dg.MetadataValue.path(str(invocation.target_path / "dbt.log"))},
        )


def _dbt_errors(invocation: DbtCliInvocation) -> list[str]:
    """:func:`dbt_failure_lines` of a finished invocation."""
    try:
        run_results: dict[str, Any] | None = invocation.get_artifact("run_results.json")
    except Exception:  # not written (dbt stopped before, or the disk is full)
        run_results = None
    error = invocation.get_error()
    return dbt_failure_lines(run_results, str(error) if error else None)


def _failure_description(warehouse: WarehouseResource, errors: list[str]) -> str:
    """Why dbt failed, in words: the singular tests' readable ``failure`` column, then the
    nodes that errored (last: the cause a command prints as its last line)."""
    reasons: list[str] = []
    for test in _READABLE_TESTS:
        try:
            rows = warehouse.client().read_test_failures(test, limit=3)
        except WarehouseError:
            continue  # the test did not run or never failed, or the warehouse is gone
        reasons.extend(f"{test} ({count} row(s)): {failure}" for failure, count in rows)
    reasons.extend(errors)
    detail = "\n".join(reasons) if reasons else "see the failed checks and the dbt log"
    return f"dbt build failed; nothing downstream was rebuilt.\n{detail}"


def _with_row_count(event: Any, manifest: Mapping[str, Any], warehouse: WarehouseResource) -> Any:
    """``dagster/row_count`` on each table the step built (not views: counting one runs its
    query). Per-period models count their own periods instead (:func:`_with_snapshot_metadata`):
    a whole incremental table's count would mislead on a partition.

    Not dagster-dbt's ``fetch_row_counts()``: its event loop (``dagster._core.utils.imap``)
    polls for dbt's next event without sleeping, a core spinning for the whole build on a
    two-core machine where dbt and Postgres need it (6.8 million polls in one ``churn run``).
    """
    if not isinstance(event, dg.Output) or "unique_id" not in event.metadata:
        return event
    unique_id = event.metadata["unique_id"]
    node = manifest["nodes"].get(getattr(unique_id, "text", unique_id))
    if node is None or node["config"]["materialized"] == "view":
        return event
    # Schema and alias, not the manifest's relation_name: that names the database the
    # manifest was parsed against, which need not be the one this run writes to.
    rows = warehouse.client().count_table_rows(node["schema"], node["alias"])
    return event.with_metadata({**event.metadata, "dagster/row_count": rows})


def _with_snapshot_metadata(
    event: Any, warehouse: WarehouseResource, period_ends: list[str]
) -> Any:
    """Adds each period's rows (and label rate) and a preview to the per-period tables."""
    if not isinstance(event, dg.Output) or not period_ends:
        return event
    model = event.output_name
    if model not in PERIOD_MODELS:
        return event
    client = warehouse.client()
    table_name = f"marts.{model}"
    table = client.rows_by_period(table_name, period_ends)
    preview = client.preview_period(table_name, period_ends[-1], _PREVIEW_ROWS)
    rows = int(table["rows"].sum())
    table["as_of"] = [as_of.isoformat() for as_of in table["as_of"]]
    if model == "customer_features":
        table = table.drop(columns="label_rate")
    extra: dict[str, Any] = {
        "dagster/row_count": rows,
        "periods_built": len(period_ends),
        "rows_by_period": dg.MetadataValue.md(table.to_markdown(index=False)),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
    }
    if model != "customer_features":
        empty = [p for p in period_ends if p not in set(table["as_of"])]
        extra["periods_without_closed_labels"] = ", ".join(empty) or "none"
    return event.with_metadata({**event.metadata, **extra})


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[churn_dbt_models, period_dbt_models, current_dbt_models, analytics_dbt_models]
    )
