"""The Spark engine's connection is derived in one place (churn_assets/infra/spark.py), and
dbt_project/profiles.yml reads exactly the variables it derives."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from churn_assets.infra import spark
from churn_assets.settings import DBT_PROJECT_DIR, load_settings


def test_an_embedded_metastore_lives_in_its_directory_with_its_log(tmp_path: Path) -> None:
    settings = load_settings({"CHURN_HOME": str(tmp_path), "CHURN_ENGINE": "spark"})
    conf = spark.session_conf(settings)
    metastore = tmp_path / "spark" / "metastore"
    assert spark.uses_embedded_metastore(settings)
    assert conf["spark.hadoop.javax.jdo.option.ConnectionURL"] == (
        f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true"
    )
    # derby.log beside the database, not in the working directory of whoever started Spark
    assert conf["spark.driver.extraJavaOptions"] == f"-Dderby.system.home={metastore}"
    assert conf["spark.sql.warehouse.dir"] == str(tmp_path / "spark" / "warehouse")
    assert conf["spark.sql.catalogImplementation"] == "hive"
    assert "spark.hadoop.hive.metastore.uris" not in conf


def test_a_metastore_service_replaces_the_embedded_database() -> None:
    settings = load_settings({"CHURN_SPARK_METASTORE": "thrift://hms:9083"})
    conf = spark.session_conf(settings)
    assert not spark.uses_embedded_metastore(settings)
    assert conf["spark.hadoop.hive.metastore.uris"] == "thrift://hms:9083"
    assert "spark.hadoop.javax.jdo.option.ConnectionURL" not in conf
    assert spark.dbt_env(settings)["CHURN_SPARK_METASTORE_URIS"] == "thrift://hms:9083"


def test_profiles_spark_output_reads_exactly_the_derived_variables() -> None:
    text = (DBT_PROJECT_DIR / "profiles.yml").read_text()
    output = yaml.safe_load(text)["churn"]["outputs"]["spark"]
    read = set(re.findall(r"env_var\('(CHURN_SPARK_[A-Z_]+)'", text))
    derived = {name for name in spark.dbt_env(load_settings({})) if name.startswith("CHURN_SPARK_")}
    assert read == derived
    assert output["method"] == "session"


def test_dbt_and_python_sessions_share_every_spark_property() -> None:
    # What a session reads only when it starts the JVM must agree whichever starts it
    settings = load_settings({"CHURN_ENGINE": "spark"})
    profile = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    parameters = profile["churn"]["outputs"]["spark"]["server_side_parameters"]
    python_side = set(spark.session_conf(settings)) | {
        "spark.hadoop.javax.jdo.option.ConnectionURL",
        "spark.hadoop.hive.metastore.uris",
    }
    # dbt-spark adds spark.sql.ansi.enabled=false itself
    assert set(parameters) | {"spark.sql.ansi.enabled"} == python_side
