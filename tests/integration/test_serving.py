"""The online scoring service against a real uvicorn server on loopback, after `churn demo`.

The session's demo registry and warehouse serve the endpoint tests (whichever version is
champion by then: other tests may have promoted a retrained one). Hot reload and broken
artefacts use a private MLflow store holding the demo's ONNX file, a second model trained
here with another seed, and deliberately unusable versions, so moving its alias cannot
disturb other tests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from churn_assets.ml import tracking
from churn_assets.ml.artifacts import ONNX_FILE
from churn_assets.ml.bands import RiskBands
from churn_assets.ml.champion import CHAMPION, fetch_version
from churn_assets.ml.export import OnnxScorer, sha256_file
from churn_assets.ml.features import CATEGORICAL_FEATURE, NUMERIC_FEATURES, to_model_inputs
from churn_assets.policy import Policy
from churn_assets.serving.app import create_app
from churn_assets.serving.features import InMemoryFeatureSource, WarehouseFeatureSource
from churn_assets.serving.model_store import ChampionHolder, mlflow_resolver
from churn_assets.serving.schemas import MAX_BATCH_ITEMS
from churn_assets.serving.server import BackgroundServer
from churn_assets.settings import Settings, load_settings
from tests.integration.serving_support import WAIT_SECONDS, Registry, payload, wait_until

pytestmark = pytest.mark.integration

FEATURE_COLUMNS = (*NUMERIC_FEATURES, CATEGORICAL_FEATURE)


def _expected(scorer: OnnxScorer, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
    return scorer.predict(to_model_inputs(frame)).astype(np.float64)


def _canonical_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- session demo: settings, rows, champion -------------------------------------------


@pytest.fixture(scope="module")
def champion(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str, OnnxScorer]:
    """(version, sha256, scorer) of the session champion, fetched independently of the
    service so the comparison does not trust the code under test."""
    uri = demo_settings.resolved_tracking_uri
    version = tracking.alias_version(uri, CHAMPION)
    assert version is not None
    files = fetch_version(uri, version, tmp_path_factory.mktemp("champion"))
    assert files.gates_passed, files.gate_problem
    return version, sha256_file(files.onnx_path), OnnxScorer(files.onnx_path)


@pytest.fixture(scope="module")
def server(holder: ChampionHolder, source: WarehouseFeatureSource) -> Iterator[str]:
    with BackgroundServer(create_app(holder, source, None)) as running:
        yield running.url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


# --- bands ----------------------------------------------------------------------------

BANDS = RiskBands.from_policy(Policy())
MEDIUM_FROM, HIGH_FROM = BANDS.medium_from, BANDS.high_from


def risk_band(probability: float) -> str:
    return BANDS.band(probability)


@pytest.mark.parametrize(
    ("probability", "band"),
    [
        (0.0, "low"),
        (np.nextafter(MEDIUM_FROM, 0.0), "low"),
        (MEDIUM_FROM, "medium"),
        (np.nextafter(HIGH_FROM, 0.0), "medium"),
        (HIGH_FROM, "high"),
        (1.0, "high"),
    ],
)
def test_risk_band_edges_are_inclusive_from_below(probability: float, band: str) -> None:
    assert risk_band(float(probability)) == band


@pytest.mark.parametrize("probability", [-0.01, 1.01, float("nan")])
def test_risk_band_rejects_impossible_probabilities(probability: float) -> None:
    with pytest.raises(ValueError, match="must be in"):
        risk_band(probability)


# --- the holder on the real MLflow path ----------------------------------------------


def test_holder_loads_the_champion_registered_in_the_demo_store(
    demo_settings: Settings, champion: tuple[str, str, OnnxScorer]
) -> None:
    uri = load_settings().resolved_tracking_uri  # the autouse env: the session's CHURN_HOME
    assert uri == demo_settings.resolved_tracking_uri
    holder = ChampionHolder.from_mlflow(uri)
    assert holder.model is None
    assert holder.refresh() is True
    model = holder.model
    assert model is not None
    version, sha256, _ = champion
    registered = MlflowClient(uri).get_model_version(tracking.REGISTERED_MODEL_NAME, version)
    assert (model.name, model.version) == (tracking.REGISTERED_MODEL_NAME, version)
    assert model.sha256 == sha256 == registered.tags[tracking.TAG_ONNX_SHA256]
    # the alias has not moved: nothing to reload, and the refresh counts as a success
    assert holder.refresh() is False
    assert holder.model is model
    assert holder.state().last_error is None


# --- endpoints ------------------------------------------------------------------------


def _assert_envelope(response: httpx.Response, champion: tuple[str, str, OnnxScorer]) -> None:
    body = response.json()
    version, sha256, _ = champion
    assert body["model_name"] == tracking.REGISTERED_MODEL_NAME
    assert (body["model_version"], body["model_sha256"]) == (version, sha256)
    assert response.headers["X-Request-ID"] == body["request_id"]
    assert uuid.UUID(body["request_id"]).version == 4
    assert body["scored_at"].endswith("Z")  # UTC, ISO 8601
    assert datetime.fromisoformat(body["scored_at"]) <= datetime.now(UTC)


def test_predict_by_customer_id_scores_the_warehouse_row(
    client: httpx.Client, rows: pd.DataFrame, champion: tuple[str, str, OnnxScorer]
) -> None:
    sample = rows.iloc[[0, len(rows) // 2, len(rows) - 1]]
    expected = _expected(champion[2], sample)
    for (_, row), probability in zip(sample.iterrows(), expected, strict=True):
        response = client.post("/predict", json={"customer_id": row["customer_id"]})
        assert response.status_code == 200, response.text
        _assert_envelope(response, champion)
        body = response.json()
        assert body["customer_id"] == row["customer_id"]
        assert body["features"] == payload(row)
        assert body["features_as_of"] == str(row["as_of"])
        assert body["input_hash"] == _canonical_hash(payload(row))
        assert body["churn_probability"] == pytest.approx(probability, abs=1e-6)
        assert body["risk_band"] == risk_band(body["churn_probability"])


def test_predict_by_features_scores_them_and_hashes_them(
    client: httpx.Client, rows: pd.DataFrame, champion: tuple[str, str, OnnxScorer]
) -> None:
    row = rows.iloc[3]
    expected = _expected(champion[2], rows.iloc[[3]])[0]
    first = client.post("/predict", json={"features": payload(row)})
    second = client.post("/predict", json={"features": payload(row)})
    assert first.status_code == second.status_code == 200, first.text
    _assert_envelope(first, champion)
    body = first.json()
    assert body["customer_id"] is None and body["features_as_of"] is None
    assert body["churn_probability"] == pytest.approx(expected, abs=1e-6)
    # same features, same hash (key order of the request does not matter); new request id
    assert body["input_hash"] == _canonical_hash(payload(row))
    assert second.json()["input_hash"] == body["input_hash"]
    assert second.json()["request_id"] != body["request_id"]
    reordered = dict(reversed(list(payload(row).items())))
    third = client.post("/predict", json={"features": reordered})
    assert third.json()["input_hash"] == body["input_hash"]


def test_predict_batch_scores_ids_and_features_in_order(
    client: httpx.Client, rows: pd.DataFrame, champion: tuple[str, str, OnnxScorer]
) -> None:
    by_id, by_features = rows.iloc[:40], rows.iloc[40:80]
    items = [{"customer_id": c} for c in by_id["customer_id"]]
    items += [{"features": payload(r)} for _, r in by_features.iterrows()]
    items = items[::2] + items[1::2]  # interleave the two kinds
    order = list(range(80))
    order = order[::2] + order[1::2]
    expected = _expected(champion[2], rows.iloc[:80])[order]

    response = client.post("/predict/batch", json={"items": items})
    assert response.status_code == 200, response.text
    _assert_envelope(response, champion)
    body = response.json()
    assert body["count"] == len(items) == len(body["predictions"])
    got = [p["churn_probability"] for p in body["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert [p["customer_id"] for p in body["predictions"]] == [i.get("customer_id") for i in items]
    payloads = [payload(rows.iloc[i]) for i in order]
    assert [p["input_hash"] for p in body["predictions"]] == [_canonical_hash(p) for p in payloads]
    assert body["input_hash"] == _canonical_hash(payloads)
    assert [p["risk_band"] for p in body["predictions"]] == [risk_band(p) for p in got]


def test_predict_batch_rejects_more_than_the_maximum_items(client: httpx.Client) -> None:
    items = [{"customer_id": "C0000001"}] * (MAX_BATCH_ITEMS + 1)
    response = client.post("/predict/batch", json={"items": items})
    assert response.status_code == 422
    assert any(error["loc"][-1] == "items" for error in response.json()["detail"])


def test_health_reports_the_loaded_model(
    client: httpx.Client, champion: tuple[str, str, OnnxScorer]
) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert (body["model"]["version"], body["model"]["sha256"]) == champion[:2]
    assert body["last_error"] is None
    assert datetime.fromisoformat(body["last_refresh_at"]) <= datetime.now(UTC)


def test_model_describes_the_served_version(
    client: httpx.Client, champion: tuple[str, str, OnnxScorer]
) -> None:
    body = client.get("/model").json()
    assert body["name"] == tracking.REGISTERED_MODEL_NAME
    assert (body["version"], body["sha256"]) == champion[:2]
    assert datetime.fromisoformat(body["loaded_at"]) <= datetime.now(UTC)


def test_openapi_documents_every_endpoint_and_the_feature_schema(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/model"} <= set(spec["paths"])
    features = spec["components"]["schemas"]["Features"]
    assert set(features["properties"]) == set(FEATURE_COLUMNS)
    assert features["properties"]["email_domain_class"]["enum"] == [
        "free",
        "business",
        "education",
        "unknown",
    ]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def _valid_features(rows: pd.DataFrame) -> dict[str, Any]:
    return payload(rows.iloc[0])


def _without(features: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in features.items() if k != name}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda f: {"features": {**f, "total_revenue_90d": -5.0}}, "total_revenue_90d"),
        (lambda f: {"features": {**f, "email_domain_class": "corporate"}}, "email_domain_class"),
        (lambda f: {"features": {**f, "favourite_colour": "red"}}, "favourite_colour"),
        (lambda f: {"features": _without(f, "cart_diversity")}, "cart_diversity"),
        (lambda f: {"features": f, "customer_id": "C0000001"}, "customer_id"),
        (lambda f: {}, "customer_id"),
    ],
    ids=["negative", "unknown_class", "unknown_field", "missing_field", "both", "neither"],
)  # fmt: skip
def test_predict_validation_errors_name_the_field(
    client: httpx.Client,
    rows: pd.DataFrame,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    field: str,
) -> None:
    response = client.post("/predict", json=change(_valid_features(rows)))
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(field in error["loc"] or field in error["msg"] for error in errors), errors
    # the same rule holds for a batch item
    batch = client.post("/predict/batch", json={"items": [change(_valid_features(rows))]})
    assert batch.status_code == 422
    assert field in batch.text


def test_predict_unknown_customer_is_404(client: httpx.Client) -> None:
    response = client.post("/predict", json={"customer_id": "NO-SUCH-CUSTOMER"})
    assert response.status_code == 404
    assert "'NO-SUCH-CUSTOMER' not found in marts.current_features" in response.json()["detail"]
    assert response.headers.get("X-Request-ID")


def test_predict_batch_with_an_unknown_customer_is_404_naming_it(
    client: httpx.Client, rows: pd.DataFrame
) -> None:
    items = [{"customer_id": rows["customer_id"].iloc[0]}, {"customer_id": "NO-SUCH-CUSTOMER"}]
    response = client.post("/predict/batch", json={"items": items})
    assert response.status_code == 404
    assert "1 customer(s) not found" in response.json()["detail"]
    assert "NO-SUCH-CUSTOMER" in response.json()["detail"]


def test_api_key_guards_every_endpoint_but_health(
    holder: ChampionHolder, source: WarehouseFeatureSource, rows: pd.DataFrame
) -> None:
    request = {"features": _valid_features(rows)}
    with (
        BackgroundServer(create_app(holder, source, "s3cret")) as running,
        httpx.Client(base_url=running.url) as client,
    ):
        assert client.post("/predict", json=request).status_code == 401
        wrong = client.post("/predict", json=request, headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401
        assert "X-API-Key" in wrong.json()["detail"]
        key = {"X-API-Key": "s3cret"}
        assert client.post("/predict", json=request, headers=key).status_code == 200
        batch = {"items": [request]}
        assert client.post("/predict/batch", json=batch).status_code == 401
        assert client.post("/predict/batch", json=batch, headers=key).status_code == 200
        for path in ("/model", "/metrics", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=key).status_code == 200, path
        assert client.get("/health").status_code == 200


def test_warehouse_feature_source_serves_concurrent_lookups(
    embedded_url: str, rows: pd.DataFrame
) -> None:
    # more threads than connections: lookups must queue for a connection, never fail
    source = WarehouseFeatureSource(embedded_url, max_connections=2)
    ids = list(rows["customer_id"].iloc[:50])
    expected = {r["customer_id"]: payload(r) for _, r in rows.iloc[:50].iterrows()}
    mismatches: list[str] = []
    errors: list[BaseException] = []

    def lookups(offset: int) -> None:
        try:
            for n in range(50):
                customer_id = ids[(offset + n) % len(ids)]
                row = source.get(customer_id)
                if row is None or {k: row[k] for k in FEATURE_COLUMNS} != expected[customer_id]:
                    mismatches.append(customer_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=lookups, args=(i * 7,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_SECONDS)
        assert not errors and not mismatches
        assert source.get("NO-SUCH-CUSTOMER") is None
        many = source.get_many([*ids[:3], "NO-SUCH-CUSTOMER"])
        assert sorted(many) == sorted(ids[:3])
    finally:
        source.close()


# --- hot reload -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    row: int
    version: str
    sha256: str
    probability: float
    sent_after_swap: bool  # the new model was already serving when the request was sent
    answered_before_move: bool  # the alias had not started moving when the answer came


def test_hot_reload_under_concurrent_requests_drops_and_mixes_nothing(
    registry: Registry, rows: pd.DataFrame
) -> None:
    n_clients, min_requests, max_requests = 4, 200, 2_000
    sample = rows.iloc[:64]
    payloads = [payload(r) for _, r in sample.iterrows()]
    versions = {registry.version[label]: label for label in ("demo", "retrained")}
    expected = {
        v: _expected(OnnxScorer(registry.onnx[label]), sample) for v, label in versions.items()
    }
    shas = {v: sha256_file(registry.onnx[label]) for v, label in versions.items()}
    old, new = registry.version["demo"], registry.version["retrained"]
    assert np.abs(expected[old] - expected[new]).max() > 1e-3  # the swap is observable

    holder = registry.holder(poll_seconds=0.05)
    moving, swapped = threading.Event(), threading.Event()
    outcomes: list[list[Outcome]] = [[] for _ in range(n_clients)]
    failures: list[str] = []
    completed = 0
    count_lock = threading.Lock()

    def client_loop(index: int, base_url: str) -> None:
        nonlocal completed
        sent_after_swap = 0
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for n in range(max_requests):
                row = (index * 17 + n) % len(payloads)
                after_swap = swapped.is_set()
                try:
                    response = client.post("/predict", json={"features": payloads[row]})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text}")
                    continue
                body = response.json()
                outcomes[index].append(
                    Outcome(
                        row,
                        body["model_version"],
                        body["model_sha256"],
                        body["churn_probability"],
                        after_swap,
                        not moving.is_set(),
                    )
                )
                with count_lock:
                    completed += 1
                sent_after_swap += after_swap
                if n + 1 >= min_requests and sent_after_swap >= 20:
                    break

    with holder, BackgroundServer(create_app(holder, InMemoryFeatureSource({}), None)) as running:
        threads = [
            threading.Thread(target=client_loop, args=(i, running.url)) for i in range(n_clients)
        ]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: completed >= 100, "the first 100 answers")
            moving.set()
            registry.point_champion("retrained")
            wait_until(
                lambda: getattr(holder.model, "version", None) == registry.version["retrained"],
                "the poller to load the new champion",
            )
            swapped.set()
        finally:
            swapped.set()  # never leave clients looping to max_requests on a failure above
            for thread in threads:
                thread.join(WAIT_SECONDS * 2)
    assert not holder.polling

    assert failures == []
    for mine in outcomes:
        seen = [o.version for o in mine]
        assert seen[0] == old and seen[-1] == new
        assert seen == sorted(seen, key=lambda v: v == new)  # A..A B..B: never back
        for o in mine:
            assert o.sha256 == shas[o.version]
            assert o.probability == pytest.approx(expected[o.version][o.row], abs=1e-6)
            if o.sent_after_swap:
                assert o.version == new
            if o.answered_before_move:
                assert o.version == old


# --- failures keep the old model serving ---------------------------------------------


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("hash_mismatch", "does not match the sha256 it was gated with"),
        ("failed_gates", "failed gate(s): holdout ROC AUC"),
        ("not_onnx", "INVALID_PROTOBUF"),
    ],
)
def test_unusable_champion_keeps_the_old_model_serving(
    registry: Registry, rows: pd.DataFrame, label: str, message: str
) -> None:
    holder = registry.holder()
    demo = registry.version["demo"]
    expected = _expected(OnnxScorer(registry.onnx["demo"]), rows.iloc[[0]])[0]
    request = {"features": payload(rows.iloc[0])}
    with (
        BackgroundServer(create_app(holder, InMemoryFeatureSource({}), None)) as running,
        httpx.Client(base_url=running.url) as client,
    ):
        registry.point_champion(label)
        assert holder.refresh() is False

        health = client.get("/health")
        assert health.status_code == 200  # degraded, but still serving
        body = health.json()
        assert body["status"] == "degraded"
        assert body["model"]["version"] == demo
        assert body["last_error"]["version"] == registry.version[label]
        assert message in body["last_error"]["message"]
        predicted = client.post("/predict", json=request).json()
        assert predicted["model_version"] == demo
        assert predicted["churn_probability"] == pytest.approx(expected, abs=1e-6)

        # a later successful refresh (the alias moved on to a good version) clears the error
        registry.point_champion("retrained")
        assert holder.refresh() is True
        body = client.get("/health").json()
        assert body["status"] == "ok" and body["last_error"] is None
        assert body["model"]["version"] == registry.version["retrained"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raise(exc: BaseException) -> Callable[[str, Path], Path]:
    def fetch(version: str, workdir: Path) -> Path:
        raise exc

    return fetch


@pytest.mark.parametrize(
    ("resolver", "fetcher", "attempted", "message"),
    [
        (
            lambda: mlflow_resolver(f"http://127.0.0.1:{_closed_port()}"),
            lambda: _raise(AssertionError("not reached")),
            None,
            "RegistryUnavailable",
        ),
        (lambda: lambda: None, lambda: _raise(AssertionError("not reached")), None, "alias"),
        (lambda: lambda: "9", lambda: _raise(OSError("disk full")), "9", "OSError: disk full"),
    ],
    ids=["registry_unreachable", "alias_missing", "download_fails"],
)
def test_refresh_failures_are_recorded_and_do_not_unload_the_model(
    demo_model_dir: Path,
    resolver: Callable[[], Callable[[], str | None]],
    fetcher: Callable[[], Callable[[str, Path], Path]],
    attempted: str | None,
    message: str,
) -> None:
    holder = ChampionHolder.from_file(
        demo_model_dir / ONNX_FILE, version="1", resolver=resolver(), fetcher=fetcher()
    )
    model = holder.model
    assert holder.refresh() is False
    state = holder.state()
    assert state.model is model
    assert state.last_error is not None
    assert state.last_error.version == attempted
    assert message in state.last_error.message


def test_poller_follows_the_resolver_and_stops_cleanly(registry: Registry, tmp_path: Path) -> None:
    champion = {"version": "1"}
    retrained = tmp_path / ONNX_FILE
    shutil.copyfile(registry.onnx["retrained"], retrained)

    def fetch(version: str, workdir: Path) -> Path:
        return retrained

    holder = ChampionHolder.from_file(
        registry.onnx["demo"],
        version="1",
        resolver=lambda: champion["version"],
        fetcher=fetch,
        poll_seconds=0.02,
    )
    holder.start()
    assert holder.polling
    champion["version"] = "2"
    wait_until(lambda: getattr(holder.model, "version", None) == "2", "the poller")
    holder.stop()
    assert not holder.polling
    model = holder.model
    assert model is not None and model.sha256 == sha256_file(retrained)


def test_no_model_yet_answers_503_and_health_says_why() -> None:
    holder = ChampionHolder(lambda: None, _raise(AssertionError("not reached")))
    holder.refresh()
    with (
        BackgroundServer(create_app(holder, InMemoryFeatureSource({}), None)) as running,
        httpx.Client(base_url=running.url) as client,
    ):
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded" and health.json()["model"] is None
        assert "champion alias" in health.json()["last_error"]["message"]
        assert client.get("/model").status_code == 503
        features = dict.fromkeys(NUMERIC_FEATURES, 1.0) | {CATEGORICAL_FEATURE: "free"}
        response = client.post("/predict", json={"features": features})
        assert response.status_code == 503
        assert "no model loaded" in response.json()["detail"]


def test_a_holder_takes_another_holders_model_of_the_same_version(demo_model_dir: Path) -> None:
    champion = ChampionHolder.from_file(demo_model_dir / ONNX_FILE, version="1")
    versions = {"challenger": "1"}
    challenger = ChampionHolder(
        lambda: versions["challenger"],
        _raise(AssertionError("the same version is not downloaded again")),
        alias="challenger",
        reuse=lambda: champion.model,
    )
    assert challenger.refresh() is True
    assert challenger.model is champion.model  # one session, not two
    versions["challenger"] = "2"  # another version: the fetcher is asked (and fails here)
    assert challenger.refresh() is False
    state = challenger.state()
    assert state.model is champion.model and state.last_error is not None
    assert "not downloaded again" in state.last_error.message
