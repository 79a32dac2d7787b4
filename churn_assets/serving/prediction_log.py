"""The online prediction log: every served prediction into ``scoring.online_predictions``,
off the request path.

A request only puts a :class:`LoggedPrediction` on a bounded queue (``put_nowait``): when
the queue is full the prediction is left out of the log and counted
(``churn_prediction_log_dropped_total``), so a slow or absent warehouse never slows a request.
One writer thread gathers what is queued into batches (up to ``BATCH_ROWS`` rows, none
waiting more than ``FLUSH_SECONDS``) and writes each with one ``COPY``; it drains the queue
on :meth:`PredictionLog.close`, so the rows of a scorer that stops cleanly are all written.
A batch that cannot be written is dropped and counted too; the next batch reconnects. With
a :class:`~churn_assets.serving.challenger.ShadowScorer`, the writer also completes each
batch with the shadow model's results before writing it, so shadow scoring costs the
request nothing either.
"""

from __future__ import annotations

import io
import logging
import operator
import queue
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.extensions

from churn_assets.data.online_predictions import COLUMNS, create_table
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.serving.metrics import ServingMetrics

if TYPE_CHECKING:  # challenger.py imports this module
    from churn_assets.serving.challenger import ShadowJob, ShadowScorer

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 20_000  # two full batches, or ~10 s of a busy scorer's single requests
BATCH_ROWS = 500
FLUSH_SECONDS = 0.5  # the longest a queued prediction waits for its batch
_POLL_SECONDS = 0.05  # how often a lingering batch looks for more rows


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
    batch_item: int | None = None  # the item's index in a /predict/batch request


if tuple(f.name for f in fields(LoggedPrediction)) != COLUMNS:
    raise RuntimeError(f"LoggedPrediction is out of sync with {ONLINE_PREDICTIONS_TABLE}")

# The writer shares the GIL (and two cores) with the event loop, so its work per row is
# what a request's tail latency pays: COPY in the text format costs ~10 us a row, all in, where
# execute_values' INSERT (mogrify per row, then the server parsing it) cost ~30 us and put the
# p99 of /predict from 0.75 ms to ~2 ms (benchmarks/RESULTS.md). Request ids are fresh
# uuids, so COPY's lack of ON CONFLICT loses nothing.
_COPY = f"copy {ONLINE_PREDICTIONS_TABLE} ({', '.join(COLUMNS)}) from stdin"
_row_values = operator.attrgetter(*COLUMNS)  # ~1 us; dataclasses.astuple deep-copies: ~15 us
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):  # customer ids may hold a backslash
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)  # floats: repr round-trips exactly through float8


def _copy_line(prediction: LoggedPrediction) -> str:
    return "\t".join(map(_copy_value, _row_values(prediction))) + "\n"


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
            batch, stopping = self._collect(first)
            if batch:
                self._write(batch)
            if stopping:  # the stop marker came last: write what is still queued
                self._drain()
        if self._conn is not None:
            self._conn.close()

    def _collect(self, first: object) -> tuple[list[_Queued], bool]:
        """A batch starting with ``first``: up to ``batch_rows``, gathered for at most
        ``flush_seconds``. Lingering matters: at one request a millisecond, writing what
        happens to be queued would mean an insert (and a writer thread competing with the
        event loop for the GIL) per request; a few polls a second cost nothing."""
        batch: list[_Queued] = []
        deadline = time.monotonic() + self._flush_seconds
        item = first
        while True:
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]  # only _Queued or _STOP
            if len(batch) >= self._batch_rows:
                return batch, False
            while True:
                try:
                    item = self._queue.get_nowait()
                    break
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return batch, False
                    time.sleep(min(remaining, _POLL_SECONDS))

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
                # A commit need not wait for its WAL flush: a warehouse crash may lose the
                # last fraction of a second of log rows, never their consistency.
                self._conn = psycopg2.connect(
                    self._url, connect_timeout=10, options="-c synchronous_commit=off"
                )
                with self._conn:
                    create_table(self._conn)
            with self._conn, self._conn.cursor() as cur:
                cur.copy_expert(_COPY, io.StringIO("".join(map(_copy_line, batch))))
        except psycopg2.Error as exc:
            self._dropped.inc(len(batch))
            log.warning("prediction log: %d rows not written: %s", len(batch), exc)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
