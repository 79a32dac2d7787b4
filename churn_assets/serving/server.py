"""Run the scoring API: ``serve()`` for the CLI, :class:`BackgroundServer` for tests/benchmarks.

The CLI command ``churn serve`` calls::

    serve(host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          poll_seconds: float = 5.0, *, access_log: bool = True,
          wait_for_champion: bool = False,
          header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS) -> None

It reads the settings (MLflow tracking URI, warehouse URL or the embedded Postgres, the
canary share), loads the online copy of ``marts.current_features``, the current
``champion`` of ``churn-model`` and its ``challenger`` if any (raising
:class:`ServingError` when the warehouse cannot be reached or there is no champion to load:
the CLI turns it into a one-line error), starts the pollers that follow the aliases and
the feature table, and runs uvicorn until interrupted, closing connections that send no
complete request headers within ``header_timeout`` seconds (as :class:`BackgroundServer`
does; see :mod:`churn_assets.serving.connections`). It binds loopback by default:
exposing the API is a deliberate ``host="0.0.0.0"``, best with an ``api_key``.
:func:`build_service` is the same stack without uvicorn (the benchmark serves it itself).
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from churn_assets.infra import warehouse
from churn_assets.infra.warehouse import WarehouseError
from churn_assets.limits import DEFAULT_HEADER_TIMEOUT_SECONDS
from churn_assets.ml.bands import RiskBands
from churn_assets.policy import PolicyError, load_policy
from churn_assets.schema import CHALLENGER_ALIAS
from churn_assets.serving.app import create_app
from churn_assets.serving.challenger import ShadowScorer
from churn_assets.serving.connections import header_timeout_protocol, raise_open_file_limit
from churn_assets.serving.features import OnlineFeatureSource
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.model_store import DEFAULT_POLL_SECONDS, ChampionHolder
from churn_assets.serving.prediction_log import PredictionLog
from churn_assets.settings import Engine, Settings, load_settings
from churn_assets.tables.engines import open_warehouse
from churn_assets.tables.feature_export import EXPORT_ASSET
from churn_assets.tables.online_predictions import check_retention
from churn_assets.urls import mask_secrets, mask_url

log = logging.getLogger(__name__)


class ServingError(RuntimeError):
    """The service cannot start (e.g. no champion to serve)."""


@dataclass(frozen=True)
class Service:
    """The app and what it owns; :meth:`close` after the server stopped."""

    app: FastAPI
    holder: ChampionHolder
    source: OnlineFeatureSource
    prediction_log: PredictionLog | None = None
    challenger: ChampionHolder | None = None

    def start(self) -> None:
        """Start following the aliases and the feature table, and the log writer."""
        self.holder.start()
        if self.challenger is not None:
            self.challenger.start()
        self.source.start()
        if self.prediction_log is not None:
            self.prediction_log.start()

    def close(self) -> None:
        self.holder.stop()
        if self.challenger is not None:
            self.challenger.stop()
        self.source.close()
        if self.prediction_log is not None:  # last: flushes what the served requests queued
            self.prediction_log.close()


def build_service(
    api_key: str | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    *,
    wait_for_champion: bool = False,
) -> Service:
    """The app over the current settings' champion and warehouse (poller not started).

    The online copy of the features is loaded first: that needs no model, so an
    unreachable warehouse is reported as such even before anything is registered.
    ``wait_for_champion`` accepts an empty registry: ``/health`` answers 503 until the
    poller loads the first champion (what a container wants, instead of a restart loop).
    """
    settings = load_settings()
    policy = load_policy()
    retention_days = policy.prediction_log_retention_days
    try:  # before anything loads: a retention that deletes unjudged predictions is refused
        check_retention(retention_days, settings.window_days, settings.period)
    except PolicyError as exc:
        raise ServingError(str(exc)) from exc
    metrics = ServingMetrics()  # first: the copy's first load is already a refresh to count
    source = _load_feature_copy(settings, poll_seconds, metrics)
    try:
        holder = ChampionHolder.from_mlflow(
            settings.resolved_tracking_uri, poll_seconds=poll_seconds
        )
        holder.refresh()
        state = holder.state()
        if state.model is None and not wait_for_champion:
            # Failing fast beats a server that answers 503 until someone trains a model.
            reason = state.last_error.message if state.last_error else "unknown"
            raise ServingError(
                f"no champion model to serve from {mask_url(settings.resolved_tracking_uri)}: "
                f"{reason} "
                "(run `churn demo` or train and promote a model first)"
            )
    except BaseException:
        source.close()
        raise
    # No challenger is normal (nothing kept yet): the holder records it and polls on. After
    # a promotion both aliases name one version: the champion's model is taken, not reloaded.
    challenger = ChampionHolder.from_mlflow(
        settings.resolved_tracking_uri,
        alias=CHALLENGER_ALIAS,
        poll_seconds=poll_seconds,
        reuse=lambda: holder.model,
    )
    challenger.refresh()
    bands = RiskBands.from_policy(policy)
    prediction_log = _prediction_log(settings, metrics, bands, retention_days)
    app = create_app(
        holder,
        source,
        api_key,
        bands=bands,
        metrics=metrics,
        prediction_log=prediction_log,
        challenger=challenger,
        canary_percent=settings.canary_percent,
    )
    return Service(app, holder, source, prediction_log, challenger)


def _prediction_log(
    settings: Settings, metrics: ServingMetrics, bands: RiskBands, retention_days: int
) -> PredictionLog | None:
    """The log every served prediction goes to, in the warehouse; none on Spark.

    A Parquet table cannot take a row per request (one job and new files per append), so on
    Spark the scorer serves without a log: no shadow scores, and no online realized
    performance, which both read it. It says so once at start, rather than refusing to serve.
    """
    if settings.engine is Engine.SPARK:
        log.warning(
            "no prediction log on Spark: predictions are served but not logged (no shadow "
            "comparison, no online realized performance); the log needs a Postgres "
            "warehouse (CHURN_ENGINE=postgres)"
        )
        return None
    # The embedded server already runs (the feature copy started it): this only names it.
    return PredictionLog(
        open_warehouse(settings),
        metrics,
        shadow=ShadowScorer(bands, metrics),
        retention_days=retention_days,
    )


def _load_feature_copy(
    settings: Settings, poll_seconds: float, metrics: ServingMetrics
) -> OnlineFeatureSource:
    """The online copy of the features, loaded, or a one-line :class:`ServingError` saying
    where it could not be read from (password redacted) and what to do about it.

    On Postgres the copy follows the table itself; on Spark it follows the Parquet file the
    platform exports for the scorer (``CHURN_ONLINE_FEATURES_PATH``), so the scorer needs no
    JVM and never reaches the Spark warehouse."""
    if settings.engine is Engine.SPARK:
        path = settings.online_features_path
        return _first_copy(
            lambda: OnlineFeatureSource.from_export(
                path, poll_seconds=poll_seconds, metrics=metrics
            ),
            f"Materialize {EXPORT_ASSET} (or run `churn demo`) with the same "
            "CHURN_ONLINE_FEATURES_PATH (on Spark, customer_id requests read their features "
            "from a copy of that file).",
        )
    url = settings.warehouse_url
    todo = (
        "Start it, or set CHURN_WAREHOUSE_URL to a running Postgres"
        if url
        else f"Check the embedded server under {settings.embedded_pg_dir}, or set "
        "CHURN_WAREHOUSE_URL to a running Postgres"
    )
    return _first_copy(
        lambda: OnlineFeatureSource.from_warehouse(
            warehouse.url_for(settings), poll_seconds=poll_seconds, metrics=metrics
        ),
        f"{todo} (customer_id requests read their features from a copy of it).",
        secret_url=url,
    )


def _first_copy(
    open_source: Callable[[], OnlineFeatureSource], todo: str, secret_url: str | None = None
) -> OnlineFeatureSource:
    """``open_source()`` with its first copy loaded, or a :class:`ServingError`: why not,
    then ``todo``. Nothing of ``secret_url`` is echoed from a driver's message."""
    try:
        source = open_source()
        source.refresh()
        state = source.state()
        if not state.available:  # no copy to answer from: not worth starting
            raise WarehouseError(state.last_error.message if state.last_error else "no rows")
        return source
    except WarehouseError as exc:
        reason = " ".join(str(exc).split())  # libpq's message spans lines
        if secret_url:  # already masked in the URL; never echo it from a driver message
            reason = mask_secrets(reason, secret_url)
        if not reason.endswith((".", "?", "!")):
            reason += "."
        raise ServingError(f"{reason} {todo}") from exc


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    *,
    access_log: bool = True,
    wait_for_champion: bool = False,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
) -> None:
    """Serve the champion over HTTP until interrupted (Ctrl-C / SIGTERM)."""
    try:  # a bad value fails before anything is loaded
        http = header_timeout_protocol(header_timeout)
    except ValueError as exc:
        raise ServingError(str(exc)) from exc
    raise_open_file_limit()  # each held connection is a file descriptor
    service = build_service(api_key, poll_seconds, wait_for_champion=wait_for_champion)
    if api_key is None and not _is_loopback(host):
        log.warning("serving on %s without an API key: anyone who can reach it can score", host)
    service.start()
    freeze_startup_objects()
    try:
        uvicorn.run(
            service.app, host=host, port=port, http=http, access_log=access_log, log_level="info"
        )
    finally:
        service.close()


def freeze_startup_objects() -> None:
    """Exclude everything allocated so far from future garbage collections.

    The imports (MLflow, pandas, onnx, FastAPI) leave ~500k tracked objects; a full
    collection walks all of them and stalls every request for ~250 ms (measured in the
    benchmark's client, which has the same imports). Frozen, they are never scanned again.
    """
    gc.collect()
    gc.freeze()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BackgroundServer:
    """A real uvicorn server in a daemon thread on loopback, as a context manager.

    ``port=0`` lets the OS pick a free port (read it from :attr:`url`). uvicorn only
    installs signal handlers in the main thread, so running it in another one is safe.
    Connections get ``serve()``'s header deadline unless ``config`` names another ``http``.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
        **config: Any,
    ) -> None:
        config.setdefault("log_level", "warning")
        config.setdefault("access_log", False)
        config.setdefault("http", header_timeout_protocol(header_timeout))
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)
        self._startup_timeout = startup_timeout
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                raise ServingError("uvicorn did not start (see its log)")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    @property
    def open_connections(self) -> int:
        """HTTP connections the server holds now (accepted and not yet closed)."""
        return len(self._server.server_state.connections)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=self._startup_timeout)
