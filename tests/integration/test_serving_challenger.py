"""Shadow and canary: the registry's challenger in a real scorer.

A private registry holds the demo's model (champion) and a model retrained with another
seed (challenger); the features come from the session demo's warehouse. Expected shadow
results are computed here with onnxruntime on the registered files, not by the scorer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg2
import pytest
from click.testing import CliRunner

from churn_assets.app.cli import main
from churn_assets.ml.bands import RiskBands
from churn_assets.ml.export import OnnxScorer
from churn_assets.ml.features import to_model_inputs
from churn_assets.policy import Policy
from churn_assets.schema import CHALLENGER_ALIAS, ONLINE_PREDICTIONS_TABLE
from churn_assets.serving.app import create_app
from churn_assets.serving.challenger import ShadowScorer, in_canary
from churn_assets.serving.features import FeatureSource, InMemoryFeatureSource
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.model_store import ChampionHolder
from churn_assets.serving.prediction_log import PredictionLog
from churn_assets.serving.server import BackgroundServer
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from tests.integration.serving_support import Registry, metric_samples, payload

pytestmark = pytest.mark.integration

BANDS = RiskBands.from_policy(Policy())
CANARY_CUSTOMERS = 2_000
# The only values two runs may answer differently: a fresh uuid and the time of scoring.
VOLATILE = re.compile(r'"(request_id|scored_at)":"[^"]*"')


@pytest.fixture(scope="module")
def holders(registry: Registry) -> tuple[ChampionHolder, ChampionHolder]:
    """(champion: the demo model, challenger: the retrained one), both loaded."""
    champion = registry.holder()
    registry.point(CHALLENGER_ALIAS, "retrained")
    challenger = ChampionHolder.from_mlflow(registry.uri, alias=CHALLENGER_ALIAS)
    assert challenger.refresh(), challenger.state().last_error
    return champion, challenger


def _logged(url: str, request_ids: list[str]) -> pd.DataFrame:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            f"select * from {ONLINE_PREDICTIONS_TABLE} where request_id = any(%s)", (request_ids,)
        )
        columns = [c.name for c in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=columns).set_index("request_id")


def _serve(
    app_args: dict[str, Any], source: FeatureSource, requests: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str]:
    """Post ``requests`` to a scorer built with ``app_args``; (responses, /metrics)."""
    with (
        BackgroundServer(create_app(feature_source=source, api_key=None, **app_args)) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        responses = []
        for body in requests:
            response = client.post("/predict", json=body)
            assert response.status_code == 200, response.text
            responses.append({**response.json(), "_bytes": response.content})
        return responses, client.get("/metrics").text


@pytest.fixture(scope="module")
def shadowed(
    holders: tuple[ChampionHolder, ChampionHolder],
    rows: pd.DataFrame,
    source: FeatureSource,
    embedded_url: str,
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]], str]]:
    """200 requests (150 by id, 50 by features) to a champion-only scorer and to one with
    the challenger in the shadow; (champion-only answers, shadowed answers, its /metrics)."""
    champion, challenger = holders
    requests: list[dict[str, Any]] = [{"customer_id": c} for c in rows["customer_id"][:150]]
    requests += [{"features": payload(row)} for _, row in rows.iloc[150:200].iterrows()]
    alone, _ = _serve({"holder": champion}, source, requests)
    metrics = ServingMetrics()
    log = PredictionLog(
        PostgresWarehouse(embedded_url), metrics, shadow=ShadowScorer(BANDS, metrics)
    )
    log.start()
    app_args = {"holder": champion, "challenger": challenger, "metrics": metrics}
    try:
        shadow, _ = _serve({**app_args, "prediction_log": log}, source, requests)
    finally:
        log.close()  # flushes: every row is written (and shadow-scored) when it returns
    yield alone, shadow, metrics.render()[0].decode()


def test_shadow_leaves_every_response_as_the_champion_alone_answers_it(
    shadowed: tuple[list[dict[str, Any]], list[dict[str, Any]], str], registry: Registry
) -> None:
    alone, shadow, _ = shadowed
    assert len(alone) == len(shadow) == 200

    def stable(answer: dict[str, Any]) -> str:
        return VOLATILE.sub(r'"\1":-', answer["_bytes"].decode())

    assert [stable(a) for a in shadow] == [stable(a) for a in alone]
    assert all(stable(a).count('":-') == 2 for a in shadow)  # only those two were masked
    assert {a["model_version"] for a in shadow} == {registry.version["demo"]}
    assert {a["served_by"] for a in shadow} == {"champion"}


def test_every_shadowed_request_is_logged_with_the_challengers_own_score(
    shadowed: tuple[list[dict[str, Any]], list[dict[str, Any]], str],
    registry: Registry,
    embedded_url: str,
) -> None:
    _, shadow, scrape = shadowed
    logged = _logged(embedded_url, [a["request_id"] for a in shadow])
    assert len(logged) == 200
    assert logged["shadow_probability"].notna().all()
    assert set(logged["shadow_model_version"]) == {registry.version["retrained"]}
    assert set(logged["served_by"]) == {"champion"}

    # the challenger's probabilities, computed here from its registered file
    features = pd.DataFrame([a["features"] for a in shadow])
    expected = OnnxScorer(registry.onnx["retrained"]).predict(to_model_inputs(features))
    observed = logged.loc[[a["request_id"] for a in shadow], "shadow_probability"]
    np.testing.assert_allclose(observed.to_numpy(), expected, atol=1e-6)
    expected_bands = [BANDS.band(float(p)) for p in expected]
    assert list(logged.loc[observed.index, "shadow_risk_band"]) == expected_bands

    # the counters say the same as the log
    disagreeing = sum(a["risk_band"] != b for a, b in zip(shadow, expected_bands, strict=True))
    samples = metric_samples(scrape)
    assert samples[("churn_shadow_predictions_total", frozenset())] == 200
    assert samples[("churn_shadow_disagreements_total", frozenset())] == disagreeing


def test_churn_status_shows_the_shadow_comparison_of_the_pair(
    shadowed: tuple[list[dict[str, Any]], list[dict[str, Any]], str], registry: Registry
) -> None:
    result = CliRunner().invoke(main, ["status", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shadow = json.loads(result.output)["shadow"]
    assert shadow["rows"] >= 200
    pair = shadow["pairs"][-1]
    assert (pair["champion_version"], pair["challenger_version"]) == (
        registry.version["demo"],
        registry.version["retrained"],
    )
    assert pair["rows"] >= 200


def test_canary_serves_its_share_of_customers_with_the_challenger_and_keeps_them(
    holders: tuple[ChampionHolder, ChampionHolder],
    rows: pd.DataFrame,
    registry: Registry,
    embedded_url: str,
) -> None:
    champion, challenger = holders
    # 2,000 distinct customers (the demo has fewer): ids of our own over the demo's rows
    demo_rows = rows.to_dict("records")
    ids = [f"canary-{i:05d}" for i in range(CANARY_CUSTOMERS)]
    source = InMemoryFeatureSource({c: demo_rows[i % len(demo_rows)] for i, c in enumerate(ids)})
    metrics = ServingMetrics()
    log = PredictionLog(
        PostgresWarehouse(embedded_url), metrics, shadow=ShadowScorer(BANDS, metrics)
    )
    log.start()
    app_args = {
        "holder": champion,
        "challenger": challenger,
        "metrics": metrics,
        "prediction_log": log,
        "canary_percent": 10.0,
    }
    by_features = {"features": payload(rows.iloc[0])}
    try:
        first, _ = _serve(app_args, source, [{"customer_id": c} for c in ids])
        again, _ = _serve(app_args, source, [{"customer_id": c} for c in ids[:500]])
        no_id, _ = _serve(app_args, source, [by_features] * 20)
    finally:
        log.close()

    served_by = [a["served_by"] for a in first]
    share = served_by.count("canary") / CANARY_CUSTOMERS
    assert 0.07 <= share <= 0.13, f"{share:.1%} of customers in a 10% canary"
    assert served_by == ["canary" if in_canary(c, 10.0) else "champion" for c in ids]
    assert [a["served_by"] for a in again] == served_by[:500]  # the same customer, same model
    assert {a["served_by"] for a in no_id} == {"champion"}  # no id: no canary
    version = {"champion": registry.version["demo"], "canary": registry.version["retrained"]}
    assert all(a["model_version"] == version[a["served_by"]] for a in first)

    # a canary row logs the champion as its shadow, so both models are on every row
    logged = _logged(embedded_url, [a["request_id"] for a in first])
    canary = logged[logged["served_by"] == "canary"]
    assert len(canary) == served_by.count("canary")
    assert set(canary["model_version"]) == {registry.version["retrained"]}
    assert set(canary["shadow_model_version"]) == {registry.version["demo"]}
    # one registry over the three runs: 2,000 + 500 by id, 20 by features
    served = metric_samples(metrics.render()[0].decode())
    canary_total = served_by.count("canary") + served_by[:500].count("canary")
    assert served[("churn_served_predictions_total", frozenset({("served_by", "canary")}))] == (
        canary_total
    )
    assert served[("churn_served_predictions_total", frozenset({("served_by", "champion")}))] == (
        2_520 - canary_total
    )


def test_health_names_the_challenger_and_no_shadow_when_it_is_the_champion(
    registry: Registry, holders: tuple[ChampionHolder, ChampionHolder], rows: pd.DataFrame
) -> None:
    champion, challenger = holders
    source = InMemoryFeatureSource({"c1": rows.iloc[0].to_dict()})
    app = create_app(champion, source, None, challenger=challenger, canary_percent=100.0)
    request = {"customer_id": "c1"}
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        body = client.get("/health").json()
        assert body["status"] == "ok"
        assert body["challenger"]["model"]["version"] == registry.version["retrained"]
        assert body["challenger"]["active"] is True
        assert body["challenger"]["canary_percent"] == 100.0
        assert client.post("/predict", json=request).json()["served_by"] == "canary"

        # the challenger alias moves onto the champion's version: nothing left to compare
        registry.point(CHALLENGER_ALIAS, "demo")
        try:
            assert challenger.refresh()
            assert client.get("/health").json()["challenger"]["active"] is False
            answer = client.post("/predict", json=request).json()
            assert answer["served_by"] == "champion"
            assert answer["model_version"] == registry.version["demo"]
        finally:
            registry.point(CHALLENGER_ALIAS, "retrained")
            assert challenger.refresh()


def test_a_batch_is_logged_one_row_per_item_with_its_shadow(
    holders: tuple[ChampionHolder, ChampionHolder],
    rows: pd.DataFrame,
    source: FeatureSource,
    registry: Registry,
    embedded_url: str,
) -> None:
    champion, challenger = holders
    items: list[dict[str, Any]] = [{"customer_id": c} for c in rows["customer_id"][:30]]
    items += [{"features": payload(row)} for _, row in rows.iloc[30:40].iterrows()]
    metrics = ServingMetrics()
    log = PredictionLog(
        PostgresWarehouse(embedded_url), metrics, shadow=ShadowScorer(BANDS, metrics)
    )
    log.start()
    app = create_app(
        champion,
        source,
        None,
        metrics=metrics,
        prediction_log=log,
        challenger=challenger,
        canary_percent=100.0,  # batches stay on the champion whatever the canary
    )
    try:
        with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
            response = client.post("/predict/batch", json={"items": items})
        assert response.status_code == 200, response.text
    finally:
        log.close()
    answer = response.json()
    assert answer["served_by"] == "champion"
    logged = _logged(embedded_url, [answer["request_id"]]).sort_values("batch_item")
    assert list(logged["batch_item"]) == list(range(40))
    assert list(logged["customer_id"].where(logged["customer_id"].notna(), None)) == [
        item["customer_id"] for item in answer["predictions"]
    ]
    np.testing.assert_array_equal(
        logged["churn_probability"], [item["churn_probability"] for item in answer["predictions"]]
    )
    assert set(logged["model_version"]) == {registry.version["demo"]}
    features = pd.DataFrame([payload(row) for _, row in rows.iloc[:40].iterrows()])
    expected = OnnxScorer(registry.onnx["retrained"]).predict(to_model_inputs(features))
    np.testing.assert_allclose(logged["shadow_probability"], expected, atol=1e-6)
    assert set(logged["shadow_model_version"]) == {registry.version["retrained"]}
