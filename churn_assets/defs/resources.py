"""Resources: the warehouse (embedded or external Postgres, or Spark's Hive catalog), dbt,
MLflow, asset storage."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import dagster as dg
from dagster_dbt import DbtCliInvocation, DbtCliResource
from dagster_dbt.compat import DBT_PYTHON_VERSION
from packaging.version import Version
from pydantic import Field, PrivateAttr, create_model

from churn_assets.infra import spark, warehouse
from churn_assets.lib import child_processes
from churn_assets.lib.dbt import churn_dbt_project
from churn_assets.policy import Policy, load_policy, rules
from churn_assets.schema import EXPERIMENT_NAME, REGISTERED_MODEL_NAME
from churn_assets.settings import DEFAULT_LOCK_TIMEOUT_SECONDS, Engine, Settings, load_settings
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.spark.warehouse import SparkWarehouse
from churn_assets.tables.warehouse import HeldLock, Warehouse
from churn_assets.urls import mask_url


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse. Assets read and write it through the interface it hands out
    (:meth:`client`, a :class:`~churn_assets.tables.warehouse.Warehouse`), never on their own.

    A run that uses it holds the warehouse write lock from its first step to its last
    (:meth:`~churn_assets.tables.warehouse.Warehouse.write_lock`: a Postgres advisory lock,
    on Spark a file lock beside the metastore), so two runs never interleave: the model a
    run trains is trained on the raw data and features that run built. Runs execute in one
    process (``in_process_executor`` below), which is what lets a resource hold the lock for
    the whole run rather than per step.

    Attributes:
        lock_timeout_seconds: How long a run waits for another run to release the
            warehouse before failing with a message naming it
            (``CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS``; 0 fails at once).
    """

    lock_timeout_seconds: int = DEFAULT_LOCK_TIMEOUT_SECONDS
    # The lock this run holds (None outside a run); each run gets its own copy of the resource.
    _write_lock: HeldLock | None = PrivateAttr(default=None)

    def client(self) -> Warehouse:
        """The warehouse interface: every read and write of an asset goes through it."""
        raise NotImplementedError

    def dbt_env(self) -> dict[str, str]:
        """The variables ``dbt_project/profiles.yml`` reads for this warehouse."""
        raise NotImplementedError

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[Self]:
        run = context.run
        if run is None:  # built outside a run (``dg.build_resources``, a notebook): no lock
            yield self
            return
        holder = f"run {run.run_id} ({run.job_name})"
        log = context.log

        def waiting(current: warehouse.LockHolder | None) -> None:
            if log is not None:
                log.warning(
                    f"waiting up to {self.lock_timeout_seconds} s for the warehouse: it is "
                    f"being written by {current or 'another session'}"
                )

        with (
            self._for_the_run(),
            self.client().write_lock(holder, self.lock_timeout_seconds, waiting) as lock,
        ):
            if log is not None:
                log.info("holding the warehouse write lock until this run ends")
            self._write_lock = lock
            try:
                yield self
            finally:
                self._write_lock = None

    def _for_the_run(self) -> contextlib.AbstractContextManager[None]:
        """What the engine holds for a run beyond the lock (entered before it, left after)."""
        return contextlib.nullcontext()

    def ensure_write_lock(self, consequence: str) -> None:
        """Raise :class:`churn_assets.infra.warehouse.WarehouseLockLost`, one line ending with
        ``consequence`` ("nothing registered"), unless this run still holds the write lock.

        Call it right before an irreversible step that follows a long computation (a
        registry write): a warehouse that restarted during training took the lock with it,
        and another run may be rewriting the data the model was trained on. Outside a run no
        lock was taken, and there is nothing to check.
        """
        if self._write_lock is not None:
            self._write_lock.ensure_held(consequence)


class PostgresWarehouseResource(WarehouseResource):
    """A Postgres warehouse, reached by one URL (:meth:`url`)."""

    def url(self) -> str:
        raise NotImplementedError

    def client(self) -> Warehouse:
        return PostgresWarehouse(self.url())

    def dbt_env(self) -> dict[str, str]:
        """The ``CHURN_PG_*`` variables ``dbt_project/profiles.yml`` reads."""
        return warehouse.parse_url(self.url()).dbt_env()


class EmbeddedPostgresWarehouse(PostgresWarehouseResource):
    """A real PostgreSQL server from a pip package, started on demand and left running.

    Attributes:
        data_dir: The server's data directory (``<CHURN_HOME>/pg``); data survives restarts.
    """

    data_dir: str

    def url(self) -> str:
        return warehouse.start_embedded(Path(self.data_dir))


class ExternalPostgresWarehouse(PostgresWarehouseResource):
    """Any Postgres reachable by URL (``CHURN_WAREHOUSE_URL``).

    Attributes:
        connection_url: ``postgresql://user:password@host:port/db``; set from an ``EnvVar``
            so the password is read at launch and never shown in the UI.
    """

    connection_url: str

    def url(self) -> str:
        return self.connection_url


class SparkWarehouseResource(WarehouseResource):
    """Spark's Hive catalog of Parquet tables (``CHURN_ENGINE=spark``): the steps read and
    write it in the run process's SparkSession (:class:`SparkWarehouse`), and each dbt step
    runs dbt-spark in a subprocess with a session of its own. Both reach the catalog through
    the metastore service (``infra/metastore.py``: the platform's own over a metastore
    directory, started if it is not running), never Derby itself: two processes could not
    share it.

    The run owns the JVM it starts: it stops when the run ends, so a process that runs
    several (a test session, a code server) never hands a later run a session started with
    another run's settings, nor keeps a JVM between runs. A JVM the process already had
    (``churn run`` reads the last load before its run) is left to it.

    Attributes:
        master: The Spark master (``CHURN_SPARK_MASTER``): ``local[N]``, ``spark://host:7077``.
        warehouse_dir: Where the tables' files are (``CHURN_SPARK_WAREHOUSE_DIR``).
        metastore: A directory (the platform's metastore service over its Derby database)
            or a shared service's ``thrift://host:port`` (``CHURN_SPARK_METASTORE``).
        home: ``CHURN_HOME``: the write lock's place when the metastore is shared.
    """

    master: str
    warehouse_dir: str
    metastore: str
    home: str

    def settings(self) -> Settings:
        """The deployment's settings, with this resource's Spark values."""
        return dataclasses.replace(
            load_settings(),
            engine=Engine.SPARK,
            home=Path(self.home),
            spark_master=self.master,
            spark_warehouse_dir=self.warehouse_dir,
            spark_metastore=self.metastore,
        )

    def client(self) -> Warehouse:
        return SparkWarehouse(self.settings())

    def dbt_env(self) -> dict[str, str]:
        """The ``CHURN_SPARK_*`` variables (and ``CHURN_ENGINE``) ``profiles.yml`` reads."""
        return spark.dbt_env(self.settings())

    @contextlib.contextmanager
    def _for_the_run(self) -> Iterator[None]:
        had_jvm = spark.jvm_running()
        try:
            yield
        finally:
            if not had_jvm and spark.jvm_running():
                spark.stop_jvm()


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and model registry.

    We use explicit ``MlflowClient`` calls rather than dagster-mlflow's ``mlflow_tracking``
    resource: that one opens one global MLflow run per Dagster run when the resource starts,
    while we want one run per trained model, and a clean "skipped" when the server is down.

    Attributes:
        tracking_uri: ``MLFLOW_TRACKING_URI`` or the local SQLite store under ``CHURN_HOME``.
        artifact_location: Artifact root used when the experiment is created (local stores).
        experiment_name: The MLflow experiment holding every training run.
        model_name: The registered model that receives a version per gated model.
    """

    tracking_uri: str
    artifact_location: str = ""
    # mlflow (also through ``churn_assets.ml.tracking``) is imported in the methods: every run
    # process loads this module, and a run that never touches the registry (ingest, dbt)
    # should not pay seconds for it; the names come from ``schema``, which imports nothing.
    experiment_name: str = EXPERIMENT_NAME
    model_name: str = REGISTERED_MODEL_NAME

    def experiment_id(self) -> str:
        """Raises :class:`tracking.RegistryUnavailable` quickly when a server is down."""
        from mlflow.tracking import MlflowClient

        from churn_assets.ml import tracking

        tracking.check_reachable(self.tracking_uri)
        if not tracking.is_remote(self.tracking_uri):
            # A fresh SQLite store is created (and migrated) on first use.
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        client = MlflowClient(self.tracking_uri)
        return tracking.ensure_experiment(
            client, self.experiment_name, self.artifact_location or None
        )

    def run_link(self, experiment_id: str, run_id: str) -> str:
        """Where a person finds the run: a URL for a server, the UI command for a local store.
        Shown in the Dagster UI, so the URI's password is masked (the browser asks for it)."""
        from churn_assets.ml import tracking

        shown = mask_url(self.tracking_uri)
        if tracking.is_remote(self.tracking_uri):
            return f"{shown.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"mlflow ui --backend-store-uri {shown}  (run {run_id})"


# The resource's fields are generated from ``churn_assets.policy.Policy``: one definition of
# every threshold (name, type, default, meaning, variable), shown in the UI and launchpad.
if TYPE_CHECKING:
    _PolicyFields = dg.ConfigurableResource
else:
    _PolicyFields = create_model(
        "_PolicyFields",
        __base__=dg.ConfigurableResource,
        **{
            rule.name: (
                rule.kind,
                Field(default=rule.default, description=f"{rule.meaning} ({rule.env})"),
            )
            for rule in rules()
        },
    )


class ChurnPolicy(_PolicyFields):
    """Every threshold the platform decides with: data rules, gates, promotion, drift,
    retraining, risk bands. Each field's description names its environment variable; the
    values in the UI are the deployment's (defaults overridden by those variables), and a
    run can override any of them in the launchpad."""

    def policy(self) -> Policy:
        """The validated pure policy the ML code takes."""
        return Policy(**{rule.name: getattr(self, rule.name) for rule in rules()})


def policy_resource() -> ChurnPolicy:
    """The deployment's policy: defaults overridden by the ``CHURN_*`` policy variables."""
    return ChurnPolicy(**load_policy().as_dict())


class LabelDefinition(dg.ConfigurableResource):
    """What a label is, for every step of a run alike: the dbt step builds the labels with it,
    and the training dataset and the backtest choose their cohorts and holdout with it. One
    source, so a launchpad override of one run moves them together (with two, the labels
    and the choice of cohorts disagreed).

    Attributes:
        window_days: A customer churned at a period end ``p`` when they ordered nothing in
            ``(p, p + window_days]`` (``CHURN_WINDOW_DAYS``).
        holdout_as_of: The out-of-time holdout period, a labelled period end (``CHURN_AS_OF``);
            empty: the newest labelled period.
    """

    window_days: int = Field(ge=1, description="label window in days (CHURN_WINDOW_DAYS)")
    holdout_as_of: str = Field(
        default="",
        description="pins the out-of-time holdout period, a period end YYYY-MM-DD "
        "(CHURN_AS_OF); empty: the newest labelled period",
    )

    def pinned(self) -> date | None:
        """The pinned holdout period, or None."""
        if not self.holdout_as_of.strip():
            return None
        try:
            return date.fromisoformat(self.holdout_as_of.strip())
        except ValueError:
            raise dg.Failure(
                f"labels.holdout_as_of={self.holdout_as_of!r} is not an ISO date (YYYY-MM-DD)"
            ) from None


def labels_resource() -> LabelDefinition:
    """The deployment's label definition: ``CHURN_WINDOW_DAYS`` and ``CHURN_AS_OF``."""
    settings = load_settings()
    pinned = settings.as_of.isoformat() if settings.as_of else ""
    return LabelDefinition(window_days=settings.window_days, holdout_as_of=pinned)


def warehouse_resource() -> WarehouseResource:
    """Spark under ``CHURN_ENGINE=spark``; else the embedded Postgres unless
    ``CHURN_WAREHOUSE_URL`` is set (switches fixed per deployment)."""
    settings = load_settings()
    timeout = settings.warehouse_lock_timeout_seconds
    if settings.engine is Engine.SPARK:
        return SparkWarehouseResource(
            master=settings.spark_master,
            warehouse_dir=settings.spark_warehouse_dir,
            metastore=settings.spark_metastore,
            home=str(settings.home),
            lock_timeout_seconds=timeout,
        )
    if settings.warehouse_url:
        return ExternalPostgresWarehouse(
            connection_url=dg.EnvVar("CHURN_WAREHOUSE_URL"), lock_timeout_seconds=timeout
        )
    return EmbeddedPostgresWarehouse(
        data_dir=str(settings.embedded_pg_dir), lock_timeout_seconds=timeout
    )


def mlflow_resource() -> MlflowResource:
    """The registry these settings name. A ``MLFLOW_TRACKING_URI`` holding a password is
    passed as an ``EnvVar``, as the warehouse URL is: the UI shows the variable's name."""
    settings = load_settings()
    uri = settings.resolved_tracking_uri
    return MlflowResource(
        tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI") if mask_url(uri) != uri else uri,
        artifact_location="" if settings.mlflow_tracking_uri else settings.local_artifact_location,
    )


class DbtCli(DbtCliResource):
    """dagster-dbt's dbt resource, without two fixed costs of every dbt command, and with a
    ``dbt`` that dies with the run that started it (:meth:`cli`).

    - The version: each run gets a fresh resource, and its first dbt step asked the ``dbt``
      executable for its version (to tell dbt-core from the Fusion engine): ~1.4 s of dbt's
      start-up, three times in a ``churn run``. Our ``dbt`` is the dbt-core installed beside
      this interpreter (``lib/dbt.py`` puts its bin first on PATH), so the imported
      package's version is the same answer; ``tests/unit/test_dbt_cli.py`` compares the two.
    - The in-process adapter: every command opened one (~1.3 s: dbt's macros parsed again),
      used only by ``fetch_row_counts()`` and ``fetch_column_metadata()``. Our steps count
      their rows themselves (``defs/dbt/assets.py``), so none is opened; dagster-dbt treats
      a missing adapter as it does under Fusion. A step that wants those two calls needs
      ``DbtCliResource`` itself.
    """

    @cached_property
    def _cli_version(self) -> Version:
        if DBT_PYTHON_VERSION is None:  # no dbt-core to import: ask the executable
            return super()._cli_version
        return DBT_PYTHON_VERSION

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:  # type: ignore[override]
        return None

    def cli(self, args: Sequence[str], **kwargs: Any) -> DbtCliInvocation:
        """dagster-dbt's ``cli``, with a ``dbt`` that dies with this process: a run killed
        with SIGKILL leaves no dbt writing (``lib/child_processes.py``; Linux only)."""
        child_processes.install()
        return super().cli(args, **kwargs)


@dg.definitions
def defs() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(
        # One process per run: the warehouse resource holds the write lock for the whole
        # run (a step-per-process executor would take it per step and let runs interleave),
        # and on two cores it also saves re-importing dbt, torch and GX in every step.
        executor=dg.in_process_executor,
        resources={
            "warehouse": warehouse_resource(),
            # DbtCliResource.__init__ takes the DbtProject (and its target); mypy types a
            # subclass of a resource by its fields instead, where project_dir is a str.
            "dbt": DbtCli(project_dir=churn_dbt_project()),  # type: ignore[arg-type]
            "mlflow": mlflow_resource(),
            "policy": policy_resource(),
            "labels": labels_resource(),
            # Asset values (the training DataFrame, model handles) persist under CHURN_HOME,
            # so a later run can materialise one asset from an earlier run's upstream,
            # whether that run came from the UI or from `churn run`.
            "io_manager": dg.FilesystemIOManager(base_dir=str(settings.dagster_home / "storage")),
        },
    )
