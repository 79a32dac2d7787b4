"""The online prediction log's retention on a real Postgres: rows scored before the
retention go (by ``prune_prediction_log``, and by the scorer's own writer), newer rows stay,
and a log an older scorer created keeps its rows. Each test gets an empty database of its
own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from psycopg2.extras import execute_values

from churn_assets.infra import warehouse
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.prediction_log import LoggedPrediction, PredictionLog
from churn_assets.serving.server import ServingError, build_service
from churn_assets.tables.online_predictions import COLUMNS
from churn_assets.tables.postgres.online_predictions import SCORED_AT_INDEX
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from tests.integration.serving_support import wait_until

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def _row(request_id: str, scored_at: datetime) -> tuple[object, ...]:
    values = {
        "request_id": request_id,
        "scored_at": scored_at,
        "input_hash": "0" * 64,
        "model_name": "churn-model",
        "model_version": "1",
        "model_sha256": "a" * 64,
        "churn_probability": 0.5,
        "risk_band": "medium",
        "latency_ms": 1.0,
        "served_by": "champion",
    }
    return tuple(values.get(column) for column in COLUMNS)


def _insert(url: str, rows: list[tuple[object, ...]]) -> None:
    PostgresWarehouse(url).create_prediction_log()
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        execute_values(
            cur, f"insert into {ONLINE_PREDICTIONS_TABLE} ({', '.join(COLUMNS)}) values %s", rows
        )


def _request_ids(url: str) -> list[str]:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"select request_id from {ONLINE_PREDICTIONS_TABLE} order by request_id")
        return [request_id for (request_id,) in cur.fetchall()]


# Seven rows from 40 to 34 days old, and three from 29 days to a minute old: with a 30-day
# retention the first seven go and the last three stay.
OLD = [_row(f"old-{i}", NOW - timedelta(days=40 - i)) for i in range(7)]
NEW = [
    _row(f"new-{i}", when)
    for i, when in enumerate(
        [NOW - timedelta(days=29), NOW - timedelta(hours=1), NOW - timedelta(minutes=1)]
    )
]


def test_prune_deletes_the_rows_scored_before_the_cutoff_batch_by_batch(
    fresh_database_url: str,
) -> None:
    _insert(fresh_database_url, OLD + NEW)
    cutoff = NOW - timedelta(days=30)
    log = PostgresWarehouse(fresh_database_url)
    deleted = log.prune_prediction_log(cutoff, batch_rows=3)  # 3 + 3 + 1: three batches
    assert deleted == len(OLD)
    assert _request_ids(fresh_database_url) == ["new-0", "new-1", "new-2"]
    assert log.prune_prediction_log(cutoff) == 0  # nothing older left


def test_a_row_scored_exactly_at_the_cutoff_is_kept(fresh_database_url: str) -> None:
    cutoff = NOW - timedelta(days=30)
    _insert(fresh_database_url, [_row("at", cutoff), _row("before", cutoff - timedelta(0, 1))])
    assert PostgresWarehouse(fresh_database_url).prune_prediction_log(cutoff) == 1
    assert _request_ids(fresh_database_url) == ["at"]


def test_pruning_a_warehouse_without_the_log_creates_nothing(fresh_database_url: str) -> None:
    assert PostgresWarehouse(fresh_database_url).prune_prediction_log(NOW) == 0
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (ONLINE_PREDICTIONS_TABLE,))
        assert cur.fetchone()[0] is None


def test_the_writer_deletes_rows_older_than_its_retention_and_keeps_newer_ones(
    fresh_database_url: str,
) -> None:
    """The scorer's writer prunes on its own (no Dagster, no daemon), a small batch per wake,
    and goes on writing meanwhile."""
    _insert(fresh_database_url, OLD + NEW)
    log = PredictionLog(
        PostgresWarehouse(fresh_database_url),
        ServingMetrics(),
        flush_seconds=0.05,
        retention_days=30,
        prune_batch_rows=2,  # 7 old rows: four DELETEs over four wakes
    )
    log.start()
    try:
        wait_until(
            lambda: not any(r.startswith("old-") for r in _request_ids(fresh_database_url)),
            "the writer's retention pass",
        )
    finally:
        log.close()
    assert _request_ids(fresh_database_url) == ["new-0", "new-1", "new-2"]


def test_a_writer_without_retention_deletes_nothing(fresh_database_url: str) -> None:
    _insert(fresh_database_url, OLD + NEW)
    log = PredictionLog(PostgresWarehouse(fresh_database_url), ServingMetrics(), flush_seconds=0.01)
    log.start()
    try:
        log.submit(
            LoggedPrediction(
                request_id="written",
                scored_at=NOW,
                customer_id=None,
                input_hash="0" * 64,
                features_as_of=None,
                model_name="churn-model",
                model_version="1",
                model_sha256="a" * 64,
                churn_probability=0.5,
                risk_band="medium",
                latency_ms=1.0,
                served_by="champion",
            )
        )
        wait_until(lambda: "written" in _request_ids(fresh_database_url), "the writer's batch")
    finally:
        log.close()  # its loop ran (and would have pruned) at least once
    assert len(_request_ids(fresh_database_url)) == len(OLD + NEW) + 1


def test_an_older_log_gains_the_scored_at_index_keeps_its_rows_and_can_be_pruned(
    fresh_database_url: str,
) -> None:
    """A home whose log an older scorer created (no index on scored_at): the writer's first
    connection, or the analytics step, adds the index; every row stays until it is due."""
    schema = ONLINE_PREDICTIONS_TABLE.split(".")[0]
    _insert(fresh_database_url, OLD + NEW)
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute(f"drop index {schema}.{SCORED_AT_INDEX}")  # as an older scorer left it

    def indexes() -> list[str]:
        with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
            cur.execute("select indexname from pg_indexes where schemaname = %s", (schema,))
            return [name for (name,) in cur.fetchall()]

    assert indexes() == []
    log = PostgresWarehouse(fresh_database_url)
    log.create_prediction_log()
    assert indexes() == [SCORED_AT_INDEX]
    assert len(_request_ids(fresh_database_url)) == len(OLD + NEW)
    assert log.prune_prediction_log(NOW - timedelta(days=30)) == len(OLD)


def test_the_scorer_refuses_a_retention_shorter_than_the_label_window_plus_a_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before it loads anything: the warehouse here does not even exist."""
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    monkeypatch.setenv("CHURN_PREDICTION_LOG_RETENTION_DAYS", "100")  # < 90 + 31
    with pytest.raises(ServingError, match=r"CHURN_PREDICTION_LOG_RETENTION_DAYS=100 .* 121"):
        build_service()
