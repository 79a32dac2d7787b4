"""Settings come from the environment in one place and fail loudly on bad values."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from churn_assets.infra.warehouse import WarehouseError, parse_url
from churn_assets.settings import Engine, SettingsError, load_dbt_target, load_settings


def test_load_settings_defaults_put_all_state_under_churn_home(tmp_path: Path) -> None:
    settings = load_settings({"CHURN_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.raw_dir == tmp_path / "raw"
    assert settings.embedded_pg_dir == tmp_path / "pg"
    assert (settings.as_of, settings.window_days) == (None, 90)
    assert settings.warehouse_lock_timeout_seconds == 900
    assert settings.warehouse_url is None
    assert settings.dbt_target == "local"
    assert settings.canary_percent == 0.0


def test_load_settings_reads_every_override(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "CHURN_HOME": str(tmp_path),
            "CHURN_RAW_DIR": str(tmp_path / "mine"),
            "CHURN_AS_OF": "2025-06-30",
            "CHURN_WINDOW_DAYS": "60",
            "CHURN_WAREHOUSE_URL": "postgresql://u:p@db:5433/w",
            "CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS": "0",
            "DBT_TARGET": "prod",
            "CHURN_CANARY_PERCENT": "2.5",
        }
    )
    assert settings.raw_dir == tmp_path / "mine"
    assert settings.as_of == date(2025, 6, 30)
    assert settings.window_days == 60
    assert settings.warehouse_url == "postgresql://u:p@db:5433/w"
    assert settings.warehouse_lock_timeout_seconds == 0
    assert settings.dbt_target == "prod"
    assert settings.canary_percent == 2.5


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CHURN_AS_OF", "30/06/2025", "CHURN_AS_OF='30/06/2025' is not an ISO date"),
        ("CHURN_WINDOW_DAYS", "ninety", "CHURN_WINDOW_DAYS='ninety' is not an integer"),
        ("CHURN_WINDOW_DAYS", "0", "CHURN_WINDOW_DAYS=0 must be >= 1"),
        ("CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS", "-1", "TIMEOUT_SECONDS=-1 must be >= 0"),
        ("CHURN_CANARY_PERCENT", "ten", "CHURN_CANARY_PERCENT='ten' is not a number"),
        ("CHURN_CANARY_PERCENT", "101", "CHURN_CANARY_PERCENT=101 must be between 0 and 100"),
        ("CHURN_CANARY_PERCENT", "nan", "CHURN_CANARY_PERCENT=nan must be between 0 and 100"),
        ("CHURN_ENGINE", "duckdb", "CHURN_ENGINE='duckdb' is not one of: postgres, spark"),
        ("CHURN_SPARK_SHUFFLE_PARTITIONS", "0", "CHURN_SPARK_SHUFFLE_PARTITIONS=0 must be >= 1"),
    ],
)
def test_load_settings_names_the_bad_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({name: value})


def test_the_spark_engine_picks_its_dbt_output_and_keeps_its_state_under_churn_home(
    tmp_path: Path,
) -> None:
    settings = load_settings({"CHURN_HOME": str(tmp_path), "CHURN_ENGINE": "Spark"})
    assert settings.engine is Engine.SPARK
    assert settings.dbt_target == "spark"
    assert settings.spark_master == "local[*]"
    assert settings.spark_warehouse_dir == str(tmp_path / "spark" / "warehouse")
    assert settings.spark_metastore == str(tmp_path / "spark" / "metastore")
    # Postgres stays the default, with its own output; DBT_TARGET picks among an engine's
    assert load_settings({}).engine is Engine.POSTGRES
    assert load_dbt_target({"DBT_TARGET": "prod"}).target == "prod"
    assert load_dbt_target({"CHURN_ENGINE": "spark", "DBT_TARGET": "spark"}).target == "spark"


@pytest.mark.parametrize(
    ("engine", "target", "says"),
    [
        ("spark", "prod", "DBT_TARGET=prod is a postgres output"),
        ("postgres", "spark", "DBT_TARGET=spark is a spark output"),
    ],
)
def test_a_dbt_output_of_the_other_engine_is_refused_naming_both_variables(
    engine: str, target: str, says: str
) -> None:
    # Else dbt would build the features on one engine while the Python steps read the other.
    with pytest.raises(SettingsError, match=f"{says} .* but CHURN_ENGINE={engine}"):
        load_dbt_target({"CHURN_ENGINE": engine, "DBT_TARGET": target})


def test_spark_locations_are_made_absolute_but_urls_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spark resolves a relative directory against whichever process starts it
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        {"CHURN_SPARK_WAREHOUSE_DIR": "wh", "CHURN_SPARK_METASTORE": "thrift://hms:9083"}
    )
    assert settings.spark_warehouse_dir == str(tmp_path / "wh")
    assert settings.spark_metastore == "thrift://hms:9083"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # TCP with credentials
        ("postgresql://ana:s3cret@db.example:6543/wh", ("db.example", 6543, "ana", "s3cret", "wh")),
        # the embedded server's unix socket, as pgserver prints it
        ("postgresql://postgres:@/churn?host=/tmp/pg", ("/tmp/pg", 5432, "postgres", "", "churn")),
        # SQLAlchemy-style driver suffix
        ("postgresql+psycopg2://u@h/d", ("h", 5432, "u", "", "d")),
        # percent-encoded password
        ("postgresql://u:p%40ss@h:5432/d", ("h", 5432, "u", "p@ss", "d")),
    ],
)
def test_parse_url_gives_libpq_parameters(url: str, expected: tuple[object, ...]) -> None:
    p = parse_url(url)
    assert (p.host, p.port, p.user, p.password, p.dbname) == expected
    assert p.dbt_env()["CHURN_PG_HOST"] == expected[0]


def test_parse_url_rejects_other_databases() -> None:
    with pytest.raises(WarehouseError, match="must start with postgresql://"):
        parse_url("mysql://u@h/d")
