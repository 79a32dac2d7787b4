"""Every setting the platform reads from the environment, in one place.

Settings say *where* things are (directories, URLs, targets); the thresholds the platform
*decides* with live in :mod:`churn_assets.policy`.

Nothing else in the package calls ``os.environ`` for configuration: modules ask
:func:`load_settings`, which reads the environment when called (never at import
time), so tests can ``monkeypatch.setenv`` and a long-lived process sees one
consistent snapshot per call. What Dagster needs in order to define the code location is
read when the code loads (:data:`SETTINGS` says which, under "when read"): the sensors'
interval in each module's ``@dg.definitions`` function, the resources' defaults in
``defs/resources.py``, and the dbt target the dbt assets are defined with
(:func:`load_dbt_target`, which reads nothing else, so a bad value of another setting
cannot stop an import).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from churn_assets.periods import Period, longest_period, period_end

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"

DEFAULT_HOME = ".churn"
DEFAULT_WINDOW_DAYS = 90
DEFAULT_DBT_TARGET = "local"
# The dbt output of the Spark engine (dbt_project/profiles.yml) when DBT_TARGET is unset.
SPARK_DBT_TARGET = "spark"
# Every core of this machine; a cluster is spark://host:7077 (or yarn, k8s://...).
DEFAULT_SPARK_MASTER = "local[*]"
# Spark's own default: right for millions of rows; adaptive execution (on by default)
# coalesces a small shuffle's partitions after the fact, but each statement still plans,
# and each map task still writes, this many (docs/spark-notes.md: small data wants 1-4).
DEFAULT_SPARK_SHUFFLE_PARTITIONS = 200
DEFAULT_SENSOR_INTERVAL_SECONDS = 30
# A full 1M-customer run takes a few minutes; a second run waits that long, not forever.
DEFAULT_LOCK_TIMEOUT_SECONDS = 900
# The scorer's feed on Spark (`current_features_export`), beside the rest of the state.
DEFAULT_ONLINE_FEATURES_FILE = "online/current_features.parquet"
# Where `dagster dev` / `churn dev` serve the UI: alert links point there unless told otherwise.
DEFAULT_UI_URL = "http://127.0.0.1:3000"


class SettingsError(ValueError):
    """An environment variable holds a value the platform cannot use."""


class Engine(StrEnum):
    """What builds and holds the tables: the dbt adapter and the warehouse."""

    POSTGRES = "postgres"
    SPARK = "spark"


class RawSource(StrEnum):
    """Where the raw customers and orders come from."""

    FILES = "files"
    """Files in ``CHURN_RAW_DIR``, validated in Python (``data/contract.py``)."""
    TABLES = "tables"
    """Tables already in the warehouse, validated in the engine (``tables/source.py``)."""


# A table a setting names: ``table`` or ``schema.table``, unquoted identifiers only, so
# the name reaches the engine's SQL as it is and can never carry SQL of its own.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")


@dataclass(frozen=True)
class Settings:
    """Resolved platform settings: each field's variable, default and meaning is in
    :data:`SETTINGS` below, from which ``docs/settings.md`` is generated."""

    home: Path
    raw_dir: Path
    period: Period
    as_of: date | None
    window_days: int
    warehouse_url: str | None
    dbt_target: str
    engine: Engine
    spark_master: str
    spark_warehouse_dir: str
    spark_metastore: str
    mlflow_tracking_uri: str | None
    sensor_interval_seconds: int
    warehouse_lock_timeout_seconds: int
    alert_webhook_url: str | None
    ui_url: str
    online_features_path: Path
    canary_percent: float = 0.0
    raw_source: RawSource = RawSource.FILES
    raw_customers_table: str | None = None
    raw_orders_table: str | None = None
    spark_shuffle_partitions: int = DEFAULT_SPARK_SHUFFLE_PARTITIONS

    def source_tables(self) -> tuple[str, str]:
        """The customers and orders tables ``CHURN_RAW_SOURCE=tables`` reads; raises
        :class:`SettingsError` naming the variables when either is unset."""
        if self.raw_customers_table is None or self.raw_orders_table is None:
            raise SettingsError(
                "CHURN_RAW_SOURCE=tables reads customers and orders from the warehouse: set "
                "CHURN_RAW_CUSTOMERS_TABLE and CHURN_RAW_ORDERS_TABLE (schema.table)"
            )
        return self.raw_customers_table, self.raw_orders_table

    @property
    def embedded_pg_dir(self) -> Path:
        return self.home / "pg"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def models_dir(self) -> Path:
        """One folder per trained model: weights, ONNX, card, plots, holdout ids."""
        return self.home / "models"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def resolved_tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI``, or the local SQLite store under ``<home>/mlflow``."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def local_artifact_location(self) -> str:
        """Artifact root for a local store (a server chooses its own)."""
        return (self.mlflow_dir / "artifacts").as_uri()


# When a setting is read decides what a change to it needs. One read when the code loads
# takes effect once `churn dev` or the code server restarts (a `churn` command loads the
# code afresh each time); the others at their next run, sensor tick or start.
WHEN_CODE_LOADS = "when the code loads"
PER_RUN_OR_TICK = "per run or sensor tick"
PER_SENSOR_TICK = "per sensor tick"
WHEN_SCORER_STARTS = "when `churn serve` starts"


@dataclass(frozen=True)
class SettingDoc:
    """One setting as a person sets it: the :class:`Settings` field it fills, its variable,
    its default and meaning as the docs show them, and when it is read."""

    field: str
    env: str
    default: str
    meaning: str
    read: str


# The one description of every setting: docs/settings.md is rendered from it
# (churn_assets/app/settings_doc.py), and tests/unit/test_settings_doc.py holds it against
# Settings and against the variables load_settings reads, so neither can drift from it.
SETTINGS: tuple[SettingDoc, ...] = (
    SettingDoc(
        "home",
        "CHURN_HOME",
        f"`./{DEFAULT_HOME}`",
        "state directory: embedded Postgres (`pg/`), Dagster instance (`dagster/`), MLflow "
        "store (`mlflow/`), generated data (`raw/`)",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "raw_dir",
        "CHURN_RAW_DIR",
        "`$CHURN_HOME/raw`",
        "directory holding `customers` and `orders` as CSV or Parquet",
        PER_RUN_OR_TICK,
    ),
    SettingDoc(
        "period",
        "CHURN_PERIOD",
        f"`{Period.MONTH.value}`",
        "the period of the partitions: `month` (month ends) or `week` (ISO weeks, ending Sunday)",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "as_of",
        "CHURN_AS_OF",
        "unset: the newest labelled period",
        "pins the out-of-time holdout period (a period end, YYYY-MM-DD); the `labels` "
        "resource's default, which a run can override",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "window_days",
        "CHURN_WINDOW_DAYS",
        f"`{DEFAULT_WINDOW_DAYS}`",
        "label window in days: churned = no order in (`as_of`, `as_of` + window]; a period "
        "is labelled once it has closed; the `labels` resource's default, which a run can "
        "override",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "warehouse_url",
        "CHURN_WAREHOUSE_URL",
        "unset: the embedded server under `$CHURN_HOME/pg`",
        "external Postgres URL; Dagster passes it as an `EnvVar`, never shown in the UI",
        f"{WHEN_CODE_LOADS} (embedded or external); the URL itself per run",
    ),
    SettingDoc(
        "dbt_target",
        "DBT_TARGET",
        f"`{DEFAULT_DBT_TARGET}`",
        "dbt target in `dbt_project/profiles.yml` (`local`, `ci`, `prod`; "
        f"`{SPARK_DBT_TARGET}` is the default when `CHURN_ENGINE={Engine.SPARK}`); an output "
        "of the other engine's adapter is refused",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "engine",
        "CHURN_ENGINE",
        f"`{Engine.POSTGRES}`",
        "what builds and holds the tables: `postgres` (dbt-postgres) or `spark` (dbt-spark "
        "in session mode, Parquet tables in a Hive catalog; `pip install -e '.[spark]'` and "
        "a Java runtime)",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "spark_master",
        "CHURN_SPARK_MASTER",
        f"`{DEFAULT_SPARK_MASTER}`",
        "Spark master of the engine's sessions: `local[N]`, `spark://host:7077`, `yarn`, "
        "`k8s://...`",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "spark_warehouse_dir",
        "CHURN_SPARK_WAREHOUSE_DIR",
        "`$CHURN_HOME/spark/warehouse`",
        "where Spark writes the tables' Parquet files: a directory, or a URL every Spark "
        "process reaches (`s3a://bucket/churn`, `hdfs://...`)",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "spark_metastore",
        "CHURN_SPARK_METASTORE",
        "`$CHURN_HOME/spark/metastore`",
        "the Hive metastore that names the tables: a directory (a Derby database, which the "
        "platform's own metastore service opens: started on first use on a free local port, "
        "stopped by `churn warehouse-stop`; see [Spark notes](spark-notes.md)) or "
        "`thrift://host:9083` (a shared metastore service: nothing is started)",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "mlflow_tracking_uri",
        "MLFLOW_TRACKING_URI",
        "unset: SQLite under `$CHURN_HOME/mlflow`",
        "MLflow tracking server and model registry",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "sensor_interval_seconds",
        "CHURN_SENSOR_INTERVAL_SECONDS",
        f"`{DEFAULT_SENSOR_INTERVAL_SECONDS}`",
        "how often the daemon's sensors look (raw files, automation, promotion, retraining, "
        "alerts)",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "warehouse_lock_timeout_seconds",
        "CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS",
        f"`{DEFAULT_LOCK_TIMEOUT_SECONDS}`",
        "how long a run waits for another run that is writing the warehouse (0: fail at "
        "once, naming the run that holds it)",
        WHEN_CODE_LOADS,
    ),
    SettingDoc(
        "alert_webhook_url",
        "CHURN_ALERT_WEBHOOK_URL",
        "unset: alerts off",
        "http(s) URL that failed runs and failed gates are POSTed to as JSON",
        PER_SENSOR_TICK,
    ),
    SettingDoc(
        "ui_url",
        "CHURN_UI_URL",
        f"`{DEFAULT_UI_URL}`",
        "base URL of the Dagster UI that alert links point into (no trailing slash)",
        PER_SENSOR_TICK,
    ),
    SettingDoc(
        "online_features_path",
        "CHURN_ONLINE_FEATURES_PATH",
        f"`$CHURN_HOME/{DEFAULT_ONLINE_FEATURES_FILE}`",
        "the newest period's features as one Parquet file, rewritten by the asset "
        "`current_features_export` after each build of `current_features`; under "
        "`CHURN_ENGINE=spark` the scorer loads its copy of the features from it (pyarrow "
        "only: no JVM, no warehouse). A local path (for a scorer on another machine, a "
        "shared file system)",
        f"per run (the export); {WHEN_SCORER_STARTS} (the scorer)",
    ),
    SettingDoc(
        "canary_percent",
        "CHURN_CANARY_PERCENT",
        "`0`",
        "share of customers (0 to 100, by id) the scorer answers with the registry's "
        "`challenger` while it differs from the champion; 0: the challenger only scores in "
        "the shadow",
        WHEN_SCORER_STARTS,
    ),
    SettingDoc(
        "raw_source",
        "CHURN_RAW_SOURCE",
        f"`{RawSource.FILES.value}`",
        "where raw customers and orders come from: `files` (in `CHURN_RAW_DIR`) or `tables` "
        "(already in the warehouse, named by the two settings below, checked against the "
        "contract in SQL and copied into `raw` there)",
        PER_RUN_OR_TICK,
    ),
    SettingDoc(
        "raw_customers_table",
        "CHURN_RAW_CUSTOMERS_TABLE",
        "unset",
        "with `CHURN_RAW_SOURCE=tables`: the customers table or view (`schema.table`, "
        "unquoted names), with the contract's columns",
        PER_RUN_OR_TICK,
    ),
    SettingDoc(
        "raw_orders_table",
        "CHURN_RAW_ORDERS_TABLE",
        "unset",
        "with `CHURN_RAW_SOURCE=tables`: the orders table or view (`schema.table`)",
        PER_RUN_OR_TICK,
    ),
    SettingDoc(
        "spark_shuffle_partitions",
        "CHURN_SPARK_SHUFFLE_PARTITIONS",
        f"`{DEFAULT_SPARK_SHUFFLE_PARTITIONS}`",
        "`spark.sql.shuffle.partitions` of every Spark session of the platform, Python's and "
        "dbt's: keep the default (Spark's own) for millions of rows; a few (the cluster's "
        "cores, 2-4) for thousands, where each statement's fixed costs are all there is "
        "(see [Spark notes](spark-notes.md))",
        PER_RUN_OR_TICK,
    ),
)


@dataclass(frozen=True)
class DbtTarget:
    """What the dbt project is parsed for.

    Attributes:
        target: The dbt profile target (``DBT_TARGET``).
        warehouse_url: The external warehouse (``CHURN_WAREHOUSE_URL``), whose database
            name the manifest records; ``None``: the embedded one.
    """

    target: str
    warehouse_url: str | None
    engine: Engine = Engine.POSTGRES


def load_dbt_target(environ: Mapping[str, str] | None = None) -> DbtTarget:
    """The settings the dbt project needs, read alone: dagster-dbt defines the dbt assets
    from the manifest when their module is imported. The engine picks the default target:
    `spark` for Spark, `local` for Postgres; ``DBT_TARGET`` wins over both."""
    env = os.environ if environ is None else environ
    engine = _parse_choice(env, "CHURN_ENGINE", Engine.POSTGRES)
    default_target = SPARK_DBT_TARGET if engine is Engine.SPARK else DEFAULT_DBT_TARGET
    target = env.get("DBT_TARGET") or default_target
    _check_target_engine(target, engine)
    return DbtTarget(
        target=target, warehouse_url=env.get("CHURN_WAREHOUSE_URL") or None, engine=engine
    )


@functools.cache
def _output_adapters() -> dict[str, str]:
    """Each output of the project's ``profiles.yml`` and its adapter type, read once per
    process (settings are read often; the file belongs to the checkout)."""
    import yaml  # only here: most readers of the settings never need it

    profiles = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    outputs = profiles.get("churn", {}).get("outputs", {})
    return {
        name: output["type"]
        for name, output in outputs.items()
        if isinstance(output, dict) and "type" in output
    }


def _check_target_engine(target: str, engine: Engine) -> None:
    """Refuse a dbt output of the other engine: with ``CHURN_ENGINE=spark`` and
    ``DBT_TARGET=prod`` (a Postgres output), dbt would build the features on Postgres while
    the Python steps read Spark's. A target the project's profiles do not name is dbt's to
    report."""
    adapter = _output_adapters().get(target)
    if adapter is not None and adapter != engine.value:
        raise SettingsError(
            f"DBT_TARGET={target} is a {adapter} output of dbt_project/profiles.yml but "
            f"CHURN_ENGINE={engine.value}: name a {engine.value} output "
            f"(DBT_TARGET={SPARK_DBT_TARGET if engine is Engine.SPARK else DEFAULT_DBT_TARGET})"
            " or unset DBT_TARGET"
        )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Reads the settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    dbt = load_dbt_target(env)
    home = Path(env.get("CHURN_HOME") or DEFAULT_HOME).expanduser().resolve()
    raw_dir = Path(env.get("CHURN_RAW_DIR") or home / "raw").expanduser().resolve()
    period = _parse_choice(env, "CHURN_PERIOD", Period.MONTH)
    return Settings(
        home=home,
        raw_dir=raw_dir,
        period=period,
        as_of=_parse_period_end(env, "CHURN_AS_OF", period),
        window_days=_parse_int(env, "CHURN_WINDOW_DAYS", DEFAULT_WINDOW_DAYS, minimum=1),
        warehouse_url=dbt.warehouse_url,
        dbt_target=dbt.target,
        engine=dbt.engine,
        spark_master=(env.get("CHURN_SPARK_MASTER") or "").strip() or DEFAULT_SPARK_MASTER,
        spark_warehouse_dir=_location(
            env, "CHURN_SPARK_WAREHOUSE_DIR", home / "spark" / "warehouse"
        ),
        spark_metastore=_location(env, "CHURN_SPARK_METASTORE", home / "spark" / "metastore"),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        sensor_interval_seconds=_parse_int(
            env, "CHURN_SENSOR_INTERVAL_SECONDS", DEFAULT_SENSOR_INTERVAL_SECONDS, minimum=1
        ),
        warehouse_lock_timeout_seconds=_parse_int(
            env, "CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS", DEFAULT_LOCK_TIMEOUT_SECONDS, minimum=0
        ),
        alert_webhook_url=_parse_http_url(env, "CHURN_ALERT_WEBHOOK_URL"),
        ui_url=(_parse_http_url(env, "CHURN_UI_URL") or DEFAULT_UI_URL).rstrip("/"),
        online_features_path=Path(
            env.get("CHURN_ONLINE_FEATURES_PATH") or home / DEFAULT_ONLINE_FEATURES_FILE
        )
        .expanduser()
        .resolve(),
        canary_percent=_parse_percent(env, "CHURN_CANARY_PERCENT"),
        raw_source=_parse_choice(env, "CHURN_RAW_SOURCE", RawSource.FILES),
        raw_customers_table=_parse_table_name(env, "CHURN_RAW_CUSTOMERS_TABLE"),
        raw_orders_table=_parse_table_name(env, "CHURN_RAW_ORDERS_TABLE"),
        spark_shuffle_partitions=_parse_int(
            env,
            "CHURN_SPARK_SHUFFLE_PARTITIONS",
            DEFAULT_SPARK_SHUFFLE_PARTITIONS,
            minimum=1,
        ),
    )


def _location(env: Mapping[str, str], name: str, default: Path) -> str:
    """A directory (made absolute: Spark resolves a relative one against the working
    directory of whichever process starts it) or a URL, kept as written."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return str(default)
    if "://" in raw:
        return raw
    return str(Path(raw).expanduser().resolve())


_Choice = TypeVar("_Choice", bound=StrEnum)


def _parse_choice(env: Mapping[str, str], name: str, default: _Choice) -> _Choice:
    """One of ``default``'s enum values (case and spaces ignored), or the default when unset."""
    choices = type(default)
    raw = (env.get(name) or default.value).strip().lower()
    try:
        return choices(raw)
    except ValueError:
        listed = ", ".join(choice.value for choice in choices)
        raise SettingsError(f"{name}={raw!r} is not one of: {listed}") from None


def _parse_table_name(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not _TABLE_NAME.fullmatch(raw):
        raise SettingsError(
            f"{name}={raw[:80]!r} is not a table name: table or schema.table, letters, "
            "digits, _ and $ (unquoted names)"
        )
    return raw


def _parse_date(env: Mapping[str, str], name: str) -> date | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an ISO date (YYYY-MM-DD)") from None


def _parse_period_end(env: Mapping[str, str], name: str, period: Period) -> date | None:
    """A date that must be a period end: anything else would be found out only after the
    whole history was reloaded and rebuilt, by a training step that cannot use it."""
    day = _parse_date(env, name)
    if day is None or period_end(day, period) == day:
        return day
    after = period_end(day, period)
    before = period_end(after - longest_period(period), period)
    raise SettingsError(
        f"{name}={day.isoformat()} is not a {period} end (CHURN_PERIOD={period}): the "
        f"nearest are {before.isoformat()} and {after.isoformat()}"
    )


def _parse_int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be >= {minimum}")
    return value


def _parse_percent(env: Mapping[str, str], name: str) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number (a percent, 0 to 100)") from None
    if not 0.0 <= value <= 100.0:  # also refuses nan
        raise SettingsError(f"{name}={raw} must be between 0 and 100")
    return value


def _parse_http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    parsed = urlsplit(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        # Only the scheme is echoed: a webhook URL often carries its secret in the path.
        raise SettingsError(
            f"{name} must be an http:// or https:// URL with a host (got scheme "
            f"{parsed.scheme or 'none'!r})"
        )
    try:
        parsed.port  # noqa: B018  # raises for a port that is not a number
    except ValueError:
        # Most often a password with an unencoded / ? # or @, which cuts the host short;
        # nothing of the URL is echoed, it may be that password.
        raise SettingsError(
            f"{name} has a port that is not a number; percent-encode / ? # @ in a password "
            "(user:password@ is sent as basic auth)"
        ) from None
    return raw
