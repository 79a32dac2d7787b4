"""dbt models as assets: staging views, point-in-time features, labels, training snapshot.

dbt tests become asset checks (dagster-dbt's default), so a failing test shows on the
model it guards and ``dbt build`` skips everything downstream of it.
"""

from collections.abc import Iterator
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd
import psycopg2
from dagster_dbt import DbtCliResource, dbt_assets

from churn_assets.defs.resources import WarehouseResource
from churn_assets.lib.dbt import (
    ANALYTICS_SELECT,
    ChurnDbtTranslator,
    churn_dbt_project,
    dbt_build_args,
    environ,
)
from churn_assets.settings import load_settings

_PREVIEW_ROWS = 10
# Singular tests that store their failing rows with a human-readable `failure` column.
_READABLE_TESTS = (
    "assert_label_window_is_complete",
    "assert_no_order_after_as_of_reaches_features",
)


class DbtBuildConfig(dg.Config):
    """Run options for the dbt build.

    Attributes:
        full_refresh: Rebuild incremental models from scratch.
        as_of: Training snapshot date (YYYY-MM-DD); empty means ``CHURN_AS_OF`` or, when that
            is unset, the latest date whose label window is complete in the data.
        window_days: Label window in days; 0 means ``CHURN_WINDOW_DAYS`` (default 90).
    """

    full_refresh: bool = False
    as_of: str = ""
    window_days: int = 0


@dbt_assets(
    manifest=churn_dbt_project().manifest_path,
    project=churn_dbt_project(),
    dagster_dbt_translator=ChurnDbtTranslator(),
    exclude=ANALYTICS_SELECT,
)
def churn_dbt_models(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
) -> Iterator[Any]:
    """Staging, features, labels and the training snapshot."""
    yield from _build(context, config, dbt, warehouse)


@dbt_assets(
    manifest=churn_dbt_project().manifest_path,
    project=churn_dbt_project(),
    dagster_dbt_translator=ChurnDbtTranslator(),
    select=ANALYTICS_SELECT,
    name="analytics_dbt_models",
)
def analytics_dbt_models(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
) -> Iterator[Any]:
    """Analyst tables over the batch scores (customer_360, churn_risk_by_segment)."""
    yield from _build(context, config, dbt, warehouse)


def _build(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
) -> Iterator[Any]:
    settings = load_settings()
    as_of = date.fromisoformat(config.as_of) if config.as_of else settings.as_of
    args = dbt_build_args(
        as_of=as_of,
        window_days=config.window_days or settings.window_days,
        full_refresh=config.full_refresh,
    )
    with environ(warehouse.dbt_env()):
        invocation = dbt.cli(args, context=context, raise_on_error=False)
        for event in invocation.stream().fetch_row_counts():
            yield _with_snapshot_metadata(event, warehouse)
    if not invocation.is_successful():
        raise dg.Failure(
            description=_failure_description(warehouse),
            metadata={"dbt_log": dg.MetadataValue.path(str(invocation.target_path / "dbt.log"))},
        )


def _failure_description(warehouse: WarehouseResource) -> str:
    """Why dbt failed, in words: the singular tests store a readable ``failure`` column."""
    reasons: list[str] = []
    for test in _READABLE_TESTS:
        try:
            with warehouse.connect() as conn, conn.cursor() as cur:
                cur.execute(f"select failure, count(*) over () from test_failures.{test} limit 3")
                rows = cur.fetchall()
        except psycopg2.Error:
            continue  # the test did not run or has never failed: nothing stored
        reasons.extend(f"{test} ({count} row(s)): {failure}" for failure, count in rows)
    detail = "\n".join(reasons) if reasons else "see the failed checks and the dbt log"
    return f"dbt build failed; nothing downstream was rebuilt.\n{detail}"


def _with_snapshot_metadata(event: Any, warehouse: WarehouseResource) -> Any:
    """Adds as_of, label rate and a preview to the feature and training tables."""
    if not isinstance(event, dg.Output):
        return event
    model = event.output_name
    if model == "customer_features":
        extra = _feature_metadata(warehouse)
    elif model == "training_snapshot":
        extra = _training_metadata(warehouse)
    else:
        return event
    return event.with_metadata({**event.metadata, **extra})


def _feature_metadata(warehouse: WarehouseResource) -> dict[str, Any]:
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "select purpose, as_of, count(*) from marts.customer_features "
            "group by purpose, as_of order by purpose"
        )
        snapshots = cur.fetchall()
    metadata: dict[str, Any] = {
        f"{purpose}_as_of": as_of.isoformat() for purpose, as_of, _ in snapshots
    }
    metadata.update({f"{purpose}_customers": count for purpose, _, count in snapshots})
    metadata["preview"] = _preview(
        warehouse, "select * from marts.customer_features where purpose = 'training'"
    )
    return metadata


def _training_metadata(warehouse: WarehouseResource) -> dict[str, Any]:
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("select min(as_of), count(*), avg(churned::float) from marts.training_snapshot")
        as_of, rows, label_rate = cur.fetchone()
    return {
        "as_of": as_of.isoformat() if as_of else None,
        "label_rate": dg.MetadataValue.float(float(label_rate or 0.0)),
        "label_positives": round((label_rate or 0.0) * rows),
        "preview": _preview(warehouse, "select * from marts.training_snapshot"),
    }


def _preview(warehouse: WarehouseResource, query: str) -> dg.MetadataValue:
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(f"{query} order by customer_id limit {_PREVIEW_ROWS}")
        columns = [column.name for column in cur.description or ()]
        frame = pd.DataFrame(cur.fetchall(), columns=columns)
    return dg.MetadataValue.md(frame.to_markdown(index=False))


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[churn_dbt_models, analytics_dbt_models])
