"""The platform in time: period partitions, idempotent re-materialisation, realized
performance once labels mature (issue 12)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from mlflow.tracking import MlflowClient

from churn_assets import warehouse
from churn_assets.cli import main
from churn_assets.data.generator import GeneratorConfig, generate
from churn_assets.schema import PERIOD_TABLES
from churn_assets.settings import load_settings

pytestmark = pytest.mark.integration


def _checksums(url: str) -> dict[tuple[str, str], str]:
    """md5 of every period's rows, per per-period table (order-independent of storage)."""
    sums: dict[tuple[str, str], str] = {}
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        for table in PERIOD_TABLES:
            cur.execute(
                f"select as_of::text, md5(string_agg(t::text, '|' order by t.customer_id)) "
                f"from {table} as t group by as_of"
            )
            sums.update({(table, as_of): digest for as_of, digest in cur.fetchall()})
    return sums


def test_the_demo_builds_every_period_once_per_customer(
    demo: tuple[Result, Path], embedded_url: str
) -> None:
    assert demo[0].exit_code == 0, demo[0].output
    with warehouse.connect(embedded_url) as conn, conn.cursor() as cur:
        cur.execute("select count(distinct as_of), count(*) from marts.customer_features")
        periods, rows = cur.fetchone()
        cur.execute(
            "select count(*) from "
            "(select distinct as_of, customer_id from marts.customer_features) as keys"
        )
        distinct_rows = cur.fetchone()[0]
        cur.execute(
            "select max(as_of) = (select max(as_of) from marts.customer_features) "
            "from marts.current_features"
        )
        current_is_newest = cur.fetchone()[0]
        cur.execute("select distinct feature_as_of from scoring.churn_scores")
        scored_periods = [row[0] for row in cur.fetchall()]
    assert periods >= 12
    assert rows == distinct_rows  # each (as_of, customer_id) once
    assert current_is_newest
    assert scored_periods == [date(2025, 11, 30)]  # the current period (Dec. is incomplete)


def test_rematerialising_one_period_changes_no_row_anywhere(
    demo: tuple[Result, Path], embedded_url: str
) -> None:
    from churn_assets.definitions import defs
    from churn_assets.defs.partitions import registered_periods
    from churn_assets.lib.runs import run_job
    from churn_assets.settings import load_settings

    before = _checksums(embedded_url)
    settings = load_settings()
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        keys = registered_periods(instance)
        past = keys[len(keys) // 2]  # a labelled period in the middle of the history
        result = run_job(defs(), instance, "history_job", partition_key=past)
        assert result.success
        materialized = instance.get_materialized_partitions(
            __import__("dagster").AssetKey("customer_features")
        )
    after = _checksums(embedded_url)
    assert past in materialized
    assert ("marts.training_snapshot", past) in before  # it has labels: all three tables checked
    assert after == before  # its own rows and every other period's rows identical


def _cut(full: tuple[pd.DataFrame, pd.DataFrame], through: date, raw_dir: Path) -> Path:
    """The generated history as it looked on ``through``: orders up to that day."""
    customers, orders = full
    kept = orders[orders["ordered_at"].dt.date <= through]
    signed_up = customers["signup_at"].isna() | (customers["signup_at"].dt.date <= through)
    known = customers[signed_up | customers["customer_id"].isin(kept["customer_id"])]
    raw_dir.mkdir(parents=True)
    known.to_parquet(raw_dir / "customers.parquet", index=False)
    kept.to_parquet(raw_dir / "orders.parquet", index=False)
    return raw_dir


@pytest.mark.slow
def test_scores_are_judged_once_their_labels_mature(
    tmp_path: Path, fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A home of its own (Dagster instance, MLflow) on a fresh database.
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", fresh_database_url)
    data = generate(GeneratorConfig(n_customers=800, seed=3))
    full = (data.customers, data.orders)
    runner = CliRunner()

    def run_through(day: date) -> Result:
        monkeypatch.setenv("CHURN_RAW_DIR", str(_cut(full, day, tmp_path / day.isoformat())))
        result = runner.invoke(main, ["run"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    scored_at = date(2025, 6, 30)
    run_through(scored_at)  # trains v1 on data through June, then scores June with it
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        # What realized performance may count: scores by a model whose data ended on or
        # before the period (a model trained later would have seen the period's outcome).
        cur.execute(
            "select model_version, count(*) from scoring.churn_scores_history "
            "where feature_as_of = %s and model_data_through <= %s group by model_version",
            (scored_at, scored_at),
        )
        (version, scored), *others = cur.fetchall()
    assert not others
    status = json.loads(runner.invoke(main, ["status", "--json"]).output)
    assert status["realized"] == []  # June's label window has not closed yet

    run_through(date(2025, 12, 31))  # past June + the window: its labels have matured
    status = json.loads(runner.invoke(main, ["status", "--json"]).output)
    june = [r for r in status["realized"] if r["as_of"] == scored_at.isoformat()]
    assert [(r["model_version"], r["rows"]) for r in june] == [(version, scored)]
    assert 0.5 < june[0]["auc"] <= 1.0 and 0.0 <= june[0]["brier"] <= 1.0
    # Nothing but June has matured labels and scores (December's window is still open).
    assert {r["as_of"] for r in status["realized"]} == {scored_at.isoformat()}

    # The same scores shuffled across customers: the ranking is gone, the check fails.
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
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
            (scored_at, version, scored_at, version),
        )
        conn.commit()
    # The check judges the version serving now: make it the one whose scores were shuffled.
    MlflowClient(load_settings().resolved_tracking_uri).set_registered_model_alias(
        "churn-model", "champion", str(version)
    )
    check = _realized_check()
    assert not check.passed
    assert f"v{version} at {scored_at.isoformat()}" in (check.description or "")
    assert "CHURN_REALIZED_AUC_TOLERANCE" in (check.description or "")


def _realized_check():  # type: ignore[no-untyped-def]
    import dagster as dg

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


def test_backfill_builds_a_range_of_periods_in_one_run(
    demo: tuple[Result, Path], embedded_url: str
) -> None:
    import dagster as dg

    from churn_assets.settings import load_settings

    before = _checksums(embedded_url)
    result = CliRunner().invoke(
        main, ["backfill", "--from", "2025-03-01", "--to", "2025-06-30"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "backfill: 4 period(s) 2025-03-31 .. 2025-06-30 in one run" in result.output
    assert "features:  4 period(s)" in result.output
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        (run,) = instance.get_runs(limit=1)
        assert run.job_name == "history_job"
        assert run.tags["dagster/asset_partition_range_start"] == "2025-03-31"
        assert run.tags["dagster/asset_partition_range_end"] == "2025-06-30"
        built = {
            record.partition_key
            for record in instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey("training_snapshot"),
                    storage_ids=None,
                ),
                limit=100,
            ).records
            if record.run_id == run.run_id
        }
    assert built == {"2025-03-31", "2025-04-30", "2025-05-31", "2025-06-30"}
    assert _checksums(embedded_url) == before  # same raw data: the same rows


def test_backfill_outside_the_periods_says_so(demo: tuple[Result, Path]) -> None:
    result = CliRunner().invoke(main, ["backfill", "--from", "1990-01-01", "--to", "1990-12-31"])
    assert result.exit_code == 1
    assert "no period to build" in result.output
