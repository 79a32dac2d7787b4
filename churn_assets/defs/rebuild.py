"""Which periods a load rebuilds, and where the load says so.

A new file changes few periods: the new one, the ones whose label windows the new orders
reach, and any whose orders or customers were revised. ``raw_tables`` compares the files'
per-period digests (:mod:`churn_assets.data.digests`) with those the previous load
recorded, applies :func:`churn_assets.periods.periods_to_rebuild`, and records both on
``raw_orders``: ``period_digests`` (for the next load) and ``rebuild_from`` (the periods
from there to the load's newest are the ones to rebuild). Three readers act on it:

* ``churn run`` computes the same before its one run, and launches it over that range
  (:func:`periods_to_rebuild_for_files`);
* under the daemon, the per-period marts' automation condition requests those periods
  (``churn_assets.defs.automation.PeriodsTheLoadChanged``);
* the retraining sensor waits for their training snapshots.

The previous load's digests count only when they describe what the raw tables hold: its
``load_id`` and ``loaded_at`` must be those of ``raw.loads``' newest row (another
warehouse, or a load this instance never saw, rebuilds every period). A period the
previous load was to rebuild and that was not rebuilt since (its run failed, or no
daemon ran) is rebuilt now.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

from churn_assets import periods
from churn_assets.defs.partitions import registered_periods
from churn_assets.lib.dbt import PERIOD_MODELS
from churn_assets.periods import PeriodDigests
from churn_assets.settings import Settings

RAW_ORDERS = dg.AssetKey("raw_orders")
DIGESTS = "period_digests"
REBUILD_FROM = "rebuild_from"


def last_load_record(instance: dg.DagsterInstance) -> dg.EventLogRecord | None:
    """The newest materialisation of ``raw_orders``: the last load."""
    records = instance.fetch_materializations(RAW_ORDERS, limit=1).records
    return records[0] if records else None


def _metadata(record: dg.EventLogRecord) -> Mapping[str, Any]:
    materialization = record.asset_materialization
    if materialization is None:
        return {}
    return {key: value.value for key, value in materialization.metadata.items()}


def rebuild_keys(instance: dg.DagsterInstance, record: dg.EventLogRecord) -> list[str] | None:
    """The registered periods the load of ``record`` set out to rebuild (its
    ``rebuild_from`` to its newest period); ``None`` when it did not say (a load before
    this rule): every period."""
    metadata = _metadata(record)
    start, newest = metadata.get(REBUILD_FROM), metadata.get("newest_period")
    if not isinstance(start, str) or not isinstance(newest, str):
        return None
    return [key for key in registered_periods(instance) if start <= key <= newest]


def latest_rebuild_keys(instance: dg.DagsterInstance) -> list[str] | None:
    """:func:`rebuild_keys` of the last load (``None``: no load said; every period)."""
    record = last_load_record(instance)
    return rebuild_keys(instance, record) if record is not None else None


def not_rebuilt_since(instance: dg.DagsterInstance, record: dg.EventLogRecord) -> list[str]:
    """The periods the load of ``record`` set out to rebuild of which some per-period mart
    has not been materialised after it."""
    keys = rebuild_keys(instance, record) or []
    stale: set[str] = set()
    for model in PERIOD_MODELS:
        built = instance.get_latest_storage_id_by_partition(
            dg.AssetKey(model), DagsterEventType.ASSET_MATERIALIZATION, set(keys)
        )
        stale.update(key for key in keys if built.get(key, 0) < record.storage_id)
    return sorted(stale)


def recorded_digests(
    record: dg.EventLogRecord, loaded: Mapping[str, Any] | None
) -> PeriodDigests | None:
    """The digests the load of ``record`` recorded, if it is the load ``loaded`` (the
    newest row of ``raw.loads``) describes; otherwise ``None``."""
    metadata = _metadata(record)
    if loaded is None or metadata.get("load_id") != loaded.get("load_id"):
        return None
    try:
        recorded_at = datetime.fromisoformat(str(metadata.get("loaded_at")))
    except ValueError:
        return None
    if recorded_at != loaded.get("loaded_at"):
        return None
    return PeriodDigests.from_json(metadata.get(DIGESTS))


def plan_rebuild(
    instance: dg.DagsterInstance,
    loaded: Mapping[str, Any] | None,
    current: PeriodDigests | None,
    keys: list[str],
) -> list[str]:
    """The periods of ``keys`` (the delivery's) a load of ``current`` rebuilds, given
    ``loaded``, the newest row of ``raw.loads`` before it (what the raw tables hold)."""
    record = last_load_record(instance)
    if current is None or record is None:
        return list(keys)
    previous = recorded_digests(record, loaded)
    pending = not_rebuilt_since(instance, record) if previous is not None else []
    return periods.periods_to_rebuild(previous, current, keys, pending)


def rebuild_metadata(
    current: PeriodDigests | None, rebuild: list[str], keys: list[str]
) -> dict[str, Any]:
    """What ``raw_orders`` records: the digests and the periods to rebuild."""
    metadata: dict[str, Any] = {
        REBUILD_FROM: rebuild[0] if rebuild else "none",
        "periods_to_rebuild": dg.MetadataValue.int(len(rebuild)),
        "periods_kept": dg.MetadataValue.int(len(keys) - len(rebuild)),
    }
    if current is not None:
        metadata[DIGESTS] = dg.MetadataValue.json(current.to_json())
    return metadata


def periods_to_rebuild_for_files(
    instance: dg.DagsterInstance, settings: Settings, keys: list[str]
) -> list[str]:
    """What ``churn run`` builds: the periods of ``keys`` (the files') that loading the
    files in ``CHURN_RAW_DIR`` can change, computed before the run that loads them with the
    very rule its load applies (:func:`plan_rebuild`; the digests are computed once)."""
    from churn_assets.data.digests import digest_raw_files
    from churn_assets.tables.engines import open_warehouse

    current = digest_raw_files(settings.raw_dir, settings.period, settings.window_days)
    loaded = open_warehouse(settings).latest_load()
    return plan_rebuild(instance, loaded, current, keys)
