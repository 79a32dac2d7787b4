"""The scoring API under hostile input, against a real uvicorn server and the real embedded
warehouse after `churn demo` (regression tests for a hostile review of `churn serve`).

Each regression test names the bug it pins down. Nothing here asserts a duration: where
the bug was a stall, the test holds the slow step open and checks what can happen
meanwhile (timings belong in benchmarks/).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import psycopg2
import pytest
from click.testing import CliRunner
from starlette.types import Receive, Scope, Send

from churn_assets.app.cli import main
from churn_assets.limits import MAX_ID_LENGTH
from churn_assets.ml.features import CATEGORICAL_FEATURE, NUMERIC_FEATURES
from churn_assets.serving.app import create_app
from churn_assets.serving.connections import PROTOCOLS, HttpParser, header_timeout_protocol
from churn_assets.serving.features import FEATURE_TABLE, WarehouseFeatureSource
from churn_assets.serving.guards import (
    MAX_BATCH_BODY_BYTES,
    MAX_BODY_BYTES,
    MAX_ERRORS_SHOWN,
    MAX_EXCERPT_CHARS,
)
from churn_assets.serving.model_store import ChampionHolder
from churn_assets.serving.schemas import MAX_BATCH_ITEMS
from churn_assets.serving.server import BackgroundServer
from tests.integration.serving_support import WAIT_SECONDS, payload, wait_until

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def features(rows: pd.DataFrame) -> dict[str, Any]:
    return payload(rows.iloc[0])


@pytest.fixture(scope="module")
def server(holder: ChampionHolder, embedded_url: str) -> Iterator[str]:
    source = WarehouseFeatureSource(embedded_url)
    with BackgroundServer(create_app(holder, source, None)) as running:
        yield running.url
    source.close()


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=WAIT_SECONDS) as client:
        yield client


# --- ids: one NUL broke every later lookup ---------------------------------------------


def test_predict_with_a_nul_customer_id_is_422_and_later_id_lookups_still_work(
    holder: ChampionHolder, embedded_url: str, rows: pd.DataFrame
) -> None:
    # Bug: {"customer_id": "x\u0000"} got 503 and leaked the pooled connection (psycopg2
    # raises ValueError for NUL, which _fetch did not catch), so every later id lookup got
    # 503 "connection pool exhausted" until a restart, while /health said ok.
    ids = list(rows["customer_id"].iloc[:100])
    source = WarehouseFeatureSource(embedded_url)  # one connection: one leak shows at once
    try:
        with (
            BackgroundServer(create_app(holder, source, None)) as running,
            httpx.Client(base_url=running.url, timeout=WAIT_SECONDS) as client,
        ):
            nul = client.post("/predict", json={"customer_id": "x\u0000"})
            assert nul.status_code == 422, nul.text
            [error] = nul.json()["detail"]
            assert error["loc"] == ["body", "customer_id"]
            assert "control characters" in error["msg"] and "U+0000" in error["msg"]
            items = [{"customer_id": ids[0]}, {"customer_id": "y\u0000"}]
            batch_nul = client.post("/predict/batch", json={"items": items})
            assert batch_nul.status_code == 422, batch_nul.text
            assert [e["loc"] for e in batch_nul.json()["detail"]] == [
                ["body", "items", 1, "customer_id"]
            ]

            statuses = [client.post("/predict", json={"customer_id": c}).status_code for c in ids]
            assert statuses == [200] * len(ids)
            batch = client.post("/predict/batch", json={"items": [{"customer_id": c} for c in ids]})
            assert batch.status_code == 200, batch.text
            assert batch.json()["count"] == len(ids)
            health = client.get("/health").json()
            assert health["status"] == "ok"
            assert health["feature_store"]["status"] == "ok"
    finally:
        source.close()


def test_warehouse_feature_source_survives_a_query_the_driver_refuses(
    embedded_url: str, rows: pd.DataFrame
) -> None:
    # Bug: a ValueError from psycopg2 (NUL in a parameter) left `_fetch` without returning
    # the connection to the pool; with one connection, the next lookup could never get one.
    source = WarehouseFeatureSource(embedded_url, max_connections=1)
    try:
        for _ in range(3):  # more refusals than the pool has connections
            with pytest.raises(ValueError, match="NUL"):
                source.get("x\x00")
            with pytest.raises(ValueError, match="NUL"):
                source.get_many(["C0000001", "x\x00"])
        customer_id = rows["customer_id"].iloc[0]
        row = source.get(customer_id)
        assert row is not None and row["customer_id"] == customer_id
        # the caller's bad id is not a warehouse failure: the store still counts as available
        state = source.state()
        assert state.available and state.last_error is None
    finally:
        source.close()


@pytest.mark.parametrize(
    ("customer_id", "reason"),
    [
        ("x\u0000", "U+0000"),
        ("C00\t01", "U+0009"),
        ("C0001\n", "U+000A"),
        ("\u007fC0001", "U+007F"),
        ("C\u00850001", "U+0085"),
        (" C0000001", "must not start or end with whitespace"),
        ("C0000001\u00a0", "must not start or end with whitespace"),
        ("   ", "must not be blank"),
        ("\ud800", "unicode"),
        ("x" * (MAX_ID_LENGTH + 1), f"at most {MAX_ID_LENGTH} characters"),
    ],
    ids=["nul", "tab", "newline", "del", "c1", "leading_space", "trailing_nbsp", "blank",
         "lone_surrogate", "too_long"],
)  # fmt: skip
def test_customer_id_no_warehouse_id_can_equal_is_422_with_the_reason(
    client: httpx.Client, features: dict[str, Any], customer_id: str, reason: str
) -> None:
    # Bug: such ids reached the driver (NUL: 503 and a leaked connection) or got a
    # misleading 404; they are refused at the edge, alone and as any batch item.
    # (The raw-data contract strips ids, and Postgres text cannot hold NUL.)
    single = client.post("/predict", content=json.dumps({"customer_id": customer_id}), headers=JSON)
    assert single.status_code == 422, single.text
    [error] = single.json()["detail"]
    assert error["loc"] == ["body", "customer_id"]
    assert reason in error["msg"]
    items = [{"features": features}, {"customer_id": customer_id}]
    batch = client.post("/predict/batch", content=json.dumps({"items": items}), headers=JSON)
    assert batch.status_code == 422, batch.text
    [error] = batch.json()["detail"]
    assert error["loc"] == ["body", "items", 1, "customer_id"]
    assert reason in error["msg"]


@pytest.mark.parametrize(
    "customer_id",
    ["x" * MAX_ID_LENGTH, "C 0000001", "kunde-ä€😀"],
    ids=["max_length", "inner_space", "unicode"],
)
def test_customer_id_the_warehouse_could_hold_is_looked_up(
    client: httpx.Client, customer_id: str
) -> None:
    response = client.post("/predict", json={"customer_id": customer_id})
    assert response.status_code == 404, response.text
    assert "not found in marts.current_features" in response.json()["detail"]


def test_health_reports_a_failing_feature_store_and_keeps_the_error_after_recovery(
    holder: ChampionHolder, fresh_database_url: str, features: dict[str, Any]
) -> None:
    # Bug: /health said "ok" while every customer_id lookup failed with 503.
    source = WarehouseFeatureSource(fresh_database_url)  # no marts.current_features yet
    try:
        with (
            BackgroundServer(create_app(holder, source, None)) as running,
            httpx.Client(base_url=running.url, timeout=WAIT_SECONDS) as client,
        ):
            healthy = client.get("/health").json()
            assert healthy["status"] == "ok"
            assert healthy["feature_store"] == {
                "status": "ok",
                "table": FEATURE_TABLE,
                "as_of": None,  # the pooled source holds no copy
                "rows": None,
                "refreshed_at": None,
                "last_error": None,
            }

            failed = client.post("/predict", json={"customer_id": "C0000001"})
            assert failed.status_code == 503
            assert "feature store unavailable" in failed.json()["detail"]
            health = client.get("/health")
            assert health.status_code == 200  # the model serves: requests by features work
            body = health.json()
            assert body["status"] == "degraded"
            store = body["feature_store"]
            assert store["status"] == "unavailable"
            assert (
                'relation "marts.current_features" does not exist' in store["last_error"]["message"]
            )
            assert client.post("/predict", json={"features": features}).status_code == 200

            _create_feature_table(fresh_database_url, "C0000001", features)
            assert client.post("/predict", json={"customer_id": "C0000001"}).status_code == 200
            recovered = client.get("/health").json()
            assert recovered["status"] == "ok"
            assert recovered["feature_store"]["status"] == "ok"
            assert recovered["feature_store"]["last_error"] == store["last_error"]  # for diagnosis
    finally:
        source.close()


def _create_feature_table(url: str, customer_id: str, features: dict[str, Any]) -> None:
    numeric = ", ".join(f"{name} double precision" for name in NUMERIC_FEATURES)
    columns = ("as_of", "customer_id", *NUMERIC_FEATURES, CATEGORICAL_FEATURE)
    values = ("2025-06-30", customer_id, *(features[n] for n in columns[2:]))
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("create schema marts")
            cur.execute(
                f"create table {FEATURE_TABLE} (as_of date, customer_id text, {numeric}, "
                f"{CATEGORICAL_FEATURE} text)"
            )
            placeholders = ", ".join(["%s"] * len(columns))
            cur.execute(
                f"insert into {FEATURE_TABLE} ({', '.join(columns)}) values ({placeholders})",
                values,
            )
    finally:
        conn.close()


# --- bodies: size limit, parsing off the event loop, short 422s ------------------------


@pytest.fixture
def parsed_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of everything `json.loads` parses in this process (server included)."""
    sizes: list[int] = []
    real_loads = json.loads

    def recording_loads(s: str | bytes | bytearray, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(s))
        return real_loads(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", recording_loads)
    return sizes


def _batch_body(features: dict[str, Any], size: int) -> bytes:
    """A JSON batch of valid feature items, at least ``size`` bytes long."""
    item = json.dumps({"features": features}).encode()
    count = size // (len(item) + 2) + 1
    return b'{"items": [' + b", ".join([item] * count) + b"]}"


def test_predict_batch_body_over_the_limit_is_413_before_it_is_parsed(
    client: httpx.Client, features: dict[str, Any], parsed_sizes: list[int]
) -> None:
    # Bug: a 45 MB batch was read, parsed and validated (9.4 s) and its 422 echoed all of it.
    body = _batch_body(features, 45 * 2**20)
    response = client.post("/predict/batch", content=body, headers=JSON)
    assert response.status_code == 413
    assert len(response.content) < 200
    assert response.json()["detail"] == (
        f"request body too large: {len(body):,} bytes; "
        f"/predict/batch accepts at most {MAX_BATCH_BODY_BYTES:,} bytes"
    )
    assert max(parsed_sizes, default=0) < 1_000  # only the 413 itself, on the client side
    assert client.get("/health").status_code == 200  # and the server answers the next one


def test_chunked_body_over_the_limit_is_413(
    client: httpx.Client, features: dict[str, Any], parsed_sizes: list[int]
) -> None:
    # Bug: no size limit at all; without Content-Length, the bytes must be counted.
    body = _batch_body(features, MAX_BATCH_BODY_BYTES + 1)

    def chunks(data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), 2**16):
            yield data[start : start + 2**16]

    response = client.post("/predict/batch", content=chunks(body), headers=JSON)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"request body too large: more than {MAX_BATCH_BODY_BYTES:,} bytes; "
        f"/predict/batch accepts at most {MAX_BATCH_BODY_BYTES:,} bytes"
    )
    single = json.dumps({"features": features}).encode() + b" " * MAX_BODY_BYTES
    response = client.post("/predict", content=chunks(single), headers=JSON)
    assert response.status_code == 413
    assert f"/predict accepts at most {MAX_BODY_BYTES:,} bytes" in response.json()["detail"]
    assert max(parsed_sizes, default=0) < 1_000


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_predict_body_of_exactly_the_limit_is_accepted_and_one_more_byte_is_not(
    client: httpx.Client, features: dict[str, Any], chunked: bool
) -> None:
    request = json.dumps({"features": features}).encode()
    at_limit = request + b" " * (MAX_BODY_BYTES - len(request))
    for body, status in ((at_limit, 200), (at_limit + b" ", 413)):
        content: bytes | Iterator[bytes] = iter([body[:100], body[100:]]) if chunked else body
        assert client.post("/predict", content=content, headers=JSON).status_code == status


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_feature_is_422_naming_the_field(
    client: httpx.Client, features: dict[str, Any], literal: str
) -> None:
    # Bug: NaN/Infinity inside `features` got a 500 (the 422 could not be serialised) and the
    # next request on that keep-alive connection was reset.
    text = json.dumps({"features": {**features, "order_frequency": 0.5}})
    text = text.replace('"order_frequency": 0.5', f'"order_frequency": {literal}')
    response = client.post("/predict", content=text, headers=JSON)
    assert response.status_code == 422, response.text
    assert len(response.content) < 300
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "features", "order_frequency"]
    assert error["msg"] == "Input should be a finite number"
    assert error["input"] == ("NaN" if literal == "NaN" else literal.replace("1e999", "Infinity"))
    # the same client (keep-alive connection) goes on working
    assert client.post("/predict", json={"features": features}).status_code == 200

    batch = client.post("/predict/batch", content='{"items": [' + text + "]}", headers=JSON)
    assert batch.status_code == 422, batch.text
    [error] = batch.json()["detail"]
    assert error["loc"] == ["body", "items", 0, "features", "order_frequency"]


def test_validation_errors_quote_a_short_excerpt_and_count_what_they_leave_out(
    client: httpx.Client, features: dict[str, Any]
) -> None:
    # Bug: a 422 echoed the whole offending input back (all 45 MB of a big batch).
    huge = client.post("/predict", json={"customer_id": "x" * 60_000})
    assert huge.status_code == 422
    assert len(huge.content) < 500
    [error] = huge.json()["detail"]
    assert error["input"] == "x" * MAX_EXCERPT_CHARS + "…"

    unknown_key = {"features": {**features, "k" * 50_000: 1}}
    response = client.post("/predict", json=unknown_key)
    assert response.status_code == 422 and len(response.content) < 1_000
    [error] = response.json()["detail"]
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == ["body", "features", "k" * MAX_EXCERPT_CHARS + "…"]

    too_many = client.post(
        "/predict/batch", json={"items": [{"features": features}] * (MAX_BATCH_ITEMS + 1)}
    )
    assert too_many.status_code == 422 and len(too_many.content) < 1_000
    [error] = too_many.json()["detail"]
    assert error["loc"] == ["body", "items"] and error["type"] == "too_long"

    bad = [{"features": {**features, "cart_diversity": -1}}] * 500
    many = client.post("/predict/batch", json={"items": bad})
    assert many.status_code == 422 and len(many.content) < 10_000
    body = many.json()
    assert [e["loc"][2] for e in body["detail"]] == list(range(MAX_ERRORS_SHOWN))
    assert body["errors_not_shown"] == len(bad) - MAX_ERRORS_SHOWN

    not_json = client.post("/predict/batch", content=b'{"items": [' + b"x" * 100_000, headers=JSON)
    assert not_json.status_code == 422 and len(not_json.content) < 500
    assert not_json.json()["detail"][0]["type"] == "json_invalid"


def test_a_small_request_is_answered_while_a_maximal_batch_is_being_parsed(
    server: str,
    client: httpx.Client,
    rows: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bug: FastAPI parsed and validated the batch body on the event loop, so one large batch
    # stalled every other request for as long as that took (8.2 s behind a 45 MB body).
    # The batch's JSON parse is held open here: if it ran on the event loop, the small
    # request could not be answered until it was let go.
    real_loads = json.loads
    parsing, release = threading.Event(), threading.Event()

    def held_loads(s: str | bytes | bytearray, *args: Any, **kwargs: Any) -> Any:
        if len(s) > 1_000_000 and not release.is_set():  # only the batch below
            parsing.set()
            release.wait(WAIT_SECONDS)
        return real_loads(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", held_loads)
    payloads = [payload(row) for _, row in rows.iterrows()]
    items = [{"features": payloads[n % len(payloads)]} for n in range(MAX_BATCH_ITEMS)]
    answers: dict[str, httpx.Response] = {}

    def send_batch() -> None:
        with httpx.Client(base_url=server, timeout=WAIT_SECONDS * 2) as other:
            answers["batch"] = other.post("/predict/batch", json={"items": items})

    sender = threading.Thread(target=send_batch)
    sender.start()
    try:
        assert parsing.wait(WAIT_SECONDS), "the batch never reached the JSON parser"
        small = client.post("/predict", json={"features": payloads[0]}, timeout=10)
        answered_while_held = not release.is_set()
    finally:
        release.set()
        sender.join(WAIT_SECONDS * 2)
    assert small.status_code == 200 and answered_while_held
    assert answers["batch"].status_code == 200, answers["batch"].text[:500]
    assert answers["batch"].json()["count"] == MAX_BATCH_ITEMS


def test_openapi_documents_the_batch_body_the_route_parses_itself(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict/batch"]["post"]["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/BatchRequest"}
    batch = spec["components"]["schemas"]["BatchRequest"]
    assert batch["properties"]["items"]["maxItems"] == MAX_BATCH_ITEMS
    assert batch["properties"]["items"]["items"] == {"$ref": "#/components/schemas/PredictRequest"}
    assert "413" in spec["paths"]["/predict/batch"]["post"]["responses"]


# --- startup: an unreachable warehouse ----------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    ["postgresql", "mysql"],  # mysql: libpq's message quotes the whole URL, password included
)
def test_serve_with_an_unreachable_warehouse_fails_in_one_line_saying_what_to_do(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    # Bug: `churn serve` with the warehouse down printed libpq's multi-line message (a
    # traceback in the review) without saying what to do, and could echo the password.
    # The warehouse is checked before the champion, so this needs no model.
    port = _closed_port()
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", f"{scheme}://churn:s3cret@127.0.0.1:{port}/wh")
    result = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException, not a crash
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"Error: cannot connect to the warehouse at {scheme}://churn:***@")
    assert f"127.0.0.1:{port}/wh" in line
    assert "Start it, or set CHURN_WAREHOUSE_URL to a running Postgres" in line
    assert "s3cret" not in result.output


# --- connections that never finish a request ---------------------------------------

HELD = 2_000
# What every other held connection sends: a request line and half its headers.
PARTIAL_REQUEST = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"


@pytest.fixture
def open_files() -> Iterator[None]:
    """Room for both ends of ``HELD`` connections: the server runs in this process too."""
    needed = 2 * HELD + 1_024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(
                f"holding {HELD:,} connections needs {needed:,} open files; the hard limit "
                f"is {hard:,} (raise it, e.g. ulimit -Hn {needed})"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _hold(url: str, count: int) -> list[socket.socket]:
    """``count`` connections that never finish a request: even ones send nothing, odd ones
    ``PARTIAL_REQUEST``. Stops early, without error, when this process runs out of fds."""
    host, port = url.removeprefix("http://").split(":")
    held: list[socket.socket] = []
    try:
        for n in range(count):
            sock = socket.create_connection((host, int(port)), timeout=WAIT_SECONDS)
            held.append(sock)
            if n % 2:
                sock.sendall(PARTIAL_REQUEST)
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            _close(held)
            raise
    return held


def _close(held: list[socket.socket]) -> None:
    for sock in held:
        sock.close()


def _still_open(held: list[socket.socket]) -> list[socket.socket]:
    """The connections the server has not closed yet (nothing to read, no EOF)."""
    with selectors.DefaultSelector() as selector:  # epoll: select() stops at fd 1024
        for sock in held:
            selector.register(sock, selectors.EVENT_READ)
        ended = {key.fileobj for key, _ in selector.select(timeout=0)}
    return [sock for sock in held if sock not in ended]


def _wait_until_closed_by_the_server(
    held: list[socket.socket], selector: selectors.BaseSelector | None = None
) -> None:
    """Wait (up to ``WAIT_SECONDS``) for EOF, or a reset, on every connection in ``held``;
    none may have been answered. ``selector``: one made while fds were still to be had."""
    with selector or selectors.DefaultSelector() as selector:
        for sock in held:
            selector.register(sock, selectors.EVENT_READ)
        waiting = len(held)
        deadline = time.monotonic() + WAIT_SECONDS
        while waiting:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{waiting:,} of {len(held):,} connections that never finished a request "
                    f"are still open after {WAIT_SECONDS:.0f} s"
                )
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                # a reset: closed with our bytes unread, or reset before it was accepted
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(1024) == b"", "the server answered half a request"
                selector.unregister(sock)
                waiting -= 1


def _read_response(sock: socket.socket) -> bytes:
    """Read one whole response with a Content-Length from ``sock``; its status line."""
    with sock.makefile("rb") as response:
        status = response.readline()
        length = next(
            int(line.split(b":")[1])
            for line in iter(response.readline, b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        response.read(length)
    return status


def _no_keep_alive(url: str, timeout: float = WAIT_SECONDS) -> httpx.Client:
    """A client that opens a new connection per request, as a fresh visitor does."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.Client(base_url=url, timeout=timeout, limits=limits)


@pytest.mark.usefixtures("open_files")
def test_by_id_requests_answer_while_2000_connections_hold_back_their_request(
    holder: ChampionHolder, embedded_url: str, rows: pd.DataFrame
) -> None:
    # Issue 24: 1,900 idle or half-sent connections pushed the by-id p99 from 3.9 to 34.7 ms
    # (benchmarks/RESULTS.md). Whatever the latency, they must not stop the service: every
    # request by id, each on a new connection, is answered while all 2,000 are held (the
    # header timeout is set far beyond this test, so none is closed meanwhile).
    ids = list(rows["customer_id"].iloc[:50])
    source = WarehouseFeatureSource(embedded_url)
    app = create_app(holder, source, None)
    held: list[socket.socket] = []
    try:
        with BackgroundServer(app, header_timeout=10 * WAIT_SECONDS) as running:
            held = _hold(running.url, HELD)
            assert len(held) == HELD
            wait_until(lambda: running.open_connections >= HELD, "the server to accept them")
            with _no_keep_alive(running.url) as client:
                statuses = [
                    client.post("/predict", json={"customer_id": c}).status_code for c in ids
                ]
            assert statuses == [200] * len(ids)
            assert running.open_connections >= HELD
            assert len(_still_open(held)) == HELD
    finally:
        _close(held)
        source.close()


@pytest.mark.usefixtures("open_files")
def test_connections_that_send_no_complete_request_are_closed_after_the_header_timeout(
    holder: ChampionHolder, embedded_url: str, rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 24: uvicorn's keep-alive timeout covers only silence after a response; a
    # connection that sent nothing, or half a header, or one byte of its next request,
    # stayed open for good. A request whose headers were complete is never cut, however
    # long its answer takes: a batch is held in its JSON parse past the timeout here.
    ids = list(rows["customer_id"].iloc[:10])
    real_loads = json.loads
    parsing, release = threading.Event(), threading.Event()

    def held_loads(s: str | bytes | bytearray, *args: Any, **kwargs: Any) -> Any:
        text = s.decode("utf-8", "replace") if isinstance(s, bytes | bytearray) else s
        if not release.is_set() and not parsing.is_set() and '"items"' in text:
            parsing.set()
            release.wait(WAIT_SECONDS * 2)
        return real_loads(s, *args, **kwargs)

    source = WarehouseFeatureSource(embedded_url)
    app = create_app(holder, source, None)
    held: list[socket.socket] = []
    answers: dict[str, httpx.Response] = {}
    try:
        with BackgroundServer(app, header_timeout=1.0) as running:

            def send_batch() -> None:
                with _no_keep_alive(running.url, timeout=WAIT_SECONDS * 3) as other:
                    items = [{"customer_id": c} for c in ids]
                    answers["batch"] = other.post("/predict/batch", json={"items": items})

            monkeypatch.setattr(json, "loads", held_loads)
            sender = threading.Thread(target=send_batch)
            sender.start()
            try:
                assert parsing.wait(WAIT_SECONDS), "the batch never reached the JSON parser"
                # one finished request, then one byte of the next, on a kept-alive connection
                host, port = running.url.removeprefix("http://").split(":")
                dribbler = socket.create_connection((host, int(port)), timeout=WAIT_SECONDS)
                held.append(dribbler)
                dribbler.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert _read_response(dribbler).startswith(b"HTTP/1.1 200")
                dribbler.sendall(b"G")
                held += _hold(running.url, HELD)
                assert len(held) == HELD + 1
                _wait_until_closed_by_the_server(held)
                batch_still_waiting = not release.is_set() and sender.is_alive()
            finally:
                release.set()
                sender.join(WAIT_SECONDS * 2)
            assert batch_still_waiting  # its connection outlived the held ones
            assert answers["batch"].status_code == 200, answers["batch"].text[:500]
            assert answers["batch"].json()["count"] == len(ids)
            with _no_keep_alive(running.url) as client:
                after = client.post("/predict", json={"customer_id": ids[0]})
            assert after.status_code == 200, after.text
    finally:
        _close(held)
        source.close()


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_header_timeout_closes_what_sends_no_complete_request_with_either_parser(
    parser: HttpParser,
) -> None:
    # uvicorn picks httptools when installed, else h11: the deadline must hold with both,
    # and never cut a request whose headers arrived, however long its answer takes.
    if parser not in PROTOCOLS:
        pytest.skip(f"{parser} is not installed")
    release = threading.Event()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while scope["path"] == "/slow" and not release.is_set():
            await asyncio.sleep(0.01)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    http = header_timeout_protocol(1.0, parser)
    with BackgroundServer(slow_app, http=http) as running:
        host, port = running.url.removeprefix("http://").split(":")

        def request(path: str) -> socket.socket:
            sock = socket.create_connection((host, int(port)), timeout=WAIT_SECONDS)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            return sock

        slow = request("/slow")
        dribbler = request("/")
        held = _hold(running.url, 20)
        try:
            assert _read_response(dribbler).startswith(b"HTTP/1.1 200")
            dribbler.sendall(b"G")  # one byte of the next request, then nothing
            _wait_until_closed_by_the_server([*held, dribbler])
            release.set()
            assert _read_response(slow).startswith(b"HTTP/1.1 200")
        finally:
            release.set()
            _close([slow, dribbler, *held])


def test_scorer_out_of_file_descriptors_keeps_running_and_serves_once_idle_ones_time_out(
    holder: ChampionHolder, embedded_url: str, rows: pd.DataFrame
) -> None:
    # Issue 24: 2,000 held sockets and the server's own need more than a common soft limit
    # of 1,024 open files. Out of fds, the server cannot accept (uvloop resets what waits),
    # but it must not crash, and the header timeout then frees its fds by itself.
    customer_id = rows["customer_id"].iloc[0]
    source = WarehouseFeatureSource(embedded_url)
    app = create_app(holder, source, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[socket.socket] = []
    try:
        with BackgroundServer(app, header_timeout=1.0) as running:
            with _no_keep_alive(running.url) as client:  # the lookup's pooled connection
                assert client.post("/predict", json={"customer_id": customer_id}).is_success
            selector = selectors.DefaultSelector()  # epoll needs an fd of its own
            in_use = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 500, hard))
            try:
                held = _hold(running.url, HELD)  # ends when this process has no fd left
                assert len(held) < HELD
                _wait_until_closed_by_the_server(held, selector)
                _close(held)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            with _no_keep_alive(running.url) as client:
                after = client.post("/predict", json={"customer_id": customer_id})
            assert after.status_code == 200, after.text
    finally:
        _close(held)
        source.close()
