"""One writer at a time: the warehouse write lock, alone and as a Dagster run holds it.

Regression (issue 10.2): two `churn run` on one CHURN_HOME interleaved, and a run
registered a model trained on the other run's data under its own name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import dagster as dg
import pytest

from churn_assets.defs.resources import ExternalPostgresWarehouse
from churn_assets.infra import warehouse

pytestmark = pytest.mark.integration


@pytest.fixture
def held(fresh_database_url: str) -> Iterator[str]:
    """The lock of a fresh database, held by `run other-run` until the test ends."""
    with warehouse.write_lock(fresh_database_url, "run other-run (churn_pipeline)", 0):
        yield fresh_database_url


def test_write_lock_refuses_at_once_naming_the_holder(held: str) -> None:
    with (
        pytest.raises(warehouse.WarehouseBusy) as caught,
        warehouse.write_lock(held, "run second", 0),
    ):
        pytest.fail("the lock was granted twice")
    message = str(caught.value)
    assert "being written by run other-run (churn_pipeline) (holding it since" in message
    assert "CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS" in message


def test_write_lock_waits_for_the_holder_then_proceeds(fresh_database_url: str) -> None:
    release = threading.Event()
    acquired = threading.Event()

    def first() -> None:
        with warehouse.write_lock(fresh_database_url, "run first", 0):
            acquired.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=first)
    thread.start()
    assert acquired.wait(timeout=30)
    seen: list[warehouse.LockHolder | None] = []

    def on_wait(holder: warehouse.LockHolder | None) -> None:
        seen.append(holder)
        release.set()  # the first writer finishes while the second waits

    with (
        warehouse.write_lock(fresh_database_url, "run second", 30, on_wait),
        warehouse.connect(fresh_database_url) as conn,
    ):
        holder = warehouse.lock_holder(conn)
    thread.join(timeout=30)
    assert [h.name if h else None for h in seen] == ["run first"]
    assert holder is not None and holder.name == "run second"


def test_write_lock_is_released_when_the_holder_dies(fresh_database_url: str) -> None:
    # A crashed run must not leave a stale lock: the server drops a dead session's locks.
    lock = warehouse.write_lock(fresh_database_url, "run crashed", 0)
    lock.__enter__()
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = 'churn writer run crashed'"
        )
        assert cur.fetchone() == (True,)
    with warehouse.write_lock(fresh_database_url, "run next", 5):
        pass


@dg.asset
def _writes(warehouse: ExternalPostgresWarehouse) -> int:
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("select 1")
        return int(cur.fetchone()[0])


def test_a_run_waits_for_the_warehouse_and_fails_naming_the_run_that_holds_it(held: str) -> None:
    resource = ExternalPostgresWarehouse(connection_url=held, lock_timeout_seconds=1)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_writes], resources={"warehouse": resource}, instance=instance, raise_on_error=False
        )
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert not result.success
    failures = [
        event.event_specific_data.error.message  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type_value == "RESOURCE_INIT_FAILURE"
    ]
    assert len(failures) == 1 and "being written by run other-run (churn_pipeline)" in failures[0]
    assert any("waiting up to 1 s for the warehouse" in message for message in logs), logs
