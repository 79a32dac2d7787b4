"""/metrics of a real scorer, and the alert rules under docker/prometheus/ against it."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from churn_assets.infra import warehouse
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.serving.app import create_app
from churn_assets.serving.features import WarehouseFeatureSource
from churn_assets.serving.metrics import EXPORTED_NAMES, ServingMetrics
from churn_assets.serving.model_store import ChampionHolder
from churn_assets.serving.prediction_log import LoggedPrediction, PredictionLog
from churn_assets.serving.server import BackgroundServer
from churn_assets.tables.online_predictions import COLUMNS
from churn_assets.tables.postgres.online_predictions import LEGACY_UNIQUE_INDEX, create_table
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from tests.integration.serving_support import metric_samples, wait_until

pytestmark = pytest.mark.integration

RULES = Path(__file__).parents[2] / "docker" / "prometheus" / "rules.yml"


@pytest.fixture(scope="module")
def customer_ids(embedded_url: str) -> list[str]:
    frame: pd.DataFrame = PostgresWarehouse(embedded_url).read_current_features()
    return [str(c) for c in frame["customer_id"].head(100)]


@dataclass(frozen=True)
class Served:
    scrape: str  # /metrics at the end
    responses: list[dict[str, Any]]  # the 100 predictions by id


@pytest.fixture(scope="module")
def served(
    holder: ChampionHolder,
    source: WarehouseFeatureSource,
    customer_ids: list[str],
    embedded_url: str,
) -> Served:
    """100 predictions by id (logged), one unknown path and one unknown customer; the log
    is closed (flushed) before the fixture returns, as a scorer that stops does."""
    metrics = ServingMetrics()
    prediction_log = PredictionLog(PostgresWarehouse(embedded_url), metrics)
    prediction_log.start()
    app = create_app(holder, source, "k", metrics=metrics, prediction_log=prediction_log)
    responses = []
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key": "k"}) as client,
    ):
        for customer_id in customer_ids:
            response = client.post("/predict", json={"customer_id": customer_id})
            assert response.status_code == 200, response.text
            responses.append(response.json())
        assert client.get("/no/such/path").status_code == 404
        assert client.post("/predict", json={"customer_id": "nobody"}).status_code == 404
        assert client.get("/metrics", headers={"X-API-Key": ""}).status_code == 401
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
    prediction_log.close()
    return Served(response.text, responses)


@pytest.fixture(scope="module")
def scrape(served: Served) -> str:
    return served.scrape


def test_every_prediction_is_in_the_online_log(served: Served, embedded_url: str) -> None:
    by_id = {r["request_id"]: r for r in served.responses}
    assert len(by_id) == 100
    with warehouse.connect(embedded_url) as conn, conn.cursor() as cur:
        cur.execute(
            f"select request_id, customer_id, model_version, model_sha256, churn_probability,"
            f" risk_band, served_by, latency_ms from {ONLINE_PREDICTIONS_TABLE}"
            " where request_id = any(%s)",
            (list(by_id),),
        )
        rows = cur.fetchall()
    assert len(rows) == 100
    for request_id, customer, version, sha, probability, band, served_by, latency in rows:
        response = by_id[request_id]
        assert (customer, version, sha, band) == (
            response["customer_id"],
            response["model_version"],
            response["model_sha256"],
            response["risk_band"],
        )
        assert probability == response["churn_probability"]
        assert served_by == "champion"
        assert 0 < latency < 10_000


def test_a_full_log_queue_drops_and_counts_without_holding_up_requests(
    holder: ChampionHolder, source: WarehouseFeatureSource, customer_ids: list[str]
) -> None:
    metrics = ServingMetrics()
    # never started: nothing drains the one-slot queue, as with a warehouse that hangs
    nowhere = PostgresWarehouse("postgresql://nobody@127.0.0.1:1/none")
    stuck = PredictionLog(nowhere, metrics, capacity=1)
    app = create_app(holder, source, None, metrics=metrics, prediction_log=stuck)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        for customer_id in customer_ids[:5]:
            assert client.post("/predict", json={"customer_id": customer_id}).status_code == 200
        samples = metric_samples(client.get("/metrics").text)
    assert samples[("churn_prediction_log_dropped_total", frozenset())] == 4


def test_metrics_count_requests_by_route_template_and_name_the_model(
    holder: ChampionHolder, customer_ids: list[str], scrape: str
) -> None:
    assert len(customer_ids) == 100
    samples = metric_samples(scrape)
    requests = {
        dict(labels)["route"] + " " + dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "churn_predict_requests_total"
    }
    # the unknown path is one "other" series, never its raw path; the refused scrape counts
    assert requests == {
        "/predict 200": 100,
        "/predict 404": 1,
        "other 404": 1,
        "/metrics 401": 1,
    }
    count = samples[("churn_predict_latency_seconds_count", frozenset({("route", "/predict")}))]
    assert count == 101
    model = holder.model
    assert model is not None
    info = frozenset(
        {
            ("model_name", model.name),
            ("model_version", model.version),
            ("model_sha256", model.sha256),
        }
    )
    assert samples[("churn_model_info", info)] == 1


def test_every_metric_an_alert_rule_uses_is_exported(scrape: str) -> None:
    used = set(re.findall(r"\bchurn_[a-z0-9_]+", RULES.read_text()))
    assert len(used) >= 6, used
    live = {s.name for f in text_string_to_metric_families(scrape) for s in f.samples}
    assert used <= live, sorted(used - live)
    assert used <= EXPORTED_NAMES, sorted(used - EXPORTED_NAMES)
    assert live == EXPORTED_NAMES  # the constant describes a scrape, no more, no less


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not on PATH (Debian: apt-get install prometheus; .ci/run installs it)",
)
def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_log_writes_any_customer_id_and_nulls_exactly(embedded_url: str) -> None:
    """COPY's text format: backslashes, tabs, line ends, quotes, non-ASCII ids and nulls arrive
    as sent, and a lone prediction is written without waiting for a full batch."""
    log_warehouse = PostgresWarehouse(embedded_url)
    log_warehouse.create_prediction_log()  # to read it before the writer's first batch
    log = PredictionLog(log_warehouse, ServingMetrics(), flush_seconds=0.05)
    log.start()
    sent = [
        LoggedPrediction(
            request_id=f"copy-{i}-{uuid.uuid4()}",
            scored_at=datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC),
            customer_id=customer_id,
            input_hash="0" * 64,
            features_as_of=None,
            model_name="churn-model",
            model_version="7",
            model_sha256="f" * 64,
            churn_probability=0.1 + 0.2,  # not a short decimal: repr must round-trip
            risk_band="low",
            latency_ms=0.25,
            served_by="champion",
        )
        for i, customer_id in enumerate(
            [r"C\0042", 'quote " and comma ,', "tab\tand\nnewline\r", "é ü 中", None]
        )
    ]
    try:
        for prediction in sent:
            log.submit(prediction)
        ids = [p.request_id for p in sent]

        def written() -> list[tuple[Any, ...]]:
            with warehouse.connect(embedded_url) as conn, conn.cursor() as cur:
                cur.execute(
                    f"select {', '.join(COLUMNS)} from {ONLINE_PREDICTIONS_TABLE} "
                    "where request_id = any(%s) order by request_id",
                    (ids,),
                )
                return cur.fetchall()

        wait_until(lambda: len(written()) == len(sent), "the writer's batch")  # no close()
    finally:
        log.close()
    # No shadow here: the writer leaves the shadow's columns null.
    assert written() == sorted(tuple(getattr(p, c, None) for c in COLUMNS) for p in sent)


def test_creating_the_table_drops_its_old_unique_index_and_keeps_the_rows(
    embedded_url: str,
) -> None:
    """A log written by an older scorer had a unique index on the key; the writer's first
    connection (or the analytics step) drops it, and nothing else changes."""
    schema = ONLINE_PREDICTIONS_TABLE.split(".")[0]

    def state() -> tuple[int, list[str]]:
        with warehouse.connect(embedded_url) as conn, conn.cursor() as cur:
            cur.execute(f"select count(*) from {ONLINE_PREDICTIONS_TABLE}")
            rows = cur.fetchone()[0]
            cur.execute("select indexname from pg_indexes where schemaname = %s", (schema,))
            return rows, sorted(name for (name,) in cur.fetchall())

    with warehouse.connect(embedded_url) as conn, conn.cursor() as cur:
        create_table(conn)
        cur.execute(
            f"create unique index if not exists {LEGACY_UNIQUE_INDEX} on "
            f"{ONLINE_PREDICTIONS_TABLE} (request_id, coalesce(batch_item, -1))"
        )
        conn.commit()
    rows, indexes = state()
    assert LEGACY_UNIQUE_INDEX in indexes
    PostgresWarehouse(embedded_url).create_prediction_log()
    assert state() == (rows, [i for i in indexes if i != LEGACY_UNIQUE_INDEX])
