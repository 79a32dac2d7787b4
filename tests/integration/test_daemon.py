"""The drift story under a real `dagster-daemon`: nobody launches a run.

A fresh CHURN_HOME, the daemon started with a 2-second sensor interval, then two of the
monthly feed's deliveries (atomically renamed into CHURN_RAW_DIR): the orders to
2025-12-31, then to the story's end three months later. The raw files sensor, the
automation conditions (the new periods' backfill among them), the retraining and promotion
sensors do the rest, and it ends with a retrained champion and the first champion's scores
judged against the labels that matured meanwhile.

Two deliveries, not every month: each delivery costs ~12 runs, each a process of its own
under the daemon (~2.5 min a month alone, ~4 beside the other xdist worker), and a month
adds nothing the daemon does differently. The month-by-month story is
``test_drift_story.py``'s, in process, with the same definitions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
from click.testing import CliRunner
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import BACKFILL_ID_TAG, SENSOR_NAME_TAG

from churn_assets import warehouse
from churn_assets.cli import main
from churn_assets.data.generator import generate
from churn_assets.data.loader import file_sha256
from churn_assets.data.scenarios import MONTHLY_STORY, story_month_ends, write_month
from churn_assets.defs.monitoring.sensors import retrain_on_drift_sensor
from churn_assets.settings import PROJECT_ROOT, load_settings
from churn_assets.story import deliver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST_MONTH = date(2025, 12, 31)  # the first model's data; its scores mature by LAST_MONTH
LAST_MONTH = story_month_ends(first=FIRST_MONTH)[-1]
# Catches a hang, not slowness: a delivery takes ~2-3 min alone, and twice that or more when
# the other xdist worker (or anything else) holds the second core.
MONTH_TIMEOUT_SECONDS = 900
QUIET_SECONDS = 15  # nothing active or created for this long: the platform has settled
# `dagster-daemon`, with the backfill daemon's loop every BACKFILL_INTERVAL_SECONDS instead of
# Dagster's fixed 30 (not configurable; the loop reads the constant at its start). The
# automation turns each delivery's new periods into a backfill, which then waited up to 30 s
# to submit its run and as long again to complete: the sensors' 2-second interval, applied to
# the backfill daemon too. Everything else is the real daemon's.
BACKFILL_INTERVAL_SECONDS = 5
_FAST_BACKFILL_DAEMON = f"""
import sys
import dagster._daemon.controller as controller
from dagster._daemon.cli import main

controller.DEFAULT_DAEMON_INTERVAL_SECONDS = {BACKFILL_INTERVAL_SECONDS}
sys.argv[0] = "dagster-daemon"
sys.exit(main())
"""
ACTIVE = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


@pytest.fixture
def daemon_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="dmn", dir="/tmp"))  # short: the PG socket path
    feed = home / "feed"
    monkeypatch.setenv("CHURN_HOME", str(home))
    monkeypatch.setenv("CHURN_RAW_DIR", str(feed))
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    settings = load_settings()
    url = warehouse.start_embedded(settings.embedded_pg_dir)
    dagster_home = settings.dagster_home
    dagster_home.mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    # Create the instance's SQLite storage before the daemon starts: two processes creating
    # it at once can leave two alembic heads, and the daemon then never starts.
    with dg.DagsterInstance.from_config(str(dagster_home)):
        pass
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "CHURN_SENSOR_INTERVAL_SECONDS": "2",
        "CHURN_RETRAIN_COOLDOWN_SECONDS": "0",
    }
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-c", _FAST_BACKFILL_DAEMON, "run", "-w",
             str(PROJECT_ROOT / "workspace.yaml")],
            cwd=dagster_home, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield {"feed": feed, "dagster_home": dagster_home, "log": log, "url": url}
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        warehouse.stop_embedded(settings.embedded_pg_dir)
        shutil.rmtree(home, ignore_errors=True)


def _wait(predicate: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + MONTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}; daemon log:\n{log.read_text()[-6000:]}")


def _loaded_orders_sha(instance: dg.DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(dg.AssetKey("raw_orders"))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("source_sha256")
    return str(getattr(value, "value", value))


def _settled(instance: dg.DagsterInstance, state: dict[str, float]) -> bool:
    """No run active or created, and no backfill waiting to submit one, for QUIET_SECONDS."""
    records = instance.get_run_records(limit=1)
    newest = records[0].create_timestamp.timestamp() if records else 0.0
    busy = instance.get_runs(filters=dg.RunsFilter(statuses=list(ACTIVE)), limit=1) or (
        instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=1)
    )
    now = time.monotonic()
    if busy or newest != state.get("newest"):
        state.update(newest=newest, quiet_since=now)
        return False
    return now - state["quiet_since"] >= QUIET_SECONDS


def test_the_daemon_lives_through_the_months_and_promotes_a_retrained_version(
    daemon_home: dict[str, Any],
) -> None:
    data = generate(MONTHLY_STORY)
    feed: Path = daemon_home["feed"]
    log: Path = daemon_home["log"]
    with dg.DagsterInstance.from_config(str(daemon_home["dagster_home"])) as instance:
        for month_end in (FIRST_MONTH, LAST_MONTH):
            with tempfile.TemporaryDirectory(dir=feed.parent) as staging:
                deliver(write_month(data, month_end, Path(staging)), feed)
            orders_sha = file_sha256(next(feed.glob("orders.*")))
            _wait(
                lambda: _loaded_orders_sha(instance) == orders_sha,  # noqa: B023
                f"the load of the {month_end} files",
                log,
            )
            state: dict[str, float] = {}
            _wait(lambda: _settled(instance, state), f"quiet after {month_end}", log)  # noqa: B023
        runs = instance.get_runs()
    failed = [(r.job_name, r.run_id) for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
    assert not failed, f"failed runs {failed}; daemon log:\n{log.read_text()[-4000:]}"
    # nobody launched anything: every run came from a sensor, the automation or its backfill
    by_hand = [
        (run.job_name, dict(run.tags))
        for run in runs
        if not (run.tags.get(SENSOR_NAME_TAG) or run.tags.get(BACKFILL_ID_TAG))
    ]
    assert not by_hand, by_hand
    retrained = [r for r in runs if r.tags.get(SENSOR_NAME_TAG) == retrain_on_drift_sensor.name]
    assert retrained, "the second delivery's drift launched no retraining"

    status = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    champion = status["champion"]
    assert int(champion["version"]) >= 2, json.dumps(status, indent=1)[:3000]
    assert champion["promotion"]["decision"] == "promoted"
    assert status["realized"]
    with psycopg2.connect(daemon_home["url"]) as conn, conn.cursor() as cur:
        cur.execute("select distinct model_version from scoring.churn_scores")
        assert [row[0] for row in cur.fetchall()] == [champion["version"]]
