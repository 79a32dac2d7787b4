"""The production topology, for real: separate processes talking over gRPC, HTTP and Postgres.

Brings up Postgres (warehouse, dagster and mlflow databases), `mlflow server`, the Dagster
code server, webserver and daemon (instance from docker/dagster.yaml), launches the full
graph through the webserver's GraphQL API (one run, promotion decision included), waits
for it, checks where each piece of state landed, starts the scorer and asks it which model
it serves. Then tears everything down.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from churn_assets.data.generator import generate, write_raw_files
from churn_assets.defs.partitions import periods_in_files
from churn_assets.infra import stack as churn_stack
from churn_assets.lib.runs import period_range_tags
from churn_assets.periods import Period
from tests.conftest import LIGHT_TRAINING_ENV, PLUMBING_DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # every process, a whole run

TIMEOUT_SECONDS = 420
LAUNCH = """
mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }
"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
SENSOR_RUNS = (
    "query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) "
    "{ ... on Runs { results { jobName status } } } }"
)
PARTITIONS = (
    "query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) "
    "{ ... on AssetNode { partitionKeys } } }"
)
# What the UI's asset page and Automation tab show: each asset's condition.
CONDITIONS = "{ assetNodes { assetKey { path } automationCondition { label } } }"


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        json.dumps({"query": query, "variables": variables}).encode(),
        {"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:  # say what the webserver said, not just "500"
        raise AssertionError(f"{exc}: {exc.read().decode(errors='replace')[:3000]}") from exc


def _wait(predicate, what: str, timeout: float = TIMEOUT_SECONDS):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)  # one GraphQL or registry request: cheap to ask often
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[churn_stack.Stack]:
    root = tmp_path_factory.mktemp("stack")
    # A delivery is waiting when the platform starts: the daemon's raw_files_sensor loads
    # it at its first tick. (Written after, it raced that tick, and the test's own load
    # then ran twice, queued beside the sensor's for the two run slots.)
    write_raw_files(generate(PLUMBING_DATA), root / "raw")
    # The stack's processes take the environment they start with: the delivery, and a
    # light training (what is tested is where each piece runs and lands, not the model).
    # The sensors tick at production's interval: the test waits for one tick of one
    # sensor, and ticks every 2 s kept the daemon and the code server busy on two cores
    # the run needs.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHURN_RAW_DIR", str(root / "raw"))
        for name, value in LIGHT_TRAINING_ENV.items():
            mp.setenv(name, value)
        started = churn_stack.up(root, scorer=False)
    try:
        yield started
    finally:
        churn_stack.down(root)


def test_stack_runs_the_graph_and_serves_the_champion(running: churn_stack.Stack) -> None:
    def launch(job: str, tags: dict[str, str]) -> str:
        launched = _graphql(
            running.webserver_url,
            LAUNCH,
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": "churn_assets",
                        "repositoryName": "__repository__",
                        "jobName": job,
                    },
                    "runConfigData": {},
                    "executionMetadata": {
                        "tags": [{"key": k, "value": v} for k, v in tags.items()]
                    },
                }
            },
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id: str = launched["run"]["runId"]

        def finished() -> str | None:
            status = _graphql(running.webserver_url, STATUS, {"id": run_id})["runOrError"]
            return status["status"] if status["status"] in ("SUCCESS", "FAILURE") else None

        assert _wait(finished, f"run {run_id}") == "SUCCESS", (running.root / "logs").as_posix()
        return run_id

    # A fresh instance knows no periods: loading the files registers them (the sensor's
    # run of ingest_job, launched by the daemon through the code server), then every
    # period is built in one run launched here.
    def loaded() -> str | None:
        tags = [{"key": "dagster/sensor_name", "value": "raw_files_sensor"}]
        runs = _graphql(running.webserver_url, SENSOR_RUNS, {"tags": tags})["runsOrError"]
        statuses = [run["status"] for run in runs["results"] if run["jobName"] == "ingest_job"]
        return next((s for s in statuses if s in ("SUCCESS", "FAILURE")), None)

    assert _wait(loaded, "the raw_files_sensor's load") == "SUCCESS", running.root / "logs"
    keys = periods_in_files(running.root / "raw", Period.MONTH) or []

    def registered() -> bool:
        node = _graphql(running.webserver_url, PARTITIONS, {"key": {"path": ["customer_features"]}})
        return set(keys) <= set(node["assetNodeOrError"].get("partitionKeys") or [])

    _wait(registered, "the periods to show in the webserver", timeout=60)  # as a user sees them
    conditions = {
        "/".join(node["assetKey"]["path"]): (node["automationCondition"] or {}).get("label")
        for node in _graphql(running.webserver_url, CONDITIONS, {})["assetNodes"]
    }
    assert conditions["churn_scores"] == "eager, unless an upstream gate failed"
    assert conditions["customer_features"].startswith("the periods the last load can have changed")
    assert conditions["raw_orders"] is None  # loaded by raw_files_sensor, not a condition
    run_id = launch("churn_pipeline", period_range_tags(keys))

    # Run history is in the Postgres `dagster` database, not in files.
    dagster_db = running.warehouse_url.replace("/warehouse?", "/dagster?")
    with psycopg2.connect(dagster_db) as conn, conn.cursor() as cur:
        cur.execute("select status from runs where run_id = %s", (run_id,))
        assert cur.fetchone() == ("SUCCESS",)
    # The features are in the warehouse database.
    with psycopg2.connect(running.warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from marts.training_snapshot")
        assert cur.fetchone()[0] > 800
    # The model is in the MLflow server's registry, with its artifacts served by it.
    client = MlflowClient(running.mlflow_url)
    version = client.get_model_version("churn-model", "1")
    assert json.loads(version.tags["gates"])  # gated before it was registered

    # The run's own promotion decision made it champion (the daemon's promotion sensor
    # finds it decided and asks for nothing).
    def champion() -> str | None:
        try:
            return str(client.get_model_version_by_alias("churn-model", "champion").version)
        except Exception:
            return None

    assert _wait(champion, "the champion alias", timeout=120) == "1"

    scorer_url = churn_stack.start_scorer(running)
    with urllib.request.urlopen(f"{scorer_url}/model", timeout=10) as response:
        served = json.load(response)
    assert str(served["version"]) == "1"
    assert served["sha256"] == version.tags["onnx_sha256"]
