"""Raw customers and orders: files in ``CHURN_RAW_DIR``, or tables already in the warehouse
(``CHURN_RAW_SOURCE=tables``) -> the warehouse's ``raw`` schema."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from churn_assets import periods
from churn_assets.data.contract import RawDataContractError, read_raw_tables
from churn_assets.data.delivery import DeliveryRefused, check_customer_count
from churn_assets.data.digests import digest_raw_files
from churn_assets.defs.partitions import sync_periods
from churn_assets.defs.rebuild import plan_rebuild, rebuild_metadata
from churn_assets.defs.resources import ChurnPolicy, LabelDefinition, WarehouseResource
from churn_assets.periods import PeriodDigests
from churn_assets.settings import RawSource, Settings, load_settings
from churn_assets.tables.raw import RAW_SCHEMA, LoadResult
from churn_assets.tables.source import CONTRACT, SourceChanged, SourceTables
from churn_assets.tables.warehouse import Warehouse

_KINDS = {"postgres", "pandas"}
CUSTOMER_COUNT_CHECK = "customer_count_change"
RAW_SOURCE = dg.AssetKey("raw_source")
SOURCE_DATA_VERSION = "source_data_version"
"""``raw_orders``' metadata: the source tables' data version the load copied (tables only)."""

# The raw data where it lives, outside the platform: observed, never materialised. Under
# CHURN_RAW_SOURCE=tables the raw-source sensor records its data version (row counts and
# the newest order) whenever it changes and asks for the load; with files, nothing observes
# it (the files' sha256 plays that part).
raw_source = dg.AssetSpec(
    RAW_SOURCE,
    group_name="ingest",
    kinds={"postgres"},
    description="Customers and orders where they are delivered: files in CHURN_RAW_DIR, or "
    "the tables CHURN_RAW_CUSTOMERS_TABLE and CHURN_RAW_ORDERS_TABLE "
    "(CHURN_RAW_SOURCE=tables), whose data version the raw-source sensor observes.",
)


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
            deps=[RAW_SOURCE],
        ),
        dg.AssetSpec(
            "raw_orders",
            group_name="ingest",
            kinds=_KINDS,
            description="Orders as delivered (`raw.orders`), validated against the contract.",
            metadata={"dagster/table_name": f"{RAW_SCHEMA}.orders"},
            deps=[RAW_SOURCE],
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
    """Validates the raw data (the contract, whole periods, the customer count against the
    previous load), then replaces both raw tables atomically and registers the data's
    periods as the partitions of the per-period assets. Every refusal comes before the
    first write: a refused delivery leaves the raw tables and everything built as they were.
    ``raw_orders`` records which periods the delivery can have changed (``rebuild_from``,
    from per-period digests against the previous load's): the only ones rebuilt after it.
    With ``CHURN_RAW_SOURCE=tables`` the source tables are checked and copied inside the
    warehouse (no row passes through this process)."""
    settings = load_settings()
    client = warehouse.client()
    previous = client.latest_load()
    if settings.raw_source is RawSource.TABLES:
        delivery = _check_tables(client, settings)
    else:
        delivery = _Files(Path(config.raw_dir) if config.raw_dir else settings.raw_dir)
    ends, last = _whole_periods(delivery, settings)
    keys = [periods.as_key(end) for end in ends]
    digests = delivery.digests(settings, labels.window_days)
    rules = policy.policy()
    try:
        change = check_customer_count(
            previous["customers_rows"] if previous else None, delivery.customers_rows, rules
        )
    except DeliveryRefused as exc:
        raise dg.Failure(description=f"{delivery.where}: {exc}") from exc
    rebuild = plan_rebuild(context.instance, previous, digests, keys)
    result = delivery.load(client, context.run.run_id)
    context.log.info(
        f"loaded {result.row_counts} from {delivery.where} (raw.loads #{result.load_id})"
    )
    context.log.info(
        f"the delivery can change {len(rebuild)} of {len(keys)} period(s): "
        f"{rebuild[0]} .. {rebuild[-1]}"
    )
    calendar = {
        **_register_periods(context, warehouse, ends, last, settings, labels.window_days),
        **rebuild_metadata(digests, rebuild, keys),
    }
    yield from _results(delivery, result, calendar)
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


class _Delivery:
    """What one load reads, checked against the contract: files read into frames, or
    source tables checked in the warehouse. Nothing is written until :meth:`load`."""

    where: str  # the directory or the tables, for messages
    orders_where: str
    customers_rows: int
    first_order_on: date | None
    last_order_on: date | None

    def digests(self, settings: Settings, window_days: int) -> PeriodDigests | None:
        """Per-period digests for the rebuild rule (None: every period is rebuilt)."""
        return None

    def load(self, client: Warehouse, run_id: str) -> LoadResult:
        raise NotImplementedError

    def results(self, table: str) -> dict[str, Any]:
        """Metadata of ``raw_<table>`` beyond the load's own."""
        raise NotImplementedError


class _Files(_Delivery):
    def __init__(self, raw_dir: Path) -> None:
        self.raw_dir = raw_dir
        self.tables = read_raw_tables(raw_dir)  # raises before anything is written
        self.where = str(raw_dir)
        self.orders_where = str(self.tables.orders_file)
        self.customers_rows = len(self.tables.customers)
        days = self.tables.orders["ordered_at"].dt.normalize()
        self.first_order_on = None if days.empty else days.min().date()
        self.last_order_on = None if days.empty else days.max().date()

    def digests(self, settings: Settings, window_days: int) -> PeriodDigests | None:
        return digest_raw_files(self.raw_dir, settings.period, window_days)

    def load(self, client: Warehouse, run_id: str) -> LoadResult:
        return client.load_raw_tables(self.tables, run_id)

    def results(self, table: str) -> dict[str, Any]:
        frame = self.tables.customers if table == "customers" else self.tables.orders
        path = self.tables.customers_file if table == "customers" else self.tables.orders_file
        return {
            "dagster/row_count": len(frame),
            "dagster/column_schema": _column_schema(frame),
            "source_file": dg.MetadataValue.path(str(path)),
            "preview": dg.MetadataValue.md(frame.head(10).to_markdown(index=False)),
        }


class _Tables(_Delivery):
    def __init__(self, client: Warehouse, source: SourceTables) -> None:
        self.source = source
        check = client.check_source(source)
        if check.violations:
            raise RawDataContractError(check.violations)
        assert check.fingerprint is not None
        self.fingerprint = check.fingerprint
        self.where = f"{source.customers}, {source.orders}"
        self.orders_where = source.orders
        self.customers_rows = check.fingerprint.state.customers_rows
        self.first_order_on, self.last_order_on = check.first_order_on, check.last_order_on

    def load(self, client: Warehouse, run_id: str) -> LoadResult:
        try:
            return client.load_raw_from_source(self.source, self.fingerprint, run_id)
        except SourceChanged as exc:
            raise dg.Failure(description=str(exc)) from exc

    def results(self, table: str) -> dict[str, Any]:
        state = self.fingerprint.state
        return {
            "dagster/row_count": state.customers_rows
            if table == "customers"
            else state.orders_rows,
            "source_table": self.source.name(table),
            SOURCE_DATA_VERSION: state.data_version,
        }


def _check_tables(client: Warehouse, settings: Settings) -> _Delivery:
    try:
        source = SourceTables(*settings.source_tables())
    except ValueError as exc:  # SettingsError
        raise dg.Failure(description=str(exc)) from exc
    return _Tables(client, source)


def _whole_periods(delivery: _Delivery, settings: Settings) -> tuple[list[date], date]:
    """The delivery's period ends and last order date; refuses one without a whole period
    (it would retire every period built so far)."""
    first, last = delivery.first_order_on, delivery.last_order_on
    if first is None or last is None:
        raise dg.Failure(
            description=f"{delivery.orders_where}: no orders, so no period to build; nothing "
            "was loaded and nothing already built was changed"
        )
    try:
        return periods.whole_periods(first, last, settings.period), last
    except periods.PeriodError as exc:
        raise dg.Failure(description=f"{delivery.orders_where}: {exc}") from exc


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
    delivery: _Delivery, result: LoadResult, calendar: dict[str, Any]
) -> Iterator[dg.MaterializeResult]:
    for table in CONTRACT:
        yield dg.MaterializeResult(
            asset_key=f"raw_{table}",
            metadata={
                **delivery.results(table),
                "source_sha256": result.files_sha256[table],
                "load_id": result.load_id,
                "loaded_at": result.loaded_at.isoformat(),
                **(calendar if table == "orders" else {}),
            },
        )


def _column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[raw_source, raw_tables])
