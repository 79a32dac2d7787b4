"""Which implementation of the warehouse interface a deployment's settings name:
``CHURN_ENGINE`` picks Postgres (the embedded server, or ``CHURN_WAREHOUSE_URL``) or Spark
(the Hive catalog of ``CHURN_SPARK_*``), here, so the code outside Dagster (``churn status``,
``churn serve``, the run planner) never names an engine. Inside a run, the ``warehouse``
resource hands out the same interface (``defs/resources.py``)."""

from __future__ import annotations

from churn_assets.infra import warehouse
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
