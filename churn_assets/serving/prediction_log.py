"""The online prediction log: every served prediction into ``scoring.online_predictions``,
off the request path.

A request only formats its row as a line of text (the log's line format: ``COPY`` text) and
appends it to a bounded buffer (when the buffer is full the prediction is left out of the
log and counted, ``churn_prediction_log_dropped_total``), so a slow or absent warehouse never
slows a request. One writer thread takes the buffer in batches (``BATCH_ROWS`` rows, or what
is there after ``FLUSH_SECONDS``) and appends each through the warehouse interface's log
writer (:meth:`~churn_assets.tables.warehouse.Warehouse.prediction_log_writer`: one ``COPY``
on Postgres); it drains the buffer on :meth:`PredictionLog.close`, so the rows of a scorer
that stops cleanly are all written. A batch that cannot be written is dropped and counted
too; the next batch reconnects. With a shadow (:class:`ShadowScoring`; the scorer's is
:class:`~churn_assets.serving.challenger.ShadowScorer`), the writer first scores the batch
with the shadow model and adds its results to the lines, so shadow scoring costs the
request nothing either. What a request leaves for the shadow (:class:`ShadowJob`) and what
the shadow answers (:class:`ShadowScores`) are defined here, with the rows that carry them.

Why the request formats its own line: the writer shares the GIL with the event loop, and
a request that arrives while the writer runs Python waits for it. Formatting a 500-row batch
in the writer held the GIL ~5 ms at a time, and polling the queue every 50 ms woke it 20
times a second; together they made most of the p99 of ``/predict`` (benchmarks/RESULTS.md).
A line costs a request ~4 us, the same every time; the writer now wakes once per batch and
holds the GIL well under a millisecond.

The writer also keeps the log to its retention (``retention_days``: the policy rule
``prediction_log_retention_days``): at most once per ``prune_every_seconds`` (an hour) it
starts a pass that deletes the rows scored before now minus the retention, one
``prune_batch_rows`` DELETE (a ~8 ms transaction) per wake of the writer, between its
COPYs, until none is left; so a first pass over an old, big log never holds the writer up
and the buffer never waits long. Why a DELETE and not partitions: see
:mod:`churn_assets.tables.postgres.online_predictions`. A scorer that runs prunes without any
Dagster daemon; a log nobody writes to does not grow.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, Protocol

from churn_assets.infra.warehouse import WarehouseError
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.tables.online_predictions import LINE_FIELDS, PRUNE_BATCH_ROWS, SHADOW_FIELDS
from churn_assets.tables.warehouse import Warehouse

if TYPE_CHECKING:
    from churn_assets.ml.features import ModelInputs
    from churn_assets.serving.model_store import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 20_000  # ~10 s of a busy scorer's single requests
BATCH_ROWS = 500
FLUSH_SECONDS = 0.5  # about the longest a buffered prediction waits for its batch
PRUNE_EVERY_SECONDS = 3600.0  # how often a retention pass starts (the first at start-up)


class LoggedPrediction(NamedTuple):
    """What a request knows of its row of the log (the writer adds the shadow's columns).
    A tuple: built on the request path, 0.4 us against 1.6 for a frozen dataclass."""

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
    batch_item: int | None = None  # the item's index in a /predict/batch request


# A row is a line of text in the log's line format (tables/online_predictions.py:
# LINE_FIELDS; Postgres writes it with one COPY, ~10 us a row all in, where an INSERT cost
# ~30 us: benchmarks/RESULTS.md). The shadow's columns come last so the writer can append
# them to the line the request made.
if LoggedPrediction._fields + SHADOW_FIELDS != LINE_FIELDS:
    raise RuntimeError(f"LoggedPrediction is out of sync with {ONLINE_PREDICTIONS_TABLE}")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"
_NO_SHADOW = "\t".join(["", *[_NULL] * len(SHADOW_FIELDS)]) + "\n"


def _text(value: str | None) -> str:
    """A text column: escaped (customer ids may hold a backslash or a tab), or null."""
    return _NULL if value is None else value.translate(_COPY_ESCAPES)


def copy_head(p: LoggedPrediction) -> str:
    """The row's line, fields in :class:`LoggedPrediction`'s order (the shadow's columns
    and the line's end follow in the writer). Request ids (uuid4), input hashes (hex),
    timestamps, numbers and ``served_by`` need no escaping; floats use ``repr``, which
    round-trips exactly through float8."""
    return (
        f"{p.request_id}\t{p.scored_at.isoformat()}\t{_text(p.customer_id)}\t{p.input_hash}\t"
        f"{_text(p.features_as_of)}\t{_text(p.model_name)}\t{_text(p.model_version)}\t"
        f"{_text(p.model_sha256)}\t{p.churn_probability!r}\t{_text(p.risk_band)}\t"
        f"{p.latency_ms!r}\t{p.served_by}\t{_NULL if p.batch_item is None else p.batch_item}"
    )


def _shadow_tails(rows: int, scores: list[ShadowScores]) -> list[str]:
    """The end of each of ``rows`` lines: the shadow's columns (null without a result)."""
    tails = [_NO_SHADOW] * rows
    for model, indices, probabilities, bands in scores:
        prefix = f"\t{_text(model.version)}\t{_text(model.sha256)}\t"
        band_text = {band: _text(band) for band in set(bands)}
        for row, probability, band in zip(indices, probabilities, bands, strict=True):
            tails[row] = f"{prefix}{probability!r}\t{band_text[band]}\n"
    return tails


@dataclass(frozen=True)
class ShadowJob:
    """What a request leaves for the shadow: the second model and the row it scores
    (``row`` of ``inputs``: a batch's items share the batch's arrays)."""

    model: LoadedModel
    inputs: ModelInputs
    row: int = 0


class ShadowScores(NamedTuple):
    """One shadow model's answers for some rows of a batch (``rows`` index the batch)."""

    model: LoadedModel
    rows: list[int]
    probabilities: list[float]
    risk_bands: list[str]


class Buffered(NamedTuple):
    """What a request leaves in the buffer: its line so far, and what the shadow needs."""

    head: str
    risk_band: str  # the served band, to count the shadow's disagreements
    shadow: ShadowJob | None


class ShadowScoring(Protocol):
    """What the writer asks of a shadow: its answers for the rows of a batch that have a
    :class:`ShadowJob`, never raising for a row it cannot score (those rows are written
    without a shadow result)."""

    def score(self, batch: Sequence[Buffered]) -> list[ShadowScores]: ...


class PredictionLog:
    """Bounded buffer plus one writer thread; see the module docstring."""

    def __init__(
        self,
        warehouse: Warehouse,
        metrics: ServingMetrics,
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_rows: int = BATCH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
        shadow: ShadowScoring | None = None,
        retention_days: float | None = None,
        prune_every_seconds: float = PRUNE_EVERY_SECONDS,
        prune_batch_rows: int = PRUNE_BATCH_ROWS,
    ) -> None:
        """``retention_days`` None keeps every row (nothing is deleted). Nothing connects to
        ``warehouse`` before the writer's first batch."""
        self._writer = warehouse.prediction_log_writer()
        self._dropped = metrics.prediction_log_dropped
        # A deque, not a queue.Queue: append and popleft are atomic without a lock, and the
        # writer is woken once per full batch (or by its flush timeout), never per row.
        self._pending: collections.deque[Buffered] = collections.deque()
        self._capacity = capacity
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._shadow = shadow
        self._batch_ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._retention = None if retention_days is None else timedelta(days=retention_days)
        self._prune_every = prune_every_seconds
        self._prune_rows = prune_batch_rows
        self._next_pass = 0.0  # time.monotonic() from which the next pass may start
        self._cutoff: datetime | None = None  # while a pass runs: delete rows before it
        self._pruned = 0  # rows the running pass deleted so far

    def start(self) -> None:
        """Start the writer (the table is created before its first write)."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def submit(self, prediction: LoggedPrediction, shadow: ShadowJob | None = None) -> None:
        """Buffer one prediction (and what its shadow scores, if any), never waiting: a full
        buffer drops it (and counts it). Concurrent callers may overshoot the capacity by
        one row each; the bound is for memory, not exact."""
        pending = self._pending
        if len(pending) >= self._capacity:
            self._dropped.inc()
            return
        pending.append(Buffered(copy_head(prediction), prediction.risk_band, shadow))
        if len(pending) >= self._batch_rows and not self._batch_ready.is_set():
            self._batch_ready.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything buffered so far, then stop the writer."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._batch_ready.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("prediction log did not flush within %.0f s", timeout)

    def _run(self) -> None:
        while True:
            # Lingering matters: at one request a millisecond, writing what happens to be
            # buffered would mean a COPY (and a commit on the warehouse) per request.
            self._batch_ready.wait(self._flush_seconds)
            self._batch_ready.clear()
            stopping = self._stopping.is_set()
            while self._pending:
                batch = []
                for _ in range(min(len(self._pending), self._batch_rows)):
                    batch.append(self._pending.popleft())
                self._copy(self._lines(batch))
            if stopping:
                break
            self._prune_step()
        self._writer.close()

    def _lines(self, batch: list[Buffered]) -> list[str]:
        """The batch's COPY lines, with the shadow's results when there is a shadow."""
        scores = self._shadow.score(batch) if self._shadow is not None else []
        tails = _shadow_tails(len(batch), scores)
        return [buffered.head + tail for buffered, tail in zip(batch, tails, strict=True)]

    def _copy(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._writer.append(lines)
        except WarehouseError as exc:  # the writer reconnects on its next call
            self._dropped.inc(len(lines))
            log.warning("prediction log: %d rows not written: %s", len(lines), exc)

    def _prune_step(self) -> None:
        """One DELETE of the retention's pass, if a pass runs or is due (module docstring)."""
        if self._retention is None:
            return
        if self._cutoff is None:
            now = time.monotonic()
            if now < self._next_pass:
                return
            self._next_pass = now + self._prune_every
            self._cutoff = datetime.now(UTC) - self._retention
            self._pruned = 0
        try:
            deleted = self._writer.prune_before(self._cutoff, self._prune_rows)
        except WarehouseError as exc:
            # The rows stay until the next pass; the log itself is unharmed.
            log.warning("prediction log: rows before %s not deleted: %s", self._cutoff, exc)
            self._cutoff = None
            return
        self._pruned += deleted
        if deleted < self._prune_rows:  # nothing older left: the pass is over
            if self._pruned:
                log.info(
                    "prediction log: deleted %d rows scored before %s (retention)",
                    self._pruned,
                    self._cutoff.isoformat(timespec="seconds"),
                )
            self._cutoff = None
