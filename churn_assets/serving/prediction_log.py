"""The online prediction log: every served prediction into ``scoring.online_predictions``,
off the request path.

A request only puts a :class:`LoggedPrediction` on a bounded queue (``put_nowait``): when
the queue is full the prediction is left out of the log and counted
(``churn_prediction_log_dropped_total``), so a slow or absent warehouse never slows a request.
One writer thread inserts what is queued in batches (one ``execute_values`` per batch) and
drains the queue on :meth:`PredictionLog.close`, so the rows of a scorer that stops cleanly
are all written. A batch that cannot be written is dropped and counted too; the next batch
reconnects. With a :class:`~churn_assets.serving.challenger.ShadowScorer`, the writer also
completes each batch with the shadow model's results before inserting it, so shadow
scoring costs the request nothing either.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.extensions
from psycopg2.extras import execute_values

from churn_assets.data.online_predictions import COLUMNS, create_table
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.serving.metrics import ServingMetrics

if TYPE_CHECKING:  # challenger.py imports this module
    from churn_assets.serving.challenger import ShadowJob, ShadowScorer

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000  # ~10 s of a busy scorer while the warehouse is slow
BATCH_ROWS = 500
FLUSH_SECONDS = 0.5  # the longest a queued prediction waits for its batch


@dataclass(frozen=True)
class LoggedPrediction:
    """One row of the log; field order is the table's column order."""

    request_id: str
    scored_at: datetime
    customer_id: str | None
    input_hash: str
    features_as_of: str | None
    model_name: str
    model_version: str
    model_sha256: str
    churn_probability: float
    risk_band: str
    latency_ms: float
    served_by: str  # champion | canary
    shadow_model_version: str | None = None
    shadow_model_sha256: str | None = None
    shadow_probability: float | None = None
    shadow_risk_band: str | None = None


if tuple(f.name for f in fields(LoggedPrediction)) != COLUMNS:
    raise RuntimeError(f"LoggedPrediction is out of sync with {ONLINE_PREDICTIONS_TABLE}")


_STOP = object()
_Queued = tuple[LoggedPrediction, "ShadowJob | None"]


class PredictionLog:
    """Bounded queue plus one writer thread; see the module docstring."""

    def __init__(
        self,
        url: str,
        metrics: ServingMetrics,
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_rows: int = BATCH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
        shadow: ShadowScorer | None = None,
    ) -> None:
        self._url = url
        self._dropped = metrics.prediction_log_dropped
        self._queue: queue.Queue[object] = queue.Queue(maxsize=capacity)
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._shadow = shadow
        self._conn: psycopg2.extensions.connection | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer (the table is created by its first connection)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def submit(self, prediction: LoggedPrediction, shadow: ShadowJob | None = None) -> None:
        """Queue one prediction (and what its shadow scores, if any), never waiting: a full
        queue drops it (and counts it)."""
        try:
            self._queue.put_nowait((prediction, shadow))
        except queue.Full:
            self._dropped.inc()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued so far, then stop the writer."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)  # blocks only while the queue is full, i.e. being drained
        thread.join(timeout)
        if thread.is_alive():
            log.warning("prediction log did not flush within %.0f s", timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self._flush_seconds)
            except queue.Empty:
                continue
            batch: list[_Queued] = []
            item = first
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]  # only _Queued or _STOP
                if len(batch) >= self._batch_rows:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if stopping:  # the stop marker came last: write what is still queued
                self._drain()
        if self._conn is not None:
            self._conn.close()

    def _drain(self) -> None:
        rest: list[_Queued] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                rest.append(item)  # type: ignore[arg-type]  # only _Queued or _STOP
        for start in range(0, len(rest), self._batch_rows):
            self._write(rest[start : start + self._batch_rows])

    def _write(self, queued: list[_Queued]) -> None:
        batch = (
            self._shadow.complete(queued)
            if self._shadow is not None
            else [prediction for prediction, _ in queued]
        )
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(self._url, connect_timeout=10)
                with self._conn:
                    create_table(self._conn)
            with self._conn, self._conn.cursor() as cur:
                execute_values(
                    cur,
                    f"insert into {ONLINE_PREDICTIONS_TABLE} ({', '.join(COLUMNS)}) values %s"
                    " on conflict (request_id) do nothing",
                    [astuple(p) for p in batch],
                )
        except psycopg2.Error as exc:
            self._dropped.inc(len(batch))
            log.warning("prediction log: %d rows not written: %s", len(batch), exc)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
