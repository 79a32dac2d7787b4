"""A month costs a month (issue 25 item 8): after a delivery with one more month, `churn run`
rebuilds the new period and the periods whose labels it matures, and leaves every other
period's rows as they were."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner

from churn_assets.app.cli import main
from churn_assets.data.generator import GeneratorConfig, generate, write_raw_files
from churn_assets.infra import warehouse
from churn_assets.lib.runs import RANGE_END_TAG, RANGE_START_TAG, period_range_tags, run_job
from churn_assets.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two whole runs of the graph

# The feed's history starts here (13 months by October, not the demo's 24): what is tested
# is which periods a month rebuilds, not how many there are.
HISTORY_STARTS = pd.Timestamp("2024-10-01")


@pytest.fixture(scope="module")
def demo_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files `churn demo` generates (its defaults are ``GeneratorConfig()``), written
    here: the test needs the demo's data, not the session demo's warehouse or registry, so
    it stays out of the demo's xdist unit (tests/conftest.py)."""
    raw_dir = tmp_path_factory.mktemp("demo_raw")
    write_raw_files(generate(GeneratorConfig()), raw_dir)
    return raw_dir


def _delivery(demo_raw: Path, through: date, raw_dir: Path) -> Path:
    """The demo's files as a monthly feed had them on ``through``: the orders from
    ``HISTORY_STARTS`` up to that day and the customers known by then."""
    customers = pd.read_csv(demo_raw / "customers.csv", dtype=str)
    orders = pd.read_csv(demo_raw / "orders.csv", dtype=str)
    end = pd.Timestamp(through) + pd.Timedelta(days=1)  # all of ``through`` counts
    ordered_at = pd.to_datetime(orders["ordered_at"])
    kept = orders[(ordered_at >= HISTORY_STARTS) & (ordered_at < end)]
    signed_up = pd.to_datetime(customers["signup_at"]) < end  # NaT: no
    known = customers[signed_up | customers["customer_id"].isin(kept["customer_id"])]
    raw_dir.mkdir(parents=True)
    known.to_csv(raw_dir / "customers.csv", index=False)
    kept.to_csv(raw_dir / "orders.csv", index=False)
    return raw_dir


def _features_by_period(url: str) -> dict[str, str]:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "select as_of::text, md5(string_agg(t::text, '|' order by t.customer_id)) "
            "from marts.customer_features as t group by as_of"
        )
        return dict(cur.fetchall())


def test_a_month_delivered_rebuilds_the_new_period_and_the_maturing_ones_only(
    demo_raw: Path,
    tmp_path: Path,
    fresh_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    light_training: None,
) -> None:
    # A home of its own (Dagster instance, MLflow) on a fresh database.
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", fresh_database_url)
    monkeypatch.setenv(
        "CHURN_RAW_DIR", str(_delivery(demo_raw, date(2025, 10, 31), tmp_path / "oct"))
    )
    from churn_assets.app.cli import _ensure_dagster_home
    from churn_assets.definitions import defs
    from churn_assets.defs.partitions import registered_periods

    settings = load_settings()
    # October's file, loaded and every period built (as the daemon would: two runs).
    with dg.DagsterInstance.from_config(str(_ensure_dagster_home(settings))) as instance:
        assert run_job(defs(), instance, "ingest_job").success
        october = registered_periods(instance)
        built = run_job(defs(), instance, "history_job", tags=period_range_tags(october))
        assert built.success
    before = _features_by_period(fresh_database_url)
    assert october[-1] == "2025-10-31" and sorted(before) == october

    # November's file, with `churn run`: one run over the periods it can change.
    november = _delivery(demo_raw, date(2025, 11, 30), tmp_path / "nov")
    monkeypatch.setenv("CHURN_RAW_DIR", str(november))
    result = CliRunner().invoke(main, ["run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        (run,) = instance.get_runs(dg.RunsFilter(job_name="churn_pipeline"))
        rebuilt = sorted(
            record.asset_materialization.partition
            for record in instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey("customer_features"), after_storage_id=0
                ),
                limit=100,
            ).records
            if record.run_id == run.run_id and record.asset_materialization
        )
    # The new period, and the three whose 90-day windows reach into November (2025-08-31's
    # closes on 2025-11-29); 2025-07-31's closed on 2025-10-29, within October's file.
    expected = ["2025-08-31", "2025-09-30", "2025-10-31", "2025-11-30"]
    assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (expected[0], expected[-1])
    assert rebuilt == expected
    after = _features_by_period(fresh_database_url)
    kept = [period for period in october if period < expected[0]]
    assert {p: after[p] for p in kept} == {p: before[p] for p in kept}
    assert sorted(after) == [*october, "2025-11-30"]
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from marts.churn_labels where as_of = '2025-08-31'")
        assert cur.fetchone()[0] > 0  # labelled now: its window closed in November
