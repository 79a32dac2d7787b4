"""Online scoring latency: single ``/predict`` requests against a real uvicorn server.

Why: the scoring API promises interactive latency (goal p99 <= 5 ms on a 2-core machine,
reference bar 50 ms); this measures what a client sees, and what the server part of it is.

Setup: needs a finished ``churn demo`` (a champion in MLflow, ``marts.current_features`` in
the warehouse) under the current settings (``CHURN_HOME``). The server runs in its own
process, built by ``build_service`` exactly as ``serve()`` builds it (MLflow champion and
the online copy of the features, both 5-second pollers running, frozen startup objects,
uvicorn with uvloop/httptools when installed, loopback) plus two baseline routes for comparison:
``GET /baseline`` (a trivial async endpoint: HTTP + FastAPI + client floor) and
``POST /baseline/validate`` (parses and validates the same body as ``/predict``, scores
nothing). An ASGI wrapper reports
the application's own time per request in a ``Server-Timing`` header. Its connections have
``serve()``'s default header deadline (``churn serve --header-timeout``).

The client is this process: ``--threads`` threads, one keep-alive connection each,
sending ``--requests`` requests per scenario back to back after ``--warmup`` untimed ones.
Feature payloads are the demo's current feature rows; ids are its customers. Latency is
measured around each request, so it includes the client's own Python work. To keep that
small, the default client is the standard library's ``http.client`` with every body encoded
before timing starts: ~0.16 ms a round trip to the trivial endpoint, where ``httpx`` (the
client of every figure before 2026-11-29, ``--client httpx``) spends ~0.2 ms more of its own
on each request. Both processes freeze their startup objects (or a full garbage collection
would add a ~250 ms stall to one request), and the client pauses its collector while it
times, since its young collections, ~0.19 ms once every ~25 requests, landed in the p99
(``--client-gc`` keeps it on).
With ``--wrk SECONDS`` (and ``wrk`` on the PATH: ``apt-get install wrk``), the by-id
scenario is also run by wrk, a client in C, over one keep-alive connection for that long:
a check that the figures are the server's and not this Python client's.
With ``--idle-sockets N``, a third process holds N connections to the server for the whole
run that never complete a request (half send nothing, half a partial request line and
headers), re-opening each one the server closes, as a client that keeps them up would.
Finally the steps inside one ``/predict`` are timed in process, without HTTP.

    churn demo                          # once, if CHURN_HOME holds no demo yet
    python benchmarks/serving.py        # 1 and 4 client threads, 2,000 requests each
    python benchmarks/serving.py --threads 4 --requests 5000 --access-log
    python benchmarks/serving.py --threads 1 --scenario "POST /predict with customer_id"
    python benchmarks/serving.py --threads 1 --wrk 10
    python benchmarks/serving.py --threads 1 --scenario "POST /predict with customer_id" \\
        --idle-sockets 2000
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import platform
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# At module level: FastAPI resolves the (postponed) annotations of the baseline routes here.
from churn_assets.serving.schemas import PredictRequest

SCENARIOS: dict[str, tuple[str, str, str]] = {
    # name -> (method, path, body kind)
    "GET /baseline (trivial endpoint)": ("GET", "/baseline", "none"),
    "POST /baseline/validate (no scoring)": ("POST", "/baseline/validate", "features"),
    "POST /predict with features": ("POST", "/predict", "features"),
    "POST /predict with customer_id": ("POST", "/predict", "customer_id"),
}


# --- server (child process) -------------------------------------------------------------


def run_server(access_log: bool) -> None:
    """Child: serve what ``serve()`` serves, print the URL, run until stdin closes."""
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from churn_assets.serving.connections import raise_open_file_limit
    from churn_assets.serving.server import (
        BackgroundServer,
        build_service,
        freeze_startup_objects,
    )

    service = build_service()
    app = service.app

    @app.get("/baseline")
    async def baseline() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/baseline/validate")
    async def baseline_validate(request: PredictRequest) -> dict[str, bool]:
        return {"ok": request.features is not None}

    class ServerTiming:
        """Adds the app's time to ``Server-Timing`` when the response headers go out."""

        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            started = time.perf_counter()

            async def timed_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    ms = (time.perf_counter() - started) * 1e3
                    headers = [
                        *message.get("headers", []),
                        (b"server-timing", f"app;dur={ms:.4f}".encode()),
                    ]
                    message = {**message, "headers": headers}
                await send(message)

            await self.inner(scope, receive, timed_send)

    raise_open_file_limit()  # as serve() does
    service.start()  # both pollers, as serve() does
    freeze_startup_objects()  # as serve() does
    config: dict[str, Any] = {"access_log": access_log}
    if access_log:
        config["log_level"] = "info"
    try:
        # Logs (uvicorn's access log writes to stdout) go to stderr: the parent reads only
        # the URL line from our stdout, so a filling pipe would block the server.
        url_out, sys.stdout = sys.stdout, sys.stderr
        with BackgroundServer(ServerTiming(app), **config) as running:
            print(running.url, file=url_out, flush=True)
            sys.stdin.read()  # the parent closes our stdin to stop us
    finally:
        service.close()


# --- idle connections (another child process) -----------------------------------------

# What half of the held connections send: a request line and headers, never finished.
PARTIAL_REQUEST = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"


def hold_sockets(url: str, count: int) -> None:
    """Child: hold ``count`` connections that never finish a request (even ones send
    nothing, odd ones ``PARTIAL_REQUEST``), re-open each one the server closes, print
    "ready" once all are open and, when stdin closes, how many the server closed.

    A process of its own, so re-opening never takes the timing client's GIL."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    host, port = url.removeprefix("http://").split(":")
    selector = selectors.DefaultSelector()

    def open_one(n: int) -> None:
        sock = socket.create_connection((host, int(port)))
        if n % 2:
            sock.sendall(PARTIAL_REQUEST)
        selector.register(sock, selectors.EVENT_READ, n)

    for n in range(count):
        open_one(n)
    print("ready", flush=True)
    stop = threading.Event()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    closed = failed = 0
    while not stop.is_set():
        for key, _ in selector.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            selector.unregister(sock)
            sock.close()  # readable: EOF (the server closed it) or an answer, never expected
            closed += 1
            try:
                open_one(key.data)
            except OSError:
                failed += 1
    print(f"{closed} {failed}", flush=True)


# --- client (this process) --------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    latencies_ms: np.ndarray
    app_ms: np.ndarray
    wall_seconds: float
    errors: int


def run_scenario(
    url: str,
    method: str,
    path: str,
    bodies: list[Any],
    n_requests: int,
    n_threads: int,
    client: str = "http.client",
    client_gc: bool = False,
) -> Result:
    """``n_requests`` back to back on ``n_threads`` keep-alive connections of ``client``.
    The client's own garbage collector is paused while they run (``client_gc`` leaves it
    on): its young collections cost this client ~0.19 ms each, one every ~25 requests, and
    would be counted as the server's latency (benchmarks/RESULTS.md)."""
    import httpx

    per_thread = n_requests // n_threads
    latencies: list[list[float]] = [[] for _ in range(n_threads)]
    app_times: list[list[float]] = [[] for _ in range(n_threads)]
    errors = [0] * n_threads
    ready = threading.Barrier(n_threads + 1)

    def record(index: int, started: float, status: int, timing: str | None) -> None:
        latencies[index].append((time.perf_counter() - started) * 1e3)
        if status != 200:
            errors[index] += 1
        if timing and "dur=" in timing:
            app_times[index].append(float(timing.split("dur=")[1]))

    def stdlib_worker(index: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"content-type": "application/json"}
        # Encoded up front; http.client sends headers and a bytes body in one write.
        encoded = [None if body is None else json.dumps(body).encode() for body in bodies]
        connection.request(method, path, encoded[0], headers)  # open the connection
        connection.getresponse().read()
        ready.wait()
        for n in range(per_thread):
            body = encoded[(index * per_thread + n) % len(encoded)]
            started = time.perf_counter()
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            response.read()
            record(index, started, response.status, response.getheader("server-timing"))
        connection.close()

    def httpx_worker(index: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as session:
            session.request(method, path, json=bodies[0])  # open the keep-alive connection
            ready.wait()
            for n in range(per_thread):
                body = bodies[(index * per_thread + n) % len(bodies)]
                started = time.perf_counter()
                response = session.request(method, path, json=body)
                record(index, started, response.status_code, response.headers.get("server-timing"))

    worker = httpx_worker if client == "httpx" else stdlib_worker
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    if not client_gc:
        gc.disable()
    try:
        ready.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        gc.enable()
        gc.collect()
    return Result(
        np.concatenate([np.asarray(x) for x in latencies]),
        np.concatenate([np.asarray(x) for x in app_times]),
        wall,
        sum(errors),
    )


_WRK_SCRIPT = """
local bodies = {%s}
local next_body = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  next_body = next_body %% #bodies + 1
  return wrk.format(nil, "/predict", nil, bodies[next_body])
end
"""


def run_wrk(url: str, bodies: list[dict[str, Any]], seconds: int) -> str:
    """wrk's latency distribution for ``POST /predict`` cycling through ``bodies``, one
    thread and one keep-alive connection (after as long again of warm-up)."""
    # A JSON string is a valid Lua string literal for these bodies (ASCII ids, no escapes
    # beyond quotes).
    literals = ", ".join(json.dumps(json.dumps(body)) for body in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT % literals)
        script.flush()
        base = ["wrk", "-t1", "-c1", "-s", script.name]
        subprocess.run([*base, f"-d{seconds}s", url], capture_output=True, check=True)
        done = subprocess.run(
            [*base, f"-d{seconds}s", "--latency", url], capture_output=True, text=True, check=True
        )
    return done.stdout


def in_process_steps(bodies: list[dict[str, Any]], repeats: int = 2_000) -> dict[str, float]:
    """Median microseconds of the steps inside one ``/predict`` (features), without HTTP."""
    import json
    import uuid
    from datetime import UTC, datetime

    from churn_assets.ml.bands import RiskBands
    from churn_assets.policy import load_policy
    from churn_assets.serving.app import input_hash, model_inputs, score

    risk = RiskBands.from_policy(load_policy())
    from churn_assets.serving.model_store import ChampionHolder
    from churn_assets.serving.schemas import Prediction
    from churn_assets.settings import load_settings

    holder = ChampionHolder.from_mlflow(load_settings().resolved_tracking_uri)
    holder.refresh()
    model = holder.model
    assert model is not None
    raw = [json.dumps(b).encode() for b in bodies]
    request = PredictRequest.model_validate_json(raw[0])
    assert request.features is not None
    features = request.features
    p = float(score(model, model_inputs([features]))[0])

    def build() -> bytes:
        return (
            Prediction(
                served_by="champion",
                model_name=model.name,
                model_version=model.version,
                model_sha256=model.sha256,
                request_id=str(uuid.uuid4()),
                scored_at=datetime.now(UTC),
                customer_id=None,
                features_as_of=None,
                features=features,
                input_hash=input_hash(features.model_dump()),
                churn_probability=p,
                risk_band=risk.band(p),
            )
            .model_dump_json()
            .encode()
        )

    steps: dict[str, Callable[[], object]] = {
        "parse + validate request body (pydantic)": lambda: PredictRequest.model_validate_json(
            raw[0]
        ),
        "score 1 row (numpy arrays + onnxruntime)": lambda: score(model, model_inputs([features])),
        "onnxruntime session.run alone": lambda: model.scorer.session.run(
            None,
            {
                "numeric": np.ones((1, 7), dtype=np.float32),
                "email_domain_class": np.zeros(1, dtype=np.int64),
            },
        ),
        "input hash (canonical JSON + sha256)": lambda: input_hash(features.model_dump()),
        "build + serialise the response": build,
    }
    medians = {}
    for name, step in steps.items():
        step()
        timings = []
        for _ in range(repeats):
            started = time.perf_counter_ns()
            step()
            timings.append((time.perf_counter_ns() - started) / 1e3)
        medians[name] = statistics.median(timings)
    return medians


def demo_bodies() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Feature payloads and customer-id payloads from the demo's ``marts.current_features``."""
    from churn_assets.ml.features import CATEGORICAL_FEATURE, NUMERIC_FEATURES
    from churn_assets.settings import load_settings
    from churn_assets.tables.engines import open_warehouse

    frame = open_warehouse(load_settings()).read_current_features()
    if frame.empty:
        raise SystemExit("marts.current_features is empty: run `churn demo` first")
    features = [
        {
            "features": {
                **{n: float(row[n]) for n in NUMERIC_FEATURES},
                CATEGORICAL_FEATURE: str(row[CATEGORICAL_FEATURE]),
            }
        }
        for _, row in frame.iterrows()
    ]
    ids = [{"customer_id": c} for c in frame["customer_id"]]
    return features, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=2_000, help="timed, per scenario")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--access-log", action="store_true", help="uvicorn access log on")
    parser.add_argument(
        "--client",
        choices=["http.client", "httpx"],
        default="http.client",
        help="the client library (figures before 2026-11-29 used httpx, which adds ~0.2 ms "
        "of its own to each request)",
    )
    parser.add_argument(
        "--client-gc",
        action="store_true",
        help="leave the client's garbage collector on while timing (figures before "
        "2026-11-29 were taken so)",
    )
    parser.add_argument(
        "--scenario",
        nargs="+",
        default=list(SCENARIOS),
        choices=list(SCENARIOS),
        metavar="NAME",
        help="only these scenarios (default: all)",
    )
    parser.add_argument(
        "--wrk",
        type=int,
        default=0,
        metavar="SECONDS",
        help="also run the by-id scenario with wrk for this long (needs wrk on the PATH)",
    )
    parser.add_argument(
        "--idle-sockets",
        type=int,
        default=0,
        metavar="N",
        help="hold N connections that never finish a request during the whole run (half "
        "idle, half a partial request), re-opening those the server closes",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hold-sockets", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold_sockets:
        hold_sockets(args.hold_sockets, args.idle_sockets)
        return
    if args.wrk and shutil.which("wrk") is None:
        parser.error("--wrk needs wrk on the PATH (Debian: apt-get install wrk)")
    if args.child:
        run_server(args.access_log)
        return

    features, ids = demo_bodies()
    # The client has the same ~500k objects from imports; without this a full collection
    # stalls one request ~250 ms and the client would report its own pause as latency.
    gc.collect()
    gc.freeze()
    bodies: dict[str, list[Any]] = {"none": [None], "features": features, "customer_id": ids}
    cmd = [sys.executable, __file__, "--child"] + (["--access-log"] if args.access_log else [])
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    holder: subprocess.Popen[str] | None = None
    held = "no idle sockets held"
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit("the server did not start (see its output above)")
        if args.idle_sockets:
            hold = [sys.executable, __file__, "--hold-sockets", url]
            hold += ["--idle-sockets", str(args.idle_sockets)]
            pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
            holder = subprocess.Popen(hold, text=True, **pipes)
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != "ready":
                raise SystemExit("could not open the idle sockets (see the output above)")
        load_before = os.getloadavg()[0]
        rows = []
        for n_threads in args.threads:
            for name in args.scenario:
                method, path, kind = SCENARIOS[name]
                run_scenario(url, method, path, bodies[kind], args.warmup, 1, args.client)
                result = run_scenario(
                    url,
                    method,
                    path,
                    bodies[kind],
                    args.requests,
                    n_threads,
                    args.client,
                    args.client_gc,
                )
                if result.errors:
                    raise SystemExit(f"{name}: {result.errors} failed requests")
                rows.append((name, n_threads, result))
        wrk_output = run_wrk(url, ids, args.wrk) if args.wrk else None
        load_after = os.getloadavg()[0]
        if holder is not None:
            closed, failed = holder.communicate(timeout=30)[0].split()
            held = (
                f"{args.idle_sockets:,} idle sockets held (half with a partial request), "
                f"{int(closed):,} closed by the server and re-opened ({failed} failed)"
            )
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    steps = in_process_steps(features[:1])

    import fastapi
    import httpx
    import onnxruntime
    import uvicorn

    print(
        f"python {platform.python_version()}, fastapi {fastapi.__version__}, uvicorn "
        f"{uvicorn.__version__}, httpx {httpx.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, {platform.machine()}, {os.cpu_count()} cores; "
        f"{args.requests:,} timed requests per row after {args.warmup} warm-up; client "
        f"{args.client}; access log "
        f"{'on' if args.access_log else 'off'}; client GC "
        f"{'on' if args.client_gc else 'paused while timing'}; {held}; 1-min load average "
        f"{load_before:.2f} -> {load_after:.2f}"
    )
    print()
    print(
        "| scenario | client threads | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | req/s "
        "| app p50 (ms) | app p99 (ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n_threads, r in rows:
        p50, p95, p99 = np.percentile(r.latencies_ms, [50, 95, 99])
        a50, a99 = np.percentile(r.app_ms, [50, 99])
        print(
            f"| {name} | {n_threads} | {p50:.2f} | {p95:.2f} | {p99:.2f} | "
            f"{r.latencies_ms.max():.2f} | {len(r.latencies_ms) / r.wall_seconds:,.0f} | "
            f"{a50:.3f} | {a99:.3f} |"
        )
    if wrk_output is not None:
        print()
        print(f"wrk, POST /predict with customer_id, 1 connection, {args.wrk} s:")
        print()
        print("```")
        print(wrk_output.strip())
        print("```")
    print()
    print("In process, one /predict with features (median of 2,000 calls):")
    print()
    print("| step | median (us) |")
    print("|---|---:|")
    for name, micros in steps.items():
        print(f"| {name} | {micros:.1f} |")


if __name__ == "__main__":
    main()
