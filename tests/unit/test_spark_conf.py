"""The Spark engine's connection is derived in one place (churn_assets/infra/spark.py), and
dbt_project/profiles.yml reads exactly the variables it derives."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from churn_assets.infra import spark
from churn_assets.settings import DBT_PROJECT_DIR, load_settings


def test_a_metastore_directory_is_served_by_the_local_service(tmp_path: Path) -> None:
    # Every session of a run (its Python's, its dbt subprocess's) connects to the service
    # over the directory's Derby database; none opens the database itself.
    settings = load_settings({"CHURN_HOME": str(tmp_path), "CHURN_ENGINE": "spark"})
    conf = spark.session_conf(settings, metastore_uris="thrift://127.0.0.1:41234")
    assert spark.uses_local_metastore(settings)
    assert conf["spark.hadoop.hive.metastore.uris"] == "thrift://127.0.0.1:41234"
    assert "spark.hadoop.javax.jdo.option.ConnectionURL" not in conf
    assert "spark.driver.extraJavaOptions" not in conf


def test_a_test_can_open_the_derby_database_in_its_own_process(tmp_path: Path) -> None:
    settings = load_settings({"CHURN_HOME": str(tmp_path), "CHURN_ENGINE": "spark"})
    conf = spark.session_conf(settings)
    metastore = tmp_path / "spark" / "metastore"
    assert conf["spark.hadoop.javax.jdo.option.ConnectionURL"] == (
        f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true"
    )
    # derby.log beside the database, not in the working directory of whoever started Spark
    assert conf["spark.driver.extraJavaOptions"] == f"-Dderby.system.home={metastore}"
    assert conf["spark.sql.warehouse.dir"] == str(tmp_path / "spark" / "warehouse")
    assert conf["spark.sql.catalogImplementation"] == "hive"
    assert "spark.hadoop.hive.metastore.uris" not in conf


def test_a_shared_metastore_service_is_used_as_it_is_and_nothing_starts(tmp_path: Path) -> None:
    settings = load_settings(
        {"CHURN_HOME": str(tmp_path), "CHURN_SPARK_METASTORE": "thrift://hms:9083"}
    )
    conf = spark.session_conf(settings, metastore_uris="thrift://127.0.0.1:41234")
    assert not spark.uses_local_metastore(settings)
    assert conf["spark.hadoop.hive.metastore.uris"] == "thrift://hms:9083"
    assert "spark.hadoop.javax.jdo.option.ConnectionURL" not in conf
    assert spark.metastore_uris(settings) == "thrift://hms:9083"
    assert spark.dbt_env(settings)["CHURN_SPARK_METASTORE_URIS"] == "thrift://hms:9083"
    assert not spark.stop_local_metastore(settings)
    assert not (tmp_path / "spark").exists()  # no service, no directory


def test_profiles_spark_output_reads_exactly_the_derived_variables() -> None:
    text = (DBT_PROJECT_DIR / "profiles.yml").read_text()
    output = yaml.safe_load(text)["churn"]["outputs"]["spark"]
    read = set(re.findall(r"env_var\('(CHURN_SPARK_[A-Z_]+)'", text))
    env = spark.dbt_env(load_settings({}), in_process_derby=True)
    derived = {name for name in env if name.startswith("CHURN_SPARK_")}
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


def test_python_and_dbt_sessions_get_the_same_shuffle_partitions(tmp_path: Path) -> None:
    # Spark's own 200 unless told; a small-data deployment sets a few for both sides
    default = load_settings({"CHURN_HOME": str(tmp_path), "CHURN_ENGINE": "spark"})
    assert spark.session_conf(default)["spark.sql.shuffle.partitions"] == "200"
    small = load_settings(
        {
            "CHURN_HOME": str(tmp_path),
            "CHURN_ENGINE": "spark",
            "CHURN_SPARK_SHUFFLE_PARTITIONS": "2",
        }
    )
    assert spark.session_conf(small)["spark.sql.shuffle.partitions"] == "2"
    assert spark.dbt_env(small, in_process_derby=True)["CHURN_SPARK_SHUFFLE_PARTITIONS"] == "2"
