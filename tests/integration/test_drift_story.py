"""`churn demo --scenario drift` under a real `dagster-daemon`: a monthly feed whose customers
change how they churn, and nobody launches a run. The daemon's raw-files sensor loads each
delivery, its automation conditions and backfills build the periods, scores and drift
monitor, the retraining sensor retrains when a check fails, the promotion sensor decides in
a run, and the current period is re-scored with the new champion.

Two deliveries (to 2025-12-31, then to 2026-03-31): the shortest story that still trains,
drifts, retrains, promotes and judges the first champion's scores once their labels mature;
the months between add only more of the same. The story's home also serves the test of
realized performance (the first champion's December scores, matured by March)."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from click.testing import CliRunner, Result
from mlflow.tracking import MlflowClient

from churn_assets.app.cli import main
from churn_assets.infra import warehouse
from churn_assets.settings import load_settings
from tests.conftest import LIGHT_TRAINING_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DECEMBER, MARCH = "2025-12-31", "2026-03-31"


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Result, Path]]:
    """A separate CHURN_HOME (its own embedded Postgres, MLflow store and Dagster instance)."""
    home = tmp_path_factory.mktemp("drift")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHURN_HOME", str(home))
        mp.delenv("CHURN_RAW_DIR", raising=False)
        mp.setenv("GX_ANALYTICS_ENABLED", "false")
        for name, value in LIGHT_TRAINING_ENV.items():
            mp.setenv(name, value)
        result = CliRunner().invoke(
            main,
            ["demo", "--scenario", "drift", *("--deliver", DECEMBER, "--deliver", MARCH)],
            catch_exceptions=False,
        )
        yield result, home
    warehouse.stop_embedded(home / "pg")


@pytest.fixture
def home(story: tuple[Result, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    result, home = story
    log = home / "scenario" / "daemon.log"
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    assert result.exit_code == 0, f"{result.output}\ndaemon log:\n{tail}"
    monkeypatch.setenv("CHURN_HOME", str(home))
    return home


def test_the_story_ends_with_a_retrained_version_promoted_and_serving(home: Path) -> None:
    status = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    champion = status["champion"]
    assert int(champion["version"]) >= 2, json.dumps(status, indent=1)[:3000]
    assert champion["promotion"]["decision"] == "promoted"
    assert status["realized"], "no realized performance although labels matured"
    url = warehouse.start_embedded(load_settings().embedded_pg_dir)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select model_version, count(*) from scoring.churn_scores group by 1")
        versions = dict(cur.fetchall())
    assert set(versions) == {champion["version"]}  # the current period, by the champion


def test_the_rollout_history_lists_every_champion_with_its_start_and_reason(
    story: tuple[Result, Path], home: Path
) -> None:
    history = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)["champion_history"]
    status_champion = history[-1]["version"]
    # the summary's decisions (`<month>: promotion: vN promoted: ...`), in the story's order
    promoted = re.findall(r"^\S+: promotion: v(\d+) promoted", story[0].output, re.MULTILINE)
    assert [reign["version"] for reign in history] == promoted
    assert history[0]["replaced"] is None and len(history) >= 2
    for before, after in itertools.pairwise(history):
        assert before["until"] == after["since"] and after["replaced"] == before["version"]
    assert all(reign["since"] and reign["reason"] for reign in history)
    assert history[-1]["until"] is None
    assert status_champion == _champion_alias()


def _champion_alias() -> str:
    version = MlflowClient(load_settings().resolved_tracking_uri).get_model_version_by_alias(
        "churn-model", "champion"
    )
    return str(version.version)


def test_every_run_was_asked_for_by_the_daemon_and_printed_as_it_finished(
    story: tuple[Result, Path], home: Path
) -> None:
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        runs = instance.get_runs()
    failed = [
        (run.job_name, run.run_id) for run in runs if run.status != dg.DagsterRunStatus.SUCCESS
    ]
    assert not failed
    launched_by = {
        run.tags.get("dagster/sensor_name")
        or ("backfill" if "dagster/backfill" in run.tags else None)
        for run in runs
    }
    assert None not in launched_by  # nobody launched a run by hand
    assert {
        "raw_files_sensor",
        "churn_automation",
        "retrain_on_drift_sensor",
        "champion_promotion_sensor",
    } <= launched_by
    printed = [line for line in story[0].output.splitlines() if line.startswith("  -> ")]
    assert len(printed) == len(runs)


def test_the_summary_names_the_deliveries_and_the_promotion(
    story: tuple[Result, Path], home: Path
) -> None:
    output = story[0].output
    deliveries = [line for line in output.splitlines() if line.startswith("== the feed")]
    assert deliveries == [
        f"== the feed delivers the orders to {DECEMBER}",
        f"== the feed delivers the orders to {MARCH}",
    ]
    assert "2 deliveries" in output and "none launched by hand" in output
    promoted = [line for line in output.splitlines() if " promoted: " in line]
    assert any(f"v{n} promoted" in line for line in promoted for n in range(2, 20)), output


def test_the_daemon_and_every_process_it_started_are_gone(story: tuple[Result, Path]) -> None:
    (pid,) = re.findall(r"dagster-daemon \(pid (\d+)\) stopped", story[0].output)
    with pytest.raises(ProcessLookupError):
        os.killpg(int(pid), 0)  # its process group: the code server and run workers too


# Last in the module: it rewrites the story's scores and champion alias.
def test_matured_scores_are_judged_and_a_shuffled_ranking_fails_the_check(home: Path) -> None:
    status = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    # December's labels matured by March; March's window is still open.
    assert {row["as_of"] for row in status["realized"]} == {DECEMBER}
    (judged,) = status["realized"]
    version = str(judged["model_version"])
    url = warehouse.start_embedded(load_settings().embedded_pg_dir)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        # What realized performance may count: scores by a model whose data ended on or
        # before the period (a model trained later would have seen the period's outcome).
        cur.execute(
            "select count(*) from scoring.churn_scores_history where feature_as_of = %s "
            "and model_version = %s and model_data_through <= feature_as_of",
            (DECEMBER, version),
        )
        assert judged["rows"] == cur.fetchone()[0] > 0
    assert 0.5 < judged["auc"] <= 1.0 and 0.0 <= judged["brier"] <= 1.0

    # The same scores shuffled across customers: the ranking is gone, the check fails.
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            """
            with period as (
                select customer_id, churn_probability,
                       row_number() over (order by md5(customer_id)) as position,
                       count(*) over () as n
                from scoring.churn_scores_history
                where feature_as_of = %s and model_version = %s
            ),
            shuffled as (  -- each customer gets the score of the one 7 places on
                select period.customer_id, moved.churn_probability as p
                from period
                inner join period as moved
                    on moved.position = (period.position + 6) %% period.n + 1
            )
            update scoring.churn_scores_history as h
            set churn_probability = shuffled.p
            from shuffled
            where h.customer_id = shuffled.customer_id
                and h.feature_as_of = %s and h.model_version = %s
            """,
            (DECEMBER, version, DECEMBER, version),
        )
    # The check judges the version serving now: make it the one whose scores were shuffled.
    MlflowClient(load_settings().resolved_tracking_uri).set_registered_model_alias(
        "churn-model", "champion", version
    )
    check = _realized_check()
    assert not check.passed
    assert f"v{version} at {DECEMBER}" in (check.description or "")
    assert "CHURN_REALIZED_AUC_TOLERANCE" in (check.description or "")


def _realized_check() -> dg.AssetCheckEvaluation:
    from churn_assets.defs.resources import mlflow_resource, policy_resource, warehouse_resource
    from churn_assets.defs.scoring.assets import realized_performance, realized_performance_check

    result = dg.materialize(
        [realized_performance, realized_performance_check],
        resources={
            "warehouse": warehouse_resource(),
            "mlflow": mlflow_resource(),
            "policy": policy_resource(),
        },
        raise_on_error=False,
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation
