"""The Spark engine's connection: one set of Spark properties for every session the platform
opens, and the environment ``dbt_project/profiles.yml`` reads for dbt-spark's session method.

Nothing here imports pyspark (an extra: ``pip install -e '.[spark]'``). A session of the
platform is a Hive catalog of plain Parquet tables: their files under
``CHURN_SPARK_WAREHOUSE_DIR``, their names in the metastore ``CHURN_SPARK_METASTORE``
(a directory: an embedded Derby database, which one process at a time can open; or a
``thrift://`` URL of a shared metastore service). See ``docs/spark-notes.md``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from churn_assets.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Said when there is no Java runtime, the one thing pip cannot install.
JAVA_MISSING = (
    "the Spark engine needs a Java runtime (17 or 21) and `java` is not on PATH: install one "
    "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
)


def java_available() -> bool:
    """Whether pyspark can start its JVM (``java`` on PATH; pyspark also honours JAVA_HOME)."""
    home = os.environ.get("JAVA_HOME")
    return shutil.which("java") is not None or bool(home and (Path(home) / "bin/java").exists())


def uses_embedded_metastore(settings: Settings) -> bool:
    """Whether the metastore is an embedded Derby database (a directory), not a service."""
    return not settings.spark_metastore.startswith("thrift://")


def session_conf(settings: Settings, app_name: str = "churn") -> dict[str, str]:
    """The Spark properties of every session of the platform (dbt's and Python's alike).

    Properties read once per JVM (``spark.master``, the warehouse, the catalog, the Java
    options) take effect only in the session that starts the JVM: a session that finds one
    running (``SparkSession.builder.getOrCreate()``) keeps its values.
    """
    conf = {
        "spark.master": settings.spark_master,
        "spark.app.name": app_name,
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": settings.spark_warehouse_dir,
        "spark.ui.enabled": "false",
        # Timestamps without a zone (Postgres `timestamp`, the raw contract's) are read and
        # cast to dates in UTC, whatever the machine's zone.
        "spark.sql.session.timeZone": "UTC",
        # dbt-spark turns ANSI mode off in every session it uses; the platform's own SQL
        # then means the same in its sessions as in dbt's.
        "spark.sql.ansi.enabled": "false",
    }
    if uses_embedded_metastore(settings):
        metastore = Path(settings.spark_metastore)
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true"
        )
        # Derby writes derby.log into its system home (else the working directory).
        conf["spark.driver.extraJavaOptions"] = f"-Dderby.system.home={metastore}"
    else:
        conf["spark.hadoop.hive.metastore.uris"] = settings.spark_metastore
    return conf


def dbt_env(settings: Settings) -> dict[str, str]:
    """The ``CHURN_SPARK_*`` variables ``dbt_project/profiles.yml`` reads for its ``spark``
    output, derived from the settings (as ``CHURN_PG_*`` are from the warehouse URL)."""
    conf = session_conf(settings, app_name="churn-dbt")
    return {
        "CHURN_ENGINE": settings.engine.value,
        "CHURN_SPARK_MASTER": conf["spark.master"],
        "CHURN_SPARK_WAREHOUSE_DIR": conf["spark.sql.warehouse.dir"],
        "CHURN_SPARK_METASTORE_JDBC_URL": conf.get(
            "spark.hadoop.javax.jdo.option.ConnectionURL", ""
        ),
        "CHURN_SPARK_METASTORE_URIS": conf.get("spark.hadoop.hive.metastore.uris", ""),
        "CHURN_SPARK_DRIVER_JAVA_OPTIONS": conf.get("spark.driver.extraJavaOptions", ""),
    }


def start_session(settings: Settings, app_name: str = "churn") -> SparkSession:
    """The process's SparkSession with :func:`session_conf` (the one it has, if any: dbt-spark's
    session method then runs dbt's SQL in it too, see ``docs/spark-notes.md``)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in session_conf(settings, app_name).items():
        builder = builder.config(key, value)
    return builder.enableHiveSupport().getOrCreate()


def stop_jvm() -> None:
    """Stops the active session and the JVM pyspark started for this process.

    Only the JVM's exit releases an embedded Derby metastore: after ``SparkSession.stop()``
    another process's session still fails with "Another instance of Derby may have already
    booted the database" (measured, ``docs/spark-notes.md``). pyspark's JVM exits when the
    pipe to its standard input closes.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    process = getattr(gateway, "proc", None)
    gateway.shutdown()
    if process is not None and process.stdin is not None:
        process.stdin.close()
        process.wait(timeout=60)
    SparkContext._gateway = None
    SparkContext._jvm = None
