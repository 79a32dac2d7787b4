"""Issue 26, items 6 and 7: the whole demo graph on a real standalone Spark cluster gives the
Postgres demo's results.

The module starts a master and two workers (1 core each) from pyspark's own
``bin/spark-class`` on 127.0.0.1 (no Docker), waits until the master's JSON lists both
workers ALIVE, then runs ``CHURN_ENGINE=spark churn demo`` with
``CHURN_SPARK_MASTER=spark://127.0.0.1:<port>`` on a fresh home, as a user runs it, in a
process of its own (the engine is read when the code loads, and this process loaded it for
Postgres). It checks that executors ran on both workers (each worker's work dir holds an
``app-*/<executor id>/`` directory), that ``churn status --json`` has the session Postgres
demo's shape and AUC, and that the feature rows of ``marts.customer_features`` (floats to
1e-9), and the labels and training rows of each period, equal the Postgres demo's: Spark's
status and marts read in one short-lived process (one JVM for both; this one never starts a
JVM), Postgres's from the session demo's warehouse. The scorer's copy of the features on Spark is
loaded here, from the Parquet file the run exported (issue 26, item 3).

Each application gets one core (the master's ``spark.deploy.defaultCores=1``): a run holds
its SparkSession (an application) for the whole run while each dbt step is another
application, in a subprocess; an application that took every core of the cluster would leave
the dbt step waiting for executors forever (docs/spark-notes.md).

Teardown, whatever happened: the metastore service the demo started, the workers, the
master; then no process that carries this module's marker variable (every process it
started, and theirs, inherit it) or names its directory is left, else the module errors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from churn_assets.app.cli import main
from churn_assets.infra import metastore, spark
from churn_assets.ml import tracking
from churn_assets.schema import PERIOD_TABLES
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.model_store import DEFAULT_POLL_SECONDS
from churn_assets.serving.server import _load_feature_copy
from churn_assets.settings import PROJECT_ROOT, Settings, load_settings
from churn_assets.tables.engines import open_warehouse, stop_services

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.integration]

if not spark.java_available():
    pytest.skip(spark.JAVA_MISSING, allow_module_level=True)

# A command still running after this is stuck, not slow (the local[2] demo took 277-734 s
# depending on the load).
COMMAND_TIMEOUT_SECONDS = 45 * 60
CLUSTER_START_TIMEOUT_SECONDS = 180.0
# The cluster is the test's own scaffolding: a daemon still there after this gets SIGKILL
# (seen: 90 s of teardown at 30 s each in the full suite).
STOP_TIMEOUT_SECONDS = 10.0
WORKERS = 2
# Shuffle partitions of every session of the demo: the cluster's cores (the setting's
# default, Spark's 200, is for millions of rows; here each statement's fixed costs dominate).
SHUFFLE_PARTITIONS = "2"
# Every process the module starts, and every process those start, inherit it.
MARKER = "CHURN_CLUSTER_TEST_DIR"
# Variables of the developer's shell that would move the demo (the suite clears them from
# its own environment too, tests/conftest.py).
_OUTSIDE_ENV = ("DAGSTER_HOME", "DBT_TARGET", "MLFLOW_TRACKING_URI")
# Month ends far around the demo's history: rows_by_period returns those a table holds.
_CANDIDATE_PERIODS = [
    day.date().isoformat() for day in pd.date_range("2020-01-01", "2030-12-31", freq="ME")
]


@dataclass
class Cluster:
    directory: Path
    master_url: str
    web_url: str
    worker_dirs: list[Path]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """The master's JSON: workers, applications."""
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=10) as response:
            return dict(json.load(response))

    def logs(self, chars: int = 1500) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}"
            for path in sorted(self.directory.glob("*.log"))
        )


@dataclass(frozen=True)
class SparkDemo:
    settings: Settings
    cluster: Cluster
    demo_output: str
    demo_log: str
    status: dict[str, Any]
    service_after_demo: str | None
    tables: dict[str, pd.DataFrame]
    master_state: dict[str, Any]
    seconds: dict[str, float]


def _spark_class() -> Path:
    spec = importlib.util.find_spec("pyspark")  # its bin/, without importing it
    assert spec is not None and spec.origin is not None, "pyspark is not installed"
    return Path(spec.origin).parent / "bin" / "spark-class"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (held open together, so distinct)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def _daemon(
    cluster: Cluster, name: str, arguments: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``spark-class <arguments>`` (which execs its JVM) in a session of its own, its
    output in ``<name>.log``."""
    with (cluster.directory / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [str(_spark_class()), *arguments],
            env=env,
            cwd=cluster.directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster.processes.append(process)
    return process


def _start_cluster(cluster: Cluster, env: dict[str, str]) -> None:
    master_port, web_port, *worker_ports = _free_ports(2 + 2 * WORKERS)
    cluster.master_url = f"spark://127.0.0.1:{master_port}"
    cluster.web_url = f"http://127.0.0.1:{web_port}"
    master_env = env | {
        # One core per application: the run's session and a dbt step's run at once.
        "SPARK_MASTER_OPTS": "-Dspark.deploy.defaultCores=1",
    }
    _daemon(
        cluster,
        "master",
        [
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(master_port)),
            *("--webui-port", str(web_port)),
        ],
        master_env,
    )
    for number, worker_dir in enumerate(cluster.worker_dirs):
        port, web = worker_ports[2 * number : 2 * number + 2]
        worker_dir.mkdir()
        _daemon(
            cluster,
            f"worker{number + 1}",
            [
                "org.apache.spark.deploy.worker.Worker",
                *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(web)),
                *("--cores", "1", "--memory", "1g", "--work-dir", str(worker_dir)),
                cluster.master_url,
            ],
            env,
        )
    _wait_for_workers(cluster)


def _wait_for_workers(cluster: Cluster) -> None:
    """Until the master's JSON lists every worker ALIVE (each with its core)."""
    deadline = time.monotonic() + CLUSTER_START_TIMEOUT_SECONDS
    alive: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        exited = [p.args for p in cluster.processes if p.poll() is not None]
        assert not exited, f"a cluster daemon exited at start: {exited}\n{cluster.logs()}"
        with contextlib.suppress(OSError, ValueError):
            alive = [w for w in cluster.state()["workers"] if w["state"] == "ALIVE"]
            if len(alive) == WORKERS:
                assert all(worker["cores"] == 1 for worker in alive), alive
                return
        time.sleep(1)
    pytest.fail(
        f"{len(alive)} of {WORKERS} workers ALIVE after {CLUSTER_START_TIMEOUT_SECONDS:g} s\n"
        f"{cluster.logs()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the daemon's group (its JVM; a worker's executors are its children),
    SIGKILL if it is still there after ``STOP_TIMEOUT_SECONDS``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
            return


def _leftovers(directory: Path) -> dict[int, str]:
    """Processes (not this one) that carry the module's marker in their environment or
    name its directory on their command line: pid -> command line."""
    found: dict[int, str] = {}
    marker = f"{MARKER}={directory}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (marker in environ or str(directory).encode() in command):
            found[int(proc.name)] = command.decode(errors="replace")[:200]
    return found


def _churn(args: list[str], env: dict[str, str]) -> tuple[str, str, float]:
    """``churn <args>`` in a process of its own (and its group, killed at the timeout);
    returns its stdout, its stderr (the run's log) and how long it took. Fails unless it
    exited 0."""
    return _python(["-m", "churn_assets.app.cli", *args], env, f"churn {' '.join(args)}")


def _python(args: list[str], env: dict[str, str], what: str) -> tuple[str, str, float]:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{what} still ran after {COMMAND_TIMEOUT_SECONDS} s")
    assert process.returncode == 0, f"{what} failed:\n{stdout}\n{stderr[-5000:]}"
    return stdout, stderr, time.monotonic() - started


# Run in a process of its own with the demo's settings (a local session, through the
# metastore service the demo left running): `churn status --json` as a user runs it, then the
# marts through the warehouse interface in the same session (one JVM for both), pickled to
# argv[1] with the status's output; argv[2:] the candidate periods.
_READ_STATUS_AND_MARTS = """
import pickle, sys
from click.testing import CliRunner
from churn_assets.app.cli import main
from churn_assets.settings import load_settings
from churn_assets.tables.engines import open_warehouse
from churn_assets.schema import PERIOD_TABLES
from churn_assets.infra import spark
status = CliRunner().invoke(main, ["status", "--json"], catch_exceptions=False)
assert status.exit_code == 0, status.output
warehouse = open_warehouse(load_settings())
periods = sys.argv[2:]
tables = {table: warehouse.rows_by_period(table, periods) for table in PERIOD_TABLES}
held = [day for day in tables[PERIOD_TABLES[0]]["as_of"]]
tables["features"] = warehouse.read_period_features(held)
tables["sample"] = warehouse.read_training_snapshot(customer_share=0.5)
with open(sys.argv[1], "wb") as out:
    pickle.dump({"status": status.stdout, "tables": tables}, out)
spark.stop_jvm()
"""


def _read_marts(settings: Settings) -> dict[str, pd.DataFrame]:
    """The marts reads of ``_READ_STATUS_AND_MARTS``, in this process (Postgres)."""
    warehouse = open_warehouse(settings)
    tables = {table: warehouse.rows_by_period(table, _CANDIDATE_PERIODS) for table in PERIOD_TABLES}
    held = list(tables[PERIOD_TABLES[0]]["as_of"])
    tables["features"] = warehouse.read_period_features(held)
    tables["sample"] = warehouse.read_training_snapshot(customer_share=0.5)
    return tables


@pytest.fixture(scope="module")
def spark_demo(demo: tuple[Result, Path]) -> Iterator[SparkDemo]:
    """The cluster, the Spark demo on a fresh home under /tmp, its status and its marts.

    It asks for the session's Postgres demo first: every test here then joins that demo's
    xdist unit (tests/conftest.py), so the worker that runs the Postgres demo runs this
    module too, after it, and the two demos never compete for the machine's two cores.
    """
    assert demo[0].exit_code == 0, demo[0].output
    directory = Path(tempfile.mkdtemp(prefix="cc-", dir="/tmp"))  # short: Spark, Derby paths
    home = directory / "home"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CHURN_", "SPARK_")) and name not in _OUTSIDE_ENV
    }
    env |= {
        MARKER: str(directory),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "GX_ANALYTICS_ENABLED": "false",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    cluster = Cluster(
        directory=directory,
        master_url="",
        web_url="",
        worker_dirs=[directory / f"w{n + 1}" for n in range(WORKERS)],
    )
    settings: Settings | None = None
    try:
        started = time.monotonic()
        _start_cluster(cluster, env)
        cluster_seconds = time.monotonic() - started
        env |= {
            "CHURN_HOME": str(home),
            "CHURN_ENGINE": "spark",
            "CHURN_SPARK_MASTER": cluster.master_url,
            "CHURN_SPARK_SHUFFLE_PARTITIONS": SHUFFLE_PARTITIONS,
        }
        settings = load_settings(env)
        demo_output, demo_log, demo_seconds = _churn(["demo"], env)
        service = metastore.running_url(Path(settings.spark_metastore))
        read_file = directory / "status-and-marts.pickle"
        _, _, read_seconds = _python(
            ["-c", _READ_STATUS_AND_MARTS, str(read_file), *_CANDIDATE_PERIODS],
            env | {"CHURN_SPARK_MASTER": "local[1]"},
            "churn status --json and the Spark marts",
        )
        read = pd.read_pickle(read_file)
        status_output, tables = read["status"], read["tables"]
        yield SparkDemo(
            settings=settings,
            cluster=cluster,
            demo_output=demo_output,
            demo_log=demo_log,
            status=json.loads(status_output),
            service_after_demo=service,
            tables=tables,
            master_state=cluster.state(),
            seconds={
                "cluster start": cluster_seconds,
                "demo": demo_seconds,
                "status and marts read": read_seconds,
            },
        )
    finally:
        if settings is not None:
            stop_services(settings)  # the metastore service the demo started
        for process in reversed(cluster.processes):  # workers (and executors), then master
            _stop(process)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while (left := _leftovers(directory)) and time.monotonic() < deadline:
            time.sleep(1)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
        assert not left, f"processes of the cluster test still ran (killed): {left}"


def _shape(value: Any) -> Any:
    """The keys of a JSON value, all the way down (a list: the shapes of its items)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(_shape(item), sort_keys=True) for item in value})
    return None


def test_the_cluster_demo_ends_with_a_champion_and_scores(spark_demo: SparkDemo) -> None:
    output = spark_demo.demo_output
    print(f"Spark cluster demo: {spark_demo.seconds}")  # seconds of each step, with pytest -s
    assert "succeeded" in output
    # the run held the Spark write lock (the file lock beside the metastore) throughout
    assert "holding the warehouse write lock until this run ends" in spark_demo.demo_log
    assert "champion:  version 1" in output
    assert "customers scored by champion v1" in output
    # the analyst tables but the one over the prediction log (Postgres only) were built
    assert "analytics.churn_risk_by_segment in the Spark catalog" in output


def test_executors_ran_on_both_workers(spark_demo: SparkDemo) -> None:
    # a worker makes app-<id>/<executor id>/ in its work dir for each executor it starts
    for worker_dir in spark_demo.cluster.worker_dirs:
        executors = [p for p in worker_dir.glob("app-*/*") if p.is_dir() and p.name.isdigit()]
        assert executors, f"no executor ran on the worker of {worker_dir}"
    # and the master ran the demo's applications: the run's session, one per dbt step
    applications = spark_demo.master_state["completedapps"]
    assert {"churn", "churn-dbt"} <= {app["name"] for app in applications}


def test_the_metastore_service_outlives_the_demo_and_stops_with_warehouse_stop(
    spark_demo: SparkDemo,
) -> None:
    # `churn status` (another process) read the catalog through the same service
    directory = Path(spark_demo.settings.spark_metastore)
    assert spark_demo.service_after_demo is not None
    assert metastore.running_url(directory) == spark_demo.service_after_demo
    assert stop_services(spark_demo.settings) == [f"the Hive metastore service over {directory}"]
    assert metastore.running_url(directory) is None


def test_spark_status_has_the_postgres_demos_shape_and_auc(spark_demo: SparkDemo) -> None:
    # the session demo's status, read in this process (its CHURN_HOME is the session's)
    result = CliRunner().invoke(main, ["status", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    on_postgres, on_spark = json.loads(result.output), spark_demo.status
    # The shadow's pairs come from the prediction log, which stays on Postgres: none on
    # Spark, and on the session's home whatever the serving tests of the unit logged.
    assert on_spark["shadow"]["pairs"] == []
    for status in (on_postgres, on_spark):
        status["shadow"]["pairs"] = []
    assert _shape(on_spark) == _shape(on_postgres)
    # Version 1 of the session's registry is the Postgres demo's model: the unit's other
    # tests register and promote later versions there, never change that one.
    the_demos = tracking.describe_version(load_settings().resolved_tracking_uri, "1")
    for model in ("champion", "latest_model"):
        assert on_spark[model]["version"] == "1"
        assert on_spark[model]["metrics"]["auc"] == pytest.approx(
            the_demos["metrics"]["auc"], abs=1e-9
        )


def _numeric_label_rate(frame: pd.DataFrame) -> pd.DataFrame:
    """``rows_by_period``'s frame with its label rate as floats (the features have none:
    None on one engine, NaN on the other), indexed from 0."""
    return frame.assign(label_rate=frame["label_rate"].astype(float)).reset_index(drop=True)


@pytest.fixture(scope="module")
def on_postgres(demo: tuple[Result, Path], churn_home: Path) -> dict[str, pd.DataFrame]:
    """The session Postgres demo's marts: its home's embedded warehouse."""
    assert demo[0].exit_code == 0, demo[0].output
    return _read_marts(load_settings({"CHURN_HOME": str(churn_home)}))


def test_the_cluster_built_the_postgres_demos_features_labels_and_training_rows(
    spark_demo: SparkDemo, on_postgres: dict[str, pd.DataFrame]
) -> None:
    on_spark = spark_demo.tables
    features = on_postgres["features"]
    assert len(features) > 0 and features["as_of"].nunique() > 12  # every period, not none
    pd.testing.assert_frame_equal(on_spark["features"], features, rtol=0, atol=1e-9)
    # rows (and label rate) of each period of the features, the labels, the training snapshot
    for table in PERIOD_TABLES:
        expected = on_postgres[table]
        assert len(expected) > 0, table
        pd.testing.assert_frame_equal(
            _numeric_label_rate(on_spark[table]),
            _numeric_label_rate(expected),
            check_dtype=False,
            rtol=0,
            atol=1e-9,
            obj=table,
        )


def test_both_warehouses_hand_training_the_same_sample(
    spark_demo: SparkDemo, on_postgres: dict[str, pd.DataFrame]
) -> None:
    # what training reads through the interface: columns, order, dtypes and the md5 sample
    expected, actual = on_postgres["sample"], spark_demo.tables["sample"]
    assert 0 < len(expected) < len(spark_demo.tables["features"])
    pd.testing.assert_frame_equal(actual, expected, rtol=0, atol=1e-9)


def test_the_scorers_copy_on_spark_is_the_runs_export_of_the_postgres_demos_customers(
    spark_demo: SparkDemo, churn_home: Path
) -> None:
    # Item 3: `churn serve` on Spark loads its copy of the features from the file the run's
    # current_features_export wrote, with pyarrow in this process (which starts no JVM).
    source = _load_feature_copy(spark_demo.settings, DEFAULT_POLL_SECONDS, ServingMetrics())
    try:
        state = source.state()
        postgres = open_warehouse(load_settings({"CHURN_HOME": str(churn_home)}))
        current = postgres.read_current_features()
        assert state.table == str(spark_demo.settings.online_features_path)
        assert state.rows == len(current) > 0
        assert state.as_of == max(current["as_of"])
        row = source.get(current["customer_id"].iloc[0])
        assert row is not None and row["as_of"] == state.as_of
    finally:
        source.close()
