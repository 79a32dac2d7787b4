"""The Spark engine's connection: one set of Spark properties for every session the platform
opens, and the environment ``dbt_project/profiles.yml`` reads for dbt-spark's session method.

Nothing here imports pyspark (an extra: ``pip install -e '.[spark]'``). A session of the
platform is a Hive catalog of plain Parquet tables: their files under
``CHURN_SPARK_WAREHOUSE_DIR``, their names in the metastore ``CHURN_SPARK_METASTORE``: a
directory, whose Derby database the platform's own metastore service opens
(:mod:`churn_assets.infra.metastore`, started on first use, so that a run's Python and its
dbt subprocess share it); or the ``thrift://`` URL of a shared metastore service, and
nothing is started. Only tests open the directory's Derby database in their own process
(``in_process_derby``), which admits no other process. See ``docs/spark-notes.md``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from churn_assets.infra import metastore
from churn_assets.infra.warehouse import WarehouseError
from churn_assets.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Said when there is no Java runtime, the one thing pip cannot install.
JAVA_MISSING = (
    "the Spark engine needs a Java runtime (17 or 21) and `java` is not on PATH: install one "
    "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
)
PYSPARK_MISSING = "CHURN_ENGINE=spark needs pyspark: pip install -e '.[spark]'"


def java_executable() -> str | None:
    """The ``java`` pyspark starts: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_available() -> bool:
    """Whether pyspark can start its JVM."""
    return java_executable() is not None


def uses_local_metastore(settings: Settings) -> bool:
    """Whether the metastore is the platform's own Derby database (a directory, opened by
    its local service), not a shared service (``thrift://``)."""
    return not settings.spark_metastore.startswith("thrift://")


def metastore_uris(settings: Settings) -> str:
    """The ``thrift://`` URL every session of these settings connects to: the shared
    service's, or the local service's over the metastore directory, started if it is not
    running (:func:`churn_assets.infra.metastore.start`: seconds to half a minute the first
    time). Raises :class:`WarehouseError` when it cannot start (no Java, no pyspark)."""
    if not uses_local_metastore(settings):
        return settings.spark_metastore
    java = java_executable()
    if java is None:
        raise WarehouseError(JAVA_MISSING)
    spec = importlib.util.find_spec("pyspark")  # its jars, without importing it
    if spec is None or spec.origin is None:
        raise WarehouseError(PYSPARK_MISSING)
    jars = Path(spec.origin).parent / "jars"
    return metastore.start(Path(settings.spark_metastore), settings.spark_warehouse_dir, java, jars)


def stop_local_metastore(settings: Settings) -> bool:
    """Stop the local metastore service of these settings, if one runs; returns whether one
    did (a shared ``thrift://`` service is never stopped from here)."""
    if not uses_local_metastore(settings):
        return False
    return metastore.stop(Path(settings.spark_metastore))


def session_conf(
    settings: Settings, app_name: str = "churn", *, metastore_uris: str | None = None
) -> dict[str, str]:
    """The Spark properties of every session of the platform (dbt's and Python's alike).

    ``metastore_uris`` is the service a session with a metastore directory connects to
    (:func:`metastore_uris`); None opens the directory's Derby database in the session's
    own JVM (tests only: it then admits no other process). A ``thrift://`` setting is
    always the service. Pure: starts nothing.

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
        # Nothing on the console but errors: dagster-dbt reads dbt's output, which dbt's JVM
        # shares, as one JSON event per line, and a progress bar (no newline) glued to an
        # event's line lost the event (measured: a seed's and a test's results missing, the
        # step "did not yield expected outputs" and everything downstream skipped).
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": "ERROR",
        # Timestamps without a zone (Postgres `timestamp`, the raw contract's) are read and
        # cast to dates in UTC, whatever the machine's zone.
        "spark.sql.session.timeZone": "UTC",
        # dbt-spark turns ANSI mode off in every session it uses; the platform's own SQL
        # then means the same in its sessions as in dbt's.
        "spark.sql.ansi.enabled": "false",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
    }
    if not uses_local_metastore(settings):
        conf["spark.hadoop.hive.metastore.uris"] = settings.spark_metastore
    elif metastore_uris is not None:
        conf["spark.hadoop.hive.metastore.uris"] = metastore_uris
    else:
        directory = Path(settings.spark_metastore)
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={directory / 'metastore_db'};create=true"
        )
        # Derby writes derby.log into its system home (else the working directory).
        conf["spark.driver.extraJavaOptions"] = f"-Dderby.system.home={directory}"
    return conf


def _conf(settings: Settings, app_name: str, in_process_derby: bool) -> dict[str, str]:
    """:func:`session_conf` with the metastore service started unless ``in_process_derby``."""
    uris = None if in_process_derby else metastore_uris(settings)
    return session_conf(settings, app_name, metastore_uris=uris)


def dbt_env(settings: Settings, *, in_process_derby: bool = False) -> dict[str, str]:
    """The ``CHURN_SPARK_*`` variables ``dbt_project/profiles.yml`` reads for its ``spark``
    output, derived from the settings (as ``CHURN_PG_*`` are from the warehouse URL); starts
    the local metastore service unless ``in_process_derby`` (a test's dbt, run in the
    process whose session holds the Derby database)."""
    conf = _conf(settings, "churn-dbt", in_process_derby)
    return {
        "CHURN_ENGINE": settings.engine.value,
        "CHURN_SPARK_MASTER": conf["spark.master"],
        "CHURN_SPARK_WAREHOUSE_DIR": conf["spark.sql.warehouse.dir"],
        "CHURN_SPARK_METASTORE_JDBC_URL": conf.get(
            "spark.hadoop.javax.jdo.option.ConnectionURL", ""
        ),
        "CHURN_SPARK_METASTORE_URIS": conf.get("spark.hadoop.hive.metastore.uris", ""),
        "CHURN_SPARK_DRIVER_JAVA_OPTIONS": conf.get("spark.driver.extraJavaOptions", ""),
        "CHURN_SPARK_SHUFFLE_PARTITIONS": conf["spark.sql.shuffle.partitions"],
    }


def start_session(
    settings: Settings, app_name: str = "churn", *, in_process_derby: bool = False
) -> SparkSession:
    """The process's SparkSession with :func:`session_conf` (the one it has, if any: dbt-spark's
    session method then runs dbt's SQL in it too, see ``docs/spark-notes.md``), connected to
    the metastore service (started if needed) unless ``in_process_derby`` (tests)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in _conf(settings, app_name, in_process_derby).items():
        builder = builder.config(key, value)
    return builder.enableHiveSupport().getOrCreate()


def jvm_running() -> bool:
    """Whether pyspark started a JVM in this process that :func:`stop_jvm` has not stopped
    (False without pyspark: nothing could start one)."""
    try:
        from pyspark import SparkContext
    except ImportError:
        return False
    return SparkContext._gateway is not None


def stop_jvm() -> None:
    """Stops the active session and the JVM pyspark started for this process.

    Only the JVM's exit releases a Derby metastore opened in process: after ``SparkSession.stop()``
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
