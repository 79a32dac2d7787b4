"""The period partitions: one per period end of the loaded data (``churn_assets.periods``).

Dynamic, because the data decides which periods exist: a data set from 1997 and one from
2025 both work without a code edit or a start-date setting. The ingest asset registers
the periods of every load it makes; a partition key is the period end (``2025-12-31``).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg

from churn_assets import periods as calendar
from churn_assets.periods import Period

PERIODS_NAME = "periods"
PERIODS = dg.DynamicPartitionsDefinition(name=PERIODS_NAME)


def registered_periods(instance: dg.DagsterInstance) -> list[str]:
    """The registered period keys, in partition order."""
    return list(instance.get_dynamic_partitions(PERIODS_NAME))


def sync_periods(instance: dg.DagsterInstance, wanted: list[str]) -> list[str]:
    """Make the registered periods exactly ``wanted`` (oldest first); returns the retired keys."""
    delete, add = calendar.partition_changes(registered_periods(instance), wanted)
    for key in delete:
        instance.delete_dynamic_partition(PERIODS_NAME, key)
    if add:
        instance.add_dynamic_partitions(PERIODS_NAME, add)
    readded = set(delete) & set(add)
    return [key for key in delete if key not in readded]


def run_period_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The periods this run builds: one partition, or a whole range (single-run backfill)."""
    if not context.has_partition_key and not context.has_partition_key_range:
        return []
    return sorted(context.partition_keys)


def register_periods(instance: dg.DagsterInstance, keys: list[str]) -> None:
    """Make sure the periods a run is launched for exist, before it starts.

    Only adds: retiring stale periods and fixing their order is the ingest step's job,
    inside the run and under the warehouse write lock. Deleting here would pull a period
    from under another process's run that is building it right now.
    """
    existing = set(registered_periods(instance))
    missing = [key for key in keys if key not in existing]
    if missing:
        instance.add_dynamic_partitions(PERIODS_NAME, missing)


def periods_in_files(raw_dir: Path, period: Period) -> list[str] | None:
    """The periods of the orders file; ``None`` when it cannot be read (a run's ingest step
    then reports the contract violation).

    For launching a run over periods before the ingest step has registered them (the
    benchmarks build every period of a fresh data set in one run).
    """
    span = order_span_in_files(raw_dir)
    if span is None:
        return None
    return [calendar.as_key(e) for e in calendar.period_ends(*span, period)]


def order_span_in_files(raw_dir: Path) -> tuple[date, date] | None:
    """The first and last order date of the orders file, read from its ``ordered_at``
    column only; ``None`` when it cannot be read or has no orders."""
    import pyarrow.compute as pc

    from churn_assets.data.contract import find_table_file

    try:
        path = find_table_file(raw_dir, "orders")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            column = pq.read_table(path, columns=["ordered_at"]).column("ordered_at")
        else:
            from pyarrow import csv

            options = csv.ConvertOptions(
                include_columns=["ordered_at"], column_types={"ordered_at": "timestamp[s]"}
            )
            column = csv.read_csv(path, convert_options=options).column("ordered_at")
        bounds = pc.min_max(column)
        first, last = bounds["min"].as_py(), bounds["max"].as_py()
    except Exception:
        return None
    if first is None or last is None:
        return None
    return first.date(), last.date()
