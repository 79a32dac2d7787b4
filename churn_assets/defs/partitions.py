"""The period partitions: one per period end of the loaded data (``churn_assets.periods``).

Dynamic, because the data decides which periods exist: a data set from 1997 and one from
2025 both work without a code edit or a start-date setting. The ingest asset registers
the periods of every load it makes; a partition key is the period end (``2025-12-31``).
"""

from __future__ import annotations

import dagster as dg

from churn_assets import periods as calendar

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
