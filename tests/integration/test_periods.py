"""The platform in time: period partitions, idempotent re-materialisation, backfills.
(Realized performance once labels mature: test_drift_story.py, on the story's home.)"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from churn_assets.app.cli import main
from churn_assets.infra import warehouse
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
    import dagster as dg

    from churn_assets.definitions import defs
    from churn_assets.defs.dbt.assets import period_dbt_models
    from churn_assets.defs.partitions import registered_periods

    before = _checksums(embedded_url)
    settings = load_settings()
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        keys = registered_periods(instance)
        past = keys[len(keys) // 2]  # a labelled period in the middle of the history
        # The per-period marts alone: the staging views and current_features (the rest of
        # history_job) hold no period's rows, and `churn backfill` below runs the job.
        result = dg.materialize(
            [period_dbt_models],
            instance=instance,
            resources=defs().resources,
            partition_key=past,
        )
        assert result.success
        materialized = instance.get_materialized_partitions(dg.AssetKey("customer_features"))
    after = _checksums(embedded_url)
    assert past in materialized
    assert ("marts.training_snapshot", past) in before  # it has labels: all three tables checked
    assert after == before  # its own rows and every other period's rows identical


def test_backfill_builds_a_range_of_periods_in_one_run(
    demo: tuple[Result, Path], embedded_url: str
) -> None:
    import dagster as dg

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
