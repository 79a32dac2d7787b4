"""New raw data: a sensor that notices it and requests the ingest run.

Files (``CHURN_RAW_SOURCE=files``, the default) are noticed by content, as below. Tables
(``CHURN_RAW_SOURCE=tables``) by the data version of the ``raw_source`` asset: row counts
and the newest ``ordered_at`` (:class:`~churn_assets.tables.source.SourceState`), observed
each tick by a cheap query and recorded as an observation whenever it changes; a load is
requested when it differs from the version the last load copied (``raw_orders``'
``source_data_version``), with the same run keys as for files.

The fingerprint is the sha256 of each file, the same digest the load records (``raw.loads``
and the ``source_sha256`` metadata of ``raw_customers``/``raw_orders``). So a file touched
but unchanged does not reload, a file replaced with the same name and new content does,
and files loaded by any route (this sensor, ``churn run``, the UI) count as loaded. The
cursor only caches digests by (size, mtime) so a tick hashes a file only when it changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from churn_assets.data.contract import TABLES, file_sha256, find_table_file, has_raw_files
from churn_assets.defs.ingest.assets import RAW_SOURCE, SOURCE_DATA_VERSION
from churn_assets.defs.jobs import ingest_job
from churn_assets.infra.warehouse import WarehouseError
from churn_assets.settings import RawSource, Settings, SettingsError, load_settings
from churn_assets.tables.engines import open_warehouse
from churn_assets.tables.source import SourceTables

RAW_FILES_SENSOR = "raw_files_sensor"
RAW_ASSETS = {"customers": dg.AssetKey("raw_customers"), "orders": dg.AssetKey("raw_orders")}
FINGERPRINT_TAG = "churn/raw_fingerprint"
# Dagster's tag for an observation's data version (dagster._core.definitions.data_version's
# DATA_VERSION_TAG, not exported at the top level).
DATA_VERSION_TAG = "dagster/data_version"


def fingerprint(raw_dir: Path, cache: dict[str, list[object]]) -> dict[str, str] | None:
    """sha256 per table file (``None`` when a table has no single readable file: the ingest
    run would report the contract violation, so there is nothing new to load yet).

    ``cache`` maps path -> [size, mtime_ns, digest]; entries whose stat matches are reused
    and the dict is updated in place.
    """
    digests: dict[str, str] = {}
    for table in TABLES:
        try:
            path = find_table_file(raw_dir, table)
            info = path.stat()
        except (FileNotFoundError, ValueError, OSError):
            return None
        stamp = [info.st_size, info.st_mtime_ns]
        cached = cache.get(str(path))
        if cached is not None and cached[:2] == stamp:
            digests[table] = str(cached[2])
            continue
        digest = file_sha256(path)
        cache[str(path)] = [*stamp, digest]
        digests[table] = digest
    return digests


def loaded_fingerprint(instance: dg.DagsterInstance) -> tuple[dict[str, str], int]:
    """What the raw tables hold now (sha256 per table, from the last load's metadata) and
    the storage id of that load (0: never loaded)."""
    digests: dict[str, str] = {}
    newest = 0
    for table, key in RAW_ASSETS.items():
        records = instance.fetch_materializations(key, limit=1).records
        if not records or records[0].asset_materialization is None:
            continue
        value = records[0].asset_materialization.metadata.get("source_sha256")
        digests[table] = str(getattr(value, "value", value))
        newest = max(newest, records[0].storage_id)
    return digests, newest


def build_raw_files_sensor(interval_seconds: int) -> dg.SensorDefinition:
    """The sensor, looking every ``interval_seconds``."""
    return dg.sensor(
        name=RAW_FILES_SENSOR,
        job=ingest_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Loads the raw data when it differs from what the warehouse holds: the "
        "sha256 of customers and orders in CHURN_RAW_DIR, or with CHURN_RAW_SOURCE=tables the "
        "data version of raw_source (row counts and newest order), observed each tick.",
    )(raw_data_tick)


def raw_data_tick(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """One tick: request a load when the raw data is not what was loaded last."""
    settings = load_settings()
    if settings.raw_source is RawSource.TABLES:
        return raw_source_tick(context, settings)
    return raw_files_tick(context)


def loaded_data_version(instance: dg.DagsterInstance) -> tuple[str | None, int]:
    """The source data version the last load copied (None: the last load was of files, or
    none) and the storage id of that load (0: never loaded)."""
    records = instance.fetch_materializations(RAW_ASSETS["orders"], limit=1).records
    if not records or records[0].asset_materialization is None:
        return None, 0
    value = records[0].asset_materialization.metadata.get(SOURCE_DATA_VERSION)
    version = str(getattr(value, "value", value)) if value is not None else None
    return version, records[0].storage_id


def raw_source_tick(
    context: dg.SensorEvaluationContext, settings: Settings
) -> dg.SensorResult | dg.SkipReason:
    """Observe the source tables (a new data version is recorded on ``raw_source``) and
    request a load when their version is not the one loaded last. The cursor holds the
    last version observed, so an unchanged source records nothing."""
    try:
        source = SourceTables(*settings.source_tables())
        state = open_warehouse(settings).observe_source(source)
    except (SettingsError, WarehouseError, ValueError) as exc:
        return dg.SkipReason(f"cannot observe the raw source tables: {exc}")
    version = state.data_version
    events = []
    if version != context.cursor:
        events.append(
            dg.AssetObservation(
                RAW_SOURCE,
                tags={DATA_VERSION_TAG: version},
                metadata={
                    "customers_table": source.customers,
                    "orders_table": source.orders,
                    "customers_rows": state.customers_rows,
                    "orders_rows": state.orders_rows,
                    "newest_ordered_at": state.newest_order_at or "none",
                },
            )
        )
    loaded, load_event = loaded_data_version(context.instance)
    if version == loaded:
        return dg.SensorResult(
            skip_reason=f"already loaded ({version})", cursor=version, asset_events=events
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                # As for files: one load per new version after a given load.
                run_key=f"{version}-after-{load_event}",
                tags={FINGERPRINT_TAG: version},
            )
        ],
        cursor=version,
        asset_events=events,
    )


def raw_files_tick(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """One tick: request a load when the files' content is not what was loaded last."""
    raw_dir = load_settings().raw_dir
    cache = _file_cache(context.cursor)
    if not has_raw_files(raw_dir):
        return dg.SkipReason(f"no raw files in {raw_dir}")
    current = fingerprint(raw_dir, cache)
    if current is None:
        return dg.SensorResult(
            skip_reason=f"{raw_dir} does not hold one customers and one orders file yet",
            cursor=json.dumps(cache),
        )
    loaded, load_event = loaded_fingerprint(context.instance)
    if current == loaded:
        return dg.SensorResult(
            skip_reason=f"already loaded (orders sha256 {current['orders'][:12]}…)",
            cursor=json.dumps(cache),
        )
    short = "-".join(current[table][:12] for table in TABLES)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                # One load per new content after a given load: a queued run is not
                # requested twice, and content seen before (A -> B -> A) loads again.
                run_key=f"{short}-after-{load_event}",
                run_config={"ops": {"raw_tables": {"config": {"raw_dir": str(raw_dir)}}}},
                tags={FINGERPRINT_TAG: short},
            )
        ],
        cursor=json.dumps(cache),
    )


def _file_cache(cursor: str | None) -> dict[str, list[object]]:
    """The files' digest cache kept in the cursor (empty after a tables-mode cursor)."""
    try:
        cache = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return cache if isinstance(cache, dict) else {}


@dg.definitions
def defs() -> dg.Definitions:
    # The interval is read when the code loads: Dagster needs it to define the sensor.
    return dg.Definitions(sensors=[build_raw_files_sensor(load_settings().sensor_interval_seconds)])
