"""Resources: the warehouse (embedded or external Postgres) and the dbt CLI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2.extensions
from dagster_dbt import DbtCliResource

from churn_assets import warehouse
from churn_assets.lib.dbt import churn_dbt_project
from churn_assets.settings import load_settings


class WarehouseResource(dg.ConfigurableResource):
    """The Postgres warehouse. Assets connect through it, never on their own."""

    def url(self) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection that commits on success, rolls back on error."""
        with warehouse.connect(self.url()) as conn:
            yield conn

    def dbt_env(self) -> dict[str, str]:
        """The ``CHURN_PG_*`` variables ``dbt_project/profiles.yml`` reads."""
        return warehouse.parse_url(self.url()).dbt_env()


class EmbeddedPostgresWarehouse(WarehouseResource):
    """A real PostgreSQL server from a pip package, started on demand and left running.

    Attributes:
        data_dir: The server's data directory (``<CHURN_HOME>/pg``); data survives restarts.
    """

    data_dir: str

    def url(self) -> str:
        return warehouse.start_embedded(Path(self.data_dir))


class ExternalPostgresWarehouse(WarehouseResource):
    """Any Postgres reachable by URL (``CHURN_WAREHOUSE_URL``).

    Attributes:
        connection_url: ``postgresql://user:password@host:port/db``; set from an ``EnvVar``
            so the password is read at launch and never shown in the UI.
    """

    connection_url: str

    def url(self) -> str:
        return self.connection_url


def warehouse_resource() -> WarehouseResource:
    """Embedded unless ``CHURN_WAREHOUSE_URL`` is set (a switch fixed per deployment)."""
    settings = load_settings()
    if settings.warehouse_url:
        return ExternalPostgresWarehouse(connection_url=dg.EnvVar("CHURN_WAREHOUSE_URL"))
    return EmbeddedPostgresWarehouse(data_dir=str(settings.embedded_pg_dir))


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "warehouse": warehouse_resource(),
            "dbt": DbtCliResource(project_dir=churn_dbt_project()),
        }
    )
