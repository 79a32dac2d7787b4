"""The online feature copy against real Postgres: the session demo's `marts.current_features`
(the copy must answer exactly what a lookup in the table answers), and a Postgres of the
test's own for outages (stopped and started in child processes, as another host would be:
the session's shared server is never stopped)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg2.extras import execute_values

from churn_assets.infra import warehouse
from churn_assets.serving.app import create_app
from churn_assets.serving.features import (
    FEATURE_TABLE,
    OnlineFeatureSource,
    WarehouseFeatureSource,
    parquet_loader,
    warehouse_loader,
)
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.model_store import ChampionHolder
from churn_assets.serving.server import BackgroundServer, build_service
from churn_assets.settings import load_settings
from tests.integration.serving_support import wait_until

pytestmark = pytest.mark.integration

DEMO_ROWS = 200  # rows of the demo's table copied into the test's own warehouse


@pytest.fixture(scope="module")
def demo_url(demo: tuple[Result, Path], embedded_url: str) -> str:
    result, _ = demo
    assert result.exit_code == 0, result.output
    return embedded_url


def _typed(row: dict[str, Any]) -> list[tuple[str, Any, type]]:
    return [(name, value, type(value)) for name, value in row.items()]


def test_online_copy_answers_what_the_table_answers_for_every_customer(demo_url: str) -> None:
    online = OnlineFeatureSource.from_warehouse(demo_url)
    assert online.refresh(), online.state().last_error
    pooled = WarehouseFeatureSource(demo_url)
    try:
        with warehouse.connect(demo_url) as conn, conn.cursor() as cur:
            cur.execute(f"select customer_id from {FEATURE_TABLE} order by customer_id")
            ids = [row[0] for row in cur.fetchall()]
        assert ids and online.state().rows == len(ids)
        expected = pooled.get_many(ids)
        got = online.get_many(ids)
        assert set(got) == set(expected) == set(ids)
        for customer_id in ids:  # values, Python types and column order, row by row
            assert _typed(got[customer_id]) == _typed(expected[customer_id]), customer_id
        assert online.get(ids[0]) == pooled.get(ids[0])
        assert online.get("no-such-customer") is None is pooled.get("no-such-customer")
        assert online.state().as_of == max(row["as_of"] for row in expected.values())
    finally:
        pooled.close()
        online.close()


def test_the_demos_export_gives_the_scorer_the_copy_the_table_gives(demo_url: str) -> None:
    # What the scorer loads on Spark (the file current_features_export wrote in the demo's
    # run) is what it loads from the table on Postgres: rows, values, types and arrays.
    from_file = parquet_loader(load_settings().online_features_path)(None)
    from_table = warehouse_loader(demo_url)(None)
    assert from_file is not None and from_table is not None
    with warehouse.connect(demo_url) as conn, conn.cursor() as cur:
        cur.execute(f"select customer_id from {FEATURE_TABLE}")
        ids = [row[0] for row in cur.fetchall()]
    assert from_file.rows == from_table.rows == len(ids) > 0
    assert from_file.as_of == from_table.as_of is not None
    for customer_id in ids:
        assert _typed(from_file.row(customer_id)) == _typed(from_table.row(customer_id))
    assert from_file.nbytes == from_table.nbytes


# --- a warehouse of the test's own ---------------------------------------------------


def _in_child(call: str, pg_dir: Path) -> str:
    """Runs a `warehouse` function in a fresh process: pgserver caches the server it
    started per process, so a stop and a later start must not share one."""
    code = (
        "import sys; from pathlib import Path; from churn_assets.infra import warehouse; "
        f"print(warehouse.{call}(Path(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(pg_dir)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@dataclass
class OwnWarehouse:
    pg_dir: Path
    url: str

    def stop(self) -> None:
        assert _in_child("stop_embedded", self.pg_dir) == "True"

    def start(self) -> None:
        assert _in_child("start_embedded", self.pg_dir) == self.url

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with warehouse.connect(self.url) as conn, conn.cursor() as cur:
            cur.execute(sql, params)


@pytest.fixture
def own_warehouse(demo_url: str, tmp_path: Path) -> Iterator[OwnWarehouse]:
    """A Postgres of the test's own holding the first rows of the demo's table, with the
    demo table's column types."""
    pg_dir = tmp_path / "pg"
    own = OwnWarehouse(pg_dir, _in_child("start_embedded", pg_dir))
    try:
        with warehouse.connect(demo_url) as conn, conn.cursor() as cur:
            cur.execute(
                "select attname, format_type(atttypid, atttypmod) from pg_attribute "
                "where attrelid = %s::regclass and attnum > 0 and not attisdropped "
                "order by attnum",
                (FEATURE_TABLE,),
            )
            columns = cur.fetchall()
            cur.execute(f"select * from {FEATURE_TABLE} order by customer_id limit {DEMO_ROWS}")
            rows = cur.fetchall()
        ddl = ", ".join(f'"{name}" {type_}' for name, type_ in columns)
        with warehouse.connect(own.url) as conn, conn.cursor() as cur:
            cur.execute(f"create schema marts; create table {FEATURE_TABLE} ({ddl})")
            execute_values(cur, f"insert into {FEATURE_TABLE} values %s", rows)
        yield own
    finally:
        _in_child("stop_embedded", pg_dir)


def _customer(own: OwnWarehouse) -> tuple[str, Any]:
    with warehouse.connect(own.url) as conn, conn.cursor() as cur:
        cur.execute(f"select customer_id, as_of from {FEATURE_TABLE} order by customer_id limit 1")
        row = cur.fetchone()
    assert row is not None
    return row[0], row[1]


def test_online_copy_answers_through_an_outage_and_catches_up_without_restart(
    own_warehouse: OwnWarehouse,
) -> None:
    customer, as_of = _customer(own_warehouse)
    metrics = ServingMetrics()
    online = OnlineFeatureSource.from_warehouse(
        own_warehouse.url, poll_seconds=0.2, metrics=metrics
    )
    assert online.refresh()
    before = online.get(customer)
    assert before is not None and before["as_of"] == as_of
    online.start()
    try:
        own_warehouse.stop()
        wait_until(lambda: online.state().refresh_failed, "a failed refresh")
        state = online.state()
        assert state.available and state.as_of == as_of and state.rows == DEMO_ROWS
        assert state.last_error is not None and "cannot connect" in state.last_error.message
        assert online.get(customer) == before  # the copy keeps answering
        with pytest.raises(psycopg2.OperationalError):  # the warehouse really is down
            psycopg2.connect(own_warehouse.url, connect_timeout=3).close()

        own_warehouse.start()
        # The next period lands while the poller runs: new as_of, a new value, a new customer,
        # in one transaction as dbt lands a period (two commits let the poller see the new
        # as_of without the newcomer, and the test then failed on a busy machine).
        newer = as_of + timedelta(days=30)
        own_warehouse.execute(
            f"update {FEATURE_TABLE} set as_of = %s, cart_diversity = cart_diversity + 1; "
            f"insert into {FEATURE_TABLE} select as_of, 'newcomer', days_since_last_order, "
            "total_revenue_30d, total_revenue_90d, total_revenue_365d, order_frequency, "
            f"cart_diversity, email_domain_class, customer_lifetime_days from {FEATURE_TABLE} "
            "where customer_id = %s",
            (newer, customer),
        )
        wait_until(lambda: online.state().as_of == newer, "the new period to be served")
        state = online.state()
        assert not state.refresh_failed and state.rows == DEMO_ROWS + 1
        after = online.get(customer)
        assert after == before | {"as_of": newer, "cart_diversity": before["cart_diversity"] + 1}
        assert online.get("newcomer") == after | {"customer_id": "newcomer"}
    finally:
        online.close()
    sample = metrics.registry.get_sample_value
    assert (sample("churn_features_refresh_total", {"result": "failure"}) or 0) >= 1
    assert sample("churn_features_refresh_total", {"result": "success"}) == 2


def test_one_refresh_picks_up_any_change_to_the_table_and_a_missing_table_keeps_the_copy(
    own_warehouse: OwnWarehouse,
) -> None:
    customer, _ = _customer(own_warehouse)
    online = OnlineFeatureSource.from_warehouse(own_warehouse.url)
    assert online.refresh()
    assert not online.refresh()  # unchanged: nothing reloaded
    before = online.get(customer)
    assert before is not None
    # An update in place: same period, same row count, one value changed.
    own_warehouse.execute(
        f"update {FEATURE_TABLE} set total_revenue_30d = total_revenue_30d + 1.25 "
        "where customer_id = %s",
        (customer,),
    )
    assert online.refresh()
    assert online.get(customer) == before | {
        "total_revenue_30d": before["total_revenue_30d"] + 1.25
    }
    own_warehouse.execute(f"drop table {FEATURE_TABLE}")
    assert not online.refresh()
    state = online.state()
    assert state.refresh_failed and state.last_error is not None
    assert "current_features" in state.last_error.message
    assert online.get(customer) is not None


def test_scorer_answers_by_id_through_an_outage_and_serves_the_next_period_unrestarted(
    own_warehouse: OwnWarehouse,
) -> None:
    """The issue's acceptance, over HTTP: with the warehouse stopped, requests by id still
    answer (200, the last copy's features_as_of) and /health says degraded, why and as of
    when; a period built after the warehouse returns is served by the same process."""
    customer, as_of = _customer(own_warehouse)
    holder = ChampionHolder.from_mlflow(load_settings().resolved_tracking_uri)
    assert holder.refresh(), holder.state().last_error
    online = OnlineFeatureSource.from_warehouse(own_warehouse.url, poll_seconds=0.2)
    assert online.refresh()
    online.start()
    try:
        with (
            BackgroundServer(create_app(holder, online, None)) as running,
            httpx.Client(base_url=running.url, timeout=30) as client,
        ):

            def predict(customer_id: str) -> httpx.Response:
                return client.post("/predict", json={"customer_id": customer_id})

            first = predict(customer)
            assert first.status_code == 200 and first.json()["features_as_of"] == str(as_of)
            health = client.get("/health").json()
            assert health["status"] == "ok" and health["feature_store"]["status"] == "ok"
            assert health["feature_store"]["as_of"] == str(as_of)

            own_warehouse.stop()
            wait_until(
                lambda: client.get("/health").json()["status"] == "degraded", "/health degraded"
            )
            during = predict(customer)
            assert during.status_code == 200
            assert during.json()["features_as_of"] == str(as_of)
            assert during.json()["churn_probability"] == first.json()["churn_probability"]
            assert predict("no-such-customer").status_code == 404  # unknown stays unknown
            store = client.get("/health").json()["feature_store"]
            assert store["status"] == "degraded" and store["as_of"] == str(as_of)
            assert "cannot connect" in store["last_error"]["message"]

            own_warehouse.start()
            newer = as_of + timedelta(days=30)
            own_warehouse.execute(
                f"update {FEATURE_TABLE} set as_of = %s, days_since_last_order = 0", (newer,)
            )
            wait_until(
                lambda: predict(customer).json()["features_as_of"] == str(newer),
                "the new period to be served",
            )
            after = predict(customer).json()
            assert after["features"]["days_since_last_order"] == 0
            health = client.get("/health").json()
            assert health["status"] == "ok" and health["feature_store"]["as_of"] == str(newer)
    finally:
        online.close()


def test_build_service_serves_ids_from_a_loaded_copy_of_the_demo_table(demo_url: str) -> None:
    service = build_service()
    try:
        state = service.source.state()
        with warehouse.connect(demo_url) as conn, conn.cursor() as cur:
            cur.execute(f"select count(*), max(as_of) from {FEATURE_TABLE}")
            assert (state.rows, state.as_of) == cur.fetchone()
        assert state.available and not state.refresh_failed
        # the service's metrics saw the copy's first load: what it holds and that it worked
        scrape = TestClient(service.app).get("/metrics").text
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(scrape)
            for sample in family.samples
        }
        assert samples[("churn_features_refresh_total", (("result", "success"),))] == 1
        assert state.as_of is not None
        as_of_seconds = datetime.combine(state.as_of, time_of_day(), UTC).timestamp()
        assert samples[("churn_features_as_of_timestamp_seconds", ())] == as_of_seconds
        service.start()
        assert service.source.polling and service.holder.polling
    finally:
        service.close()
    assert not service.source.polling


def test_on_spark_build_service_serves_ids_from_the_export_without_a_log(
    demo_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The demo's export and registry, the engine set to Spark: the scorer needs neither a
    # JVM nor the warehouse (its copy is the file), and serves without a prediction log,
    # which a Parquet table cannot take a row per request of.
    monkeypatch.setenv("CHURN_ENGINE", "spark")
    settings = load_settings()
    with warehouse.connect(demo_url) as conn, conn.cursor() as cur:
        cur.execute(f"select customer_id from {FEATURE_TABLE} order by customer_id limit 1")
        (customer,) = cur.fetchone()
    with caplog.at_level("WARNING", logger="churn_assets.serving.server"):
        service = build_service()
    try:
        assert service.prediction_log is None
        assert "no prediction log on Spark" in caplog.text
        assert service.source.state().table == str(settings.online_features_path)
        answer = TestClient(service.app).post("/predict", json={"customer_id": customer})
        assert answer.status_code == 200, answer.text
        assert answer.json()["customer_id"] == customer
    finally:
        service.close()
    children = subprocess.run(
        ["ps", "-o", "comm=", "--ppid", str(os.getpid())], capture_output=True, text=True
    ).stdout.split()
    assert "java" not in children  # no JVM was started for it
