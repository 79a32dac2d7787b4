"""The online feature copy without a warehouse: snapshots built from plain rows, refreshes
driven by a loader the test controls (the warehouse itself: tests/integration/)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import pytest

from churn_assets.infra.warehouse import WarehouseError
from churn_assets.serving.features import (
    FeatureSnapshot,
    Fingerprint,
    OnlineFeatureSource,
)
from churn_assets.serving.metrics import ServingMetrics

NAMES = ("as_of", "customer_id", "days", "revenue", "domain")
JAN, FEB = date(2025, 1, 31), date(2025, 2, 28)


def _rows(as_of: date, revenue: float = 10.5) -> list[tuple[Any, ...]]:
    return [
        (as_of, "c1", 3, revenue, "free"),
        (as_of, "c2", 70_000, 0.1, "business"),  # an int that needs more than 16 bits
        (as_of, "c3", None, None, None),  # NULLs come back as None
    ]


class Table:
    """A loader over rows the test replaces, failing while ``down`` is set."""

    def __init__(self, rows: Sequence[Sequence[Any]]) -> None:
        self.rows = list(rows)
        self.version = 1
        self.down: str | None = None
        self.loads = 0

    def set(self, rows: Sequence[Sequence[Any]]) -> None:
        self.rows, self.version = list(rows), self.version + 1

    def __call__(self, held: Fingerprint | None) -> FeatureSnapshot | None:
        if self.down is not None:
            raise WarehouseError(self.down)
        if held == (self.version,):
            return None
        self.loads += 1
        return FeatureSnapshot.from_rows(NAMES, self.rows, (self.version,))


def test_snapshot_returns_each_row_with_its_values_and_python_types() -> None:
    snapshot = FeatureSnapshot.from_rows(NAMES, _rows(JAN))
    for row in _rows(JAN):
        got = snapshot.row(row[1])
        assert got == dict(zip(NAMES, row, strict=True))
        assert got is not None and list(got) == list(NAMES)  # the table's column order
        assert [type(v) for v in got.values()] == [type(v) for v in row]
    assert snapshot.row("nobody") is None
    assert (snapshot.as_of, snapshot.rows) == (JAN, 3)


def test_snapshot_stores_columns_as_arrays_not_objects() -> None:
    rows = [(JAN, f"c{i}", i, float(i), "free") for i in range(1000)]
    snapshot = FeatureSnapshot.from_rows(NAMES, rows)
    # as_of and domain as 1-byte codes, days as int16, revenue as float64
    assert snapshot.nbytes == 1000 * (1 + 2 + 8 + 1)
    assert snapshot.row("c999") == {
        "as_of": JAN,
        "customer_id": "c999",
        "days": 999,
        "revenue": 999.0,
        "domain": "free",
    }


def test_snapshot_refuses_a_customer_id_twice() -> None:
    with pytest.raises(ValueError, match="more than once"):
        FeatureSnapshot.from_rows(NAMES, [*_rows(JAN), (JAN, "c1", 1, 1.0, "free")])


def test_source_answers_from_the_copy_and_reports_its_period() -> None:
    metrics = ServingMetrics()
    source = OnlineFeatureSource(Table(_rows(JAN)), metrics=metrics)
    assert source.refresh()
    assert source.get("c1") == dict(zip(NAMES, _rows(JAN)[0], strict=True))
    assert source.get("nobody") is None
    assert set(source.get_many(["c2", "nobody", "c1"])) == {"c1", "c2"}
    state = source.state()
    assert state.available and not state.refresh_failed and state.last_error is None
    assert (state.as_of, state.rows) == (JAN, 3)
    assert not source.refresh()  # the table did not change: nothing loaded
    sample = metrics.registry.get_sample_value
    assert sample("churn_features_refresh_total", {"result": "success"}) == 1
    assert sample("churn_features_refresh_total", {"result": "unchanged"}) == 1
    assert sample("churn_features_as_of_timestamp_seconds") == 1738281600  # 2025-01-31 UTC


def test_source_without_a_copy_raises_a_warehouse_error_naming_the_reason() -> None:
    table = Table(_rows(JAN))
    table.down = "connection refused"
    source = OnlineFeatureSource(table)
    assert not source.refresh()
    assert not source.state().available
    with pytest.raises(WarehouseError, match=r"no copy .* connection refused"):
        source.get("c1")


def test_failed_refresh_keeps_the_copy_answering_and_the_next_one_catches_up() -> None:
    table, metrics = Table(_rows(JAN)), ServingMetrics()
    source = OnlineFeatureSource(table, metrics=metrics)
    source.refresh()
    table.down = "the warehouse is gone"
    table.set(_rows(FEB, revenue=99.0))
    assert not source.refresh()
    state = source.state()
    assert state.available and state.refresh_failed and state.as_of == JAN
    assert state.last_error is not None and "the warehouse is gone" in state.last_error.message
    assert source.get("c1") == dict(zip(NAMES, _rows(JAN)[0], strict=True))

    table.down = None
    assert source.refresh()
    state = source.state()
    assert not state.refresh_failed and state.as_of == FEB
    assert state.last_error is not None  # kept after recovery, like the pooled source's
    assert source.get("c1") == dict(zip(NAMES, _rows(FEB, revenue=99.0)[0], strict=True))
    sample = metrics.registry.get_sample_value
    assert sample("churn_features_refresh_total", {"result": "failure"}) == 1
    assert sample("churn_features_as_of_timestamp_seconds") == 1740700800  # 2025-02-28


def test_a_table_that_cannot_be_copied_keeps_the_old_copy() -> None:
    table = Table(_rows(JAN))
    source = OnlineFeatureSource(table)
    source.refresh()
    table.set([*_rows(FEB), (FEB, "c1", 1, 1.0, "free")])  # c1 twice: ambiguous
    assert not source.refresh()
    assert source.state().refresh_failed and source.state().as_of == JAN
    assert source.get("c1") == dict(zip(NAMES, _rows(JAN)[0], strict=True))


def test_a_batch_reads_one_copy_while_a_refresh_swaps_in_the_next() -> None:
    """Readers racing a stream of swaps only ever see rows of a single period per batch."""
    table = Table(_rows(JAN))
    source = OnlineFeatureSource(table)
    source.refresh()
    stop, mixed = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            periods = {row["as_of"] for row in source.get_many(["c1", "c2", "c3"]).values()}
            if len(periods) != 1:
                mixed.append(periods)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for i in range(200):
        table.set(_rows(FEB if i % 2 else JAN))
        assert source.refresh()
    stop.set()
    for reader in readers:
        reader.join()
    assert mixed == []


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_poller_follows_the_table_and_stops_cleanly() -> None:
    table = Table(_rows(JAN))
    source = OnlineFeatureSource(table, poll_seconds=0.05)
    source.refresh()
    source.start()
    assert source.polling
    table.set(_rows(FEB))
    _wait_until(lambda: source.state().as_of == FEB, "the poller to load February")
    source.close()
    assert not source.polling
    assert table.loads == 2  # unchanged polls loaded nothing


def test_poll_seconds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="poll_seconds"):
        OnlineFeatureSource(Table([]), poll_seconds=0)
