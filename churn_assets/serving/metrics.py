"""The scorer's Prometheus metrics: every name, label and bucket in one place.

One :class:`ServingMetrics` per app, each with a registry of its own (not the process-wide
default), so two apps in one process (tests, the benchmark) never share counts. The parts
of the scorer record into it (the request middleware, the champion holder, the online
feature copy, the prediction log, shadow and canary); ``GET /metrics`` renders it in the
Prometheus text format. The alert rules under ``docker/prometheus/`` name only these
metrics (a test checks them against a live ``/metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_assets.serving.schemas import ServedBy

# No `*_created` series beside every counter: they double a scrape and no rule reads them.
disable_created_metrics()

# Latency buckets around the scorer's real range (~0.3-2 ms by id) up to the 50 ms bar
# the alert rule watches, and beyond for the batch endpoint.
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    2.5,
)

# What served a request: the champion, or the challenger for a canary's share of customers.
SERVED_BY: tuple[ServedBy, ...] = get_args(ServedBy)


class ServingMetrics:
    """The scorer's metrics over a registry of their own; see the module docstring."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "churn_predict_requests",
            "Requests answered, by route template and HTTP status.",
            ("route", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "churn_predict_latency_seconds",
            "Time from request to response, by route template.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "churn_model_info",
            "1 for the model that serves now (the champion), by name, version and sha256.",
            ("model_name", "model_version", "model_sha256"),
            registry=r,
        )
        self.model_reloads = Counter(
            "churn_model_reloads",
            "Attempts to load a new champion version: result=success|failure.",
            ("result",),
            registry=r,
        )
        self.features_refresh = Counter(
            "churn_features_refresh",
            "Refreshes of the online feature copy: result=success|failure|unchanged.",
            ("result",),
            registry=r,
        )
        self.features_as_of = Gauge(
            "churn_features_as_of_timestamp_seconds",
            "Period end (as_of, Unix time) of the online feature copy that serves now.",
            registry=r,
        )
        self.prediction_log_dropped = Counter(
            "churn_prediction_log_dropped",
            "Predictions left out of scoring.online_predictions (queue full or write failed).",
            registry=r,
        )
        self.served = Counter(
            "churn_served_predictions",
            "Predictions answered, by the model that served them: served_by=champion|canary.",
            ("served_by",),
            registry=r,
        )
        self.shadow_predictions = Counter(
            "churn_shadow_predictions",
            "Requests the challenger also scored in the shadow (off the request path).",
            registry=r,
        )
        self.shadow_disagreements = Counter(
            "churn_shadow_disagreements",
            "Shadow predictions whose risk band differs from the champion's.",
            registry=r,
        )

        # Every known label value exported at 0 from the start: a rule's increase() then sees
        # the first failure, and a scrape shows every name a rule may use.
        for result in ("success", "failure"):
            self.model_reloads.labels(result)
        for result in ("success", "failure", "unchanged"):
            self.features_refresh.labels(result)
        for served_by in SERVED_BY:
            self.served.labels(served_by)

    def set_model(self, name: str, version: str, sha256: str) -> None:
        """The serving model changed: exactly one ``churn_model_info`` series is 1."""
        self.model_info.clear()
        self.model_info.labels(name, version, sha256).set(1)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# The route label of any path the app has no route for: a raw path would let a scanner
# create one series per URL it tries.
OTHER_ROUTE = "other"


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status.

    Plain ASGI (``BaseHTTPMiddleware`` runs each request in an extra task, which costs
    latency); outermost, so 401s and 413s from the guards are counted too. The routes have
    no path parameters, so the template is the path itself when the app has that route.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, routes: Iterable[str]) -> None:
        self.app = app
        self._routes = frozenset(routes)
        self._requests = metrics.requests
        self._latency = metrics.latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        route = path if path in self._routes else OTHER_ROUTE
        status = 500  # what the client sees when the app raises before answering

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self._requests.labels(route, str(status)).inc()
            self._latency.labels(route).observe(time.perf_counter() - start)


# The metric names a scrape shows (counters gain ``_total``); the alert rules' test checks
# every name a rule uses is among them.
EXPORTED_NAMES = frozenset(
    {
        "churn_predict_requests_total",
        "churn_predict_latency_seconds_bucket",
        "churn_predict_latency_seconds_count",
        "churn_predict_latency_seconds_sum",
        "churn_model_info",
        "churn_model_reloads_total",
        "churn_features_refresh_total",
        "churn_features_as_of_timestamp_seconds",
        "churn_prediction_log_dropped_total",
        "churn_served_predictions_total",
        "churn_shadow_predictions_total",
        "churn_shadow_disagreements_total",
    }
)
