"""Alerts: one JSON message POSTed to a webhook (``CHURN_ALERT_WEBHOOK_URL``).

An alert must never become a second failure: :func:`post_alert` waits at most
:data:`TIMEOUT_SECONDS` per attempt, tries once more after a connection error, a timeout or
a 5xx answer, and never raises. It returns whether the message was delivered and logs a
warning when it was not. Standard library only (``urllib.request``), so sending an alert
needs nothing the platform does not already have. A URL with ``user:password@`` is sent
with HTTP basic auth (urllib itself would take the userinfo for part of the host); logs
show the webhook as ``scheme://host:port`` only (:func:`churn_assets.urls.mask_url`).

The message (one JSON object, ``Content-Type: application/json``)::

    {
      "kind": "check_failure",            # or "run_failure"
      "summary": "Check training_data_quality on training_dataset failed (blocking): ...",
      "asset": "training_dataset",        # asset key as a/b/c; null for a run failure
      "check": "training_data_quality",   # null for a run failure
      "run_id": "5f0c...",                # null for an evaluation reported outside a run
      "job": "churn_pipeline",            # null when there is no run
      "url": "http://127.0.0.1:3000/runs/5f0c...",   # where to look in the Dagster UI
      "details": {...}                    # kind-specific, see below
    }

``details`` of a ``run_failure``: ``message`` (Dagster's failure message) and
``failed_steps`` (a list of ``{"step": step key, "error": first line of the error}``).
``details`` of a ``check_failure``: ``severity`` (``ERROR``/``WARN``), ``blocking``,
``description``, ``partition`` and ``metadata`` (the evaluation's plain scalar values, e.g.
the drift gate's ``drift_share`` and ``threshold``).
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from churn_assets.urls import basic_auth, mask_secrets, mask_url, split_credentials

logger = logging.getLogger(__name__)

AlertKind = Literal["run_failure", "check_failure"]

TIMEOUT_SECONDS = 5.0
"""Per attempt: a sensor tick has 60 s, and two attempts must fit with room to spare."""

RETRY_DELAY_SECONDS = 0.5
"""Pause before the one retry: enough for a restarting receiver, short for a sensor tick."""

ATTEMPTS = 2
"""The first try and exactly one retry."""


class AlertMessage(TypedDict):
    """The JSON body of every alert (see the module docstring)."""

    kind: AlertKind
    summary: str
    asset: str | None
    check: str | None
    run_id: str | None
    job: str | None
    url: str
    details: dict[str, Any]


def run_url(ui_url: str, run_id: str) -> str:
    """The run's page in the Dagster UI."""
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


def asset_checks_url(ui_url: str, asset_path: list[str]) -> str:
    """The asset's checks tab in the Dagster UI (for evaluations reported outside a run)."""
    return f"{ui_url.rstrip('/')}/assets/{'/'.join(asset_path)}?view=checks"


def post_alert(url: str, message: Mapping[str, Any], *, timeout: float | None = None) -> bool:
    """POSTs ``message`` as JSON to ``url``; ``True`` when the receiver answered 2xx.

    Retries once on a connection error, a timeout or a 5xx; a 4xx is the receiver refusing
    this message, so it is not retried. Never raises: the caller is a sensor that must keep
    ticking whatever the receiver does.
    """
    where = mask_url(url, host_only=True)  # the path is often the webhook's secret
    try:
        body = json.dumps(message, default=str).encode()
    except (TypeError, ValueError) as error:
        logger.warning("alert not sent to %s: the message is not JSON: %s", where, error)
        return False
    reason = "not attempted"
    for attempt in range(1, ATTEMPTS + 1):
        retryable, reason = _send(url, body, TIMEOUT_SECONDS if timeout is None else timeout)
        reason = mask_secrets(reason, url)  # urllib quotes pieces of a malformed URL
        if not reason:
            return True
        if not retryable:
            break
        if attempt < ATTEMPTS:
            time.sleep(RETRY_DELAY_SECONDS)
    logger.warning(
        "alert %r not delivered to %s after %d attempt(s): %s",
        message.get("summary", "?"),
        where,
        attempt,
        reason,
    )
    return False


def _send(url: str, body: bytes, timeout: float) -> tuple[bool, str]:
    """One attempt: ``(retryable, reason)``, with an empty reason when it was delivered."""
    try:
        bare, username, password = split_credentials(url)
        request = urllib.request.Request(
            bare,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "churn-assets-alerts"},
        )
        if username is not None:
            # Unredirected: a redirect to another host must not carry the credentials.
            request.add_unredirected_header("Authorization", basic_auth(username, password or ""))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()  # the receiver's answer is not used, but wait for all of it
        return False, ""
    except urllib.error.HTTPError as error:  # before URLError: it is one
        return error.code >= 500, f"HTTP {error.code} {error.reason}"
    except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out
        return True, f"{type(error).__name__}: {error}"
    except Exception as error:  # e.g. a malformed URL: never let an alert raise
        return False, f"{type(error).__name__}: {error}"
