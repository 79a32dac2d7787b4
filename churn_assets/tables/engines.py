"""Which implementation of the warehouse interface a deployment's settings name:
``CHURN_ENGINE`` picks Postgres (the embedded server, or ``CHURN_WAREHOUSE_URL``) or Spark
(the Hive catalog of ``CHURN_SPARK_*``), here, so the code outside Dagster (``churn status``,
``churn serve``, the run planner) never names an engine. Inside a run, the ``warehouse``
resource hands out the same interface (``defs/resources.py``)."""

from __future__ import annotations

from pathlib import Path

from churn_assets.infra import spark, warehouse
from churn_assets.settings import Engine, Settings
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.spark.warehouse import SparkWarehouse
from churn_assets.tables.warehouse import Warehouse


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse these settings name. On Postgres, starts the embedded server when it
    is the one named and is not running; raises
    :class:`~churn_assets.infra.warehouse.WarehouseError` when it cannot start. On Spark,
    nothing starts until the first operation (which starts the process's SparkSession)."""
    if settings.engine is Engine.SPARK:
        return SparkWarehouse(settings)
    return PostgresWarehouse(warehouse.url_for(settings))


def never_created(settings: Settings) -> bool:
    """Whether the warehouse these settings name is the platform's own and was never created
    (no embedded Postgres data directory; on Spark, no local metastore database): it holds
    nothing, and whoever only looks need not start it."""
    if settings.engine is Engine.SPARK:
        local = spark.uses_local_metastore(settings)
        return local and not (Path(settings.spark_metastore) / "metastore_db").exists()
    return not settings.warehouse_url and not settings.embedded_pg_dir.exists()


def start_services(settings: Settings) -> None:
    """Start what the warehouse these settings name needs running, unless it runs: the
    embedded Postgres, or on Spark the local metastore service (an external warehouse or a
    shared ``thrift://`` metastore is left alone). What ``churn`` does before a run, so no
    step waits for it. Raises :class:`~churn_assets.infra.warehouse.WarehouseError` when it
    cannot start."""
    if settings.engine is Engine.SPARK:
        spark.metastore_uris(settings)
    else:
        warehouse.url_for(settings)


def stop_services(settings: Settings) -> list[str]:
    """Stop the services the platform started for these settings' home, whichever engine
    they served: the embedded Postgres and the local metastore service (never an external
    warehouse nor a shared metastore). Returns what was stopped, in words."""
    stopped = []
    if not settings.warehouse_url and warehouse.stop_embedded(settings.embedded_pg_dir):
        stopped.append(f"the embedded Postgres under {settings.embedded_pg_dir}")
    if spark.stop_local_metastore(settings):
        stopped.append(f"the Hive metastore service over {settings.spark_metastore}")
    return stopped
