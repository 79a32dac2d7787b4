"""Raw customers and orders: files in ``CHURN_RAW_DIR`` -> the warehouse's ``raw`` schema."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from churn_assets import periods
from churn_assets.data.contract import RawTables, read_raw_tables
from churn_assets.data.delivery import DeliveryRefused, check_customer_count
from churn_assets.data.digests import digest_raw_files
from churn_assets.defs.partitions import sync_periods
from churn_assets.defs.rebuild import plan_rebuild, rebuild_metadata
from churn_assets.defs.resources import ChurnPolicy, LabelDefinition, WarehouseResource
from churn_assets.settings import Settings, load_settings
from churn_assets.tables.raw import RAW_SCHEMA, LoadResult

_KINDS = {"postgres", "pandas"}
CUSTOMER_COUNT_CHECK = "customer_count_change"


class RawDataConfig(dg.Config):
    """Run options for loading raw files.

    Attributes:
        raw_dir: Directory with ``customers`` and ``orders`` (.csv or .parquet); empty means
            the ``CHURN_RAW_DIR`` setting.
    """

    raw_dir: str = ""


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "raw_customers",
            group_name="ingest",
            kinds=_KINDS,
            description="Customers as delivered (`raw.customers`), validated against the contract.",
            metadata={"dagster/table_name": f"{RAW_SCHEMA}.customers"},
        ),
        dg.AssetSpec(
            "raw_orders",
            group_name="ingest",
            kinds=_KINDS,
            description="Orders as delivered (`raw.orders`), validated against the contract.",
            metadata={"dagster/table_name": f"{RAW_SCHEMA}.orders"},
        ),
    ],
    # Both tables load in one transaction: orders reference customers, so they move together.
    can_subset=False,
    check_specs=[
        dg.AssetCheckSpec(
            CUSTOMER_COUNT_CHECK,
            asset="raw_customers",
            description="The delivery's customers against the previous load's: a drop above "
            "CHURN_WARN_CUSTOMER_DROP warns; above CHURN_MAX_CUSTOMER_DROP the delivery is "
            "refused before anything is loaded.",
        )
    ],
)
def raw_tables(
    context: dg.AssetExecutionContext,
    config: RawDataConfig,
    warehouse: WarehouseResource,
    policy: ChurnPolicy,
    labels: LabelDefinition,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Validates the raw files (the contract, whole periods, the customer count against the
    previous load), then replaces both raw tables atomically and registers the data's
    periods as the partitions of the per-period assets. Every refusal comes before the
    first write: a refused delivery leaves the raw tables and everything built as they were.
    ``raw_orders`` records which periods the delivery can have changed (``rebuild_from``,
    from per-period digests against the previous load's): the only ones rebuilt after it."""
    settings = load_settings()
    raw_dir = Path(config.raw_dir) if config.raw_dir else settings.raw_dir
    tables = read_raw_tables(raw_dir)  # raises before anything is written
    ends, last = _whole_periods(tables, settings)
    keys = [periods.as_key(end) for end in ends]
    digests = digest_raw_files(raw_dir, settings.period, labels.window_days)
    rules = policy.policy()
    previous = warehouse.client().latest_load()
    try:
        change = check_customer_count(
            previous["customers_rows"] if previous else None,
            len(tables.customers),
            rules,
        )
    except DeliveryRefused as exc:
        raise dg.Failure(description=f"{raw_dir}: {exc}") from exc
    rebuild = plan_rebuild(context.instance, previous, digests, keys)
    result = warehouse.client().load_raw_tables(tables, context.run.run_id)
    context.log.info(f"loaded {result.row_counts} from {raw_dir} (raw.loads #{result.load_id})")
    context.log.info(
        f"the delivery can change {len(rebuild)} of {len(keys)} period(s): "
        f"{rebuild[0]} .. {rebuild[-1]}"
    )
    calendar = {
        **_register_periods(context, warehouse, ends, last, settings, labels.window_days),
        **rebuild_metadata(digests, rebuild, keys),
    }
    yield from _results(tables, result, calendar)
    yield dg.AssetCheckResult(
        check_name=CUSTOMER_COUNT_CHECK,
        asset_key="raw_customers",
        passed=not change.warns,
        severity=dg.AssetCheckSeverity.WARN,
        description=change.describe(),
        metadata={
            "previous_customers": change.previous if change.previous is not None else "none",
            "delivered_customers": change.delivered,
            "drop_share": dg.MetadataValue.float(change.drop_share),
            "warn_above": dg.MetadataValue.float(change.warn_share),
            "refuse_above": dg.MetadataValue.float(rules.max_customer_drop),
        },
    )


def _whole_periods(tables: RawTables, settings: Settings) -> tuple[list[date], date]:
    """The delivery's period ends and last order date; refuses one without a whole period
    (it would retire every period built so far)."""
    days = tables.orders["ordered_at"].dt.normalize()
    if days.empty:
        raise dg.Failure(
            description=f"{tables.orders_file}: no orders, so no period to build; nothing "
            "was loaded and nothing already built was changed"
        )
    first, last = days.min().date(), days.max().date()
    try:
        return periods.whole_periods(first, last, settings.period), last
    except periods.PeriodError as exc:
        raise dg.Failure(description=f"{tables.orders_file}: {exc}") from exc


def _register_periods(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ends: list[date],
    last: date,
    settings: Settings,
    window_days: int,
) -> dict[str, Any]:
    """The data's periods become the ``periods`` partitions; periods it lost are retired."""
    keys = [periods.as_key(end) for end in ends]
    retired = sync_periods(context.instance, keys)
    if retired:
        rows = warehouse.client().retire_periods(retired)
        context.log.info(f"retired {len(retired)} period(s) the data no longer has ({rows} rows)")
    labelled = periods.labelled_periods(ends, last, window_days)
    return {
        "periods": len(keys),
        "period": settings.period.value,
        "first_period": keys[0] if keys else "none",
        "newest_period": keys[-1] if keys else "none (the data does not cover a whole period)",
        "labelled_periods": len(labelled),
        "newest_labelled_period": periods.as_key(labelled[-1]) if labelled else "none",
        "last_order_on": last.isoformat(),
        "retired_periods": ", ".join(retired) or "none",
    }


def _results(
    tables: RawTables, result: LoadResult, calendar: dict[str, Any]
) -> Iterator[dg.MaterializeResult]:
    for key, table, frame, path in (
        ("raw_customers", "customers", tables.customers, tables.customers_file),
        ("raw_orders", "orders", tables.orders, tables.orders_file),
    ):
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "dagster/row_count": len(frame),
                "dagster/column_schema": _column_schema(frame),
                "source_file": dg.MetadataValue.path(str(path)),
                "source_sha256": result.files_sha256[table],
                "load_id": result.load_id,
                "loaded_at": result.loaded_at.isoformat(),
                "preview": dg.MetadataValue.md(frame.head(10).to_markdown(index=False)),
                **(calendar if table == "orders" else {}),
            },
        )


def _column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[raw_tables])
