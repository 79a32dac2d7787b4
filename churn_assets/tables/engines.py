"""Which implementation of the warehouse interface a deployment's settings name. One today,
Postgres (the embedded server, or ``CHURN_WAREHOUSE_URL``); a setting choosing the engine
(issue 26) picks here, so the code outside Dagster (``churn status``, ``churn serve``, the
run planner) never names an engine. Inside a run, the ``warehouse`` resource hands out the
same interface (``defs/resources.py``)."""

from __future__ import annotations

from churn_assets.infra import warehouse
from churn_assets.settings import Settings
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.warehouse import Warehouse


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse these settings name. Starts the embedded server when it is the one
    named and is not running; raises :class:`~churn_assets.infra.warehouse.WarehouseError`
    when it cannot start."""
    return PostgresWarehouse(warehouse.url_for(settings))
