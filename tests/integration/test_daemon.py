"""The platform running itself: a real dagster-daemon launches retraining, then promotes.

Nobody launches a run here. The test records a failed drift gate in a fresh instance (as a
monitoring run would), starts `dagster-daemon run` with a 2-second sensor interval, and
waits for the retraining sensor's run to finish and the promotion sensor to decide the
version it registered.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from click.testing import Result
from mlflow.tracking import MlflowClient

from churn_assets.defs.monitoring.sensors import DRIFT_GATE
from churn_assets.ml import tracking
from churn_assets.ml.champion import TAG_DECISION
from churn_assets.settings import PROJECT_ROOT, load_settings

pytestmark = pytest.mark.integration

TIMEOUT_SECONDS = 300


def _wait_for(predicate, what: str, log: Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}; daemon log:\n{log.read_text()[-4000:]}")


def test_daemon_retrains_on_drift_and_promotes_without_manual_action(
    demo: tuple[Result, Path], tmp_path: Path
) -> None:
    _, raw_dir = demo
    settings = load_settings()
    client = MlflowClient(settings.resolved_tracking_uri)
    versions_before = int(tracking.latest_version(settings.resolved_tracking_uri) or 0)

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=DRIFT_GATE.asset_key,
                check_name=DRIFT_GATE.name,
                passed=False,
                metadata={"drift_share": 0.5, "threshold": 0.3},
            )
        )

    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "CHURN_RAW_DIR": str(raw_dir),
        "CHURN_SENSOR_INTERVAL_SECONDS": "2",
        "CHURN_RETRAIN_COOLDOWN_SECONDS": "0",
    }
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [
                shutil.which("dagster-daemon") or "dagster-daemon",
                "run",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
            ],
            cwd=dagster_home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:

            def finished_drift_run() -> dg.DagsterRun | None:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"churn/trigger": "drift"}))
                done = [
                    r
                    for r in runs
                    if r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
                ]
                return done[0] if done else None

            run = _wait_for(finished_drift_run, "the drift-triggered run", log)
            assert run.job_name == "training_job"
            assert run.tags["dagster/sensor_name"] == "retrain_on_drift_sensor"
            assert run.status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-4000:]

        new_version = str(versions_before + 1)

        def decided() -> bool:
            try:
                version = client.get_model_version("churn-model", new_version)
            except Exception:
                return False
            return TAG_DECISION in version.tags

        _wait_for(decided, f"the promotion decision on v{new_version}", log)
        version = client.get_model_version("churn-model", new_version)
        champion = tracking.alias_version(settings.resolved_tracking_uri, "champion")
        promoted = version.tags[TAG_DECISION] == "promoted"
        assert (champion == new_version) is promoted
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
