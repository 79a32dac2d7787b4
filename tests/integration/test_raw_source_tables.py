"""Raw data read where it lives (CHURN_RAW_SOURCE=tables): the contract checked in SQL with
the same one-line errors as for files, the rows copied into `raw` inside the warehouse, and
new rows noticed by the source's data version.

The checks that hold on every engine reach it only through the warehouse interface and the
test's :class:`~tests.integration.test_warehouse_interface.Hands` (source tables made from
one engine-neutral :class:`~tests.integration.source_support.Shop`), so
``tests/spark/test_spark_warehouse.py`` runs them too (:data:`SOURCE_CHECKS`). The ingest
step's story through Dagster is Postgres's own (Dagster runs on Spark are not wired yet).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from churn_assets.data import contract
from churn_assets.data.contract import RawDataContractError, Violation, read_raw_tables
from churn_assets.definitions import defs
from churn_assets.defs.ingest import sensors
from churn_assets.defs.ingest.assets import RAW_SOURCE, SOURCE_DATA_VERSION
from churn_assets.lib.runs import run_job
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.source import CONTRACT, SourceChanged
from churn_assets.tables.warehouse import Warehouse
from tests.integration.source_support import (
    CUSTOMERS_COLUMNS,
    ORDERS_COLUMNS,
    SHOP,
    SOURCE,
    Shop,
    Table,
)
from tests.integration.test_warehouse_interface import Hands, PostgresHands

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 15, tzinfo=UTC)
FUTURE = contract.future_rule(contract.latest_allowed(NOW))
LONG = "x" * 257


# Postgres's fixtures; tests/spark/test_spark_warehouse.py gives the checks its own.
@pytest.fixture
def url(fresh_database_url: str) -> str:
    return fresh_database_url


@pytest.fixture
def wh(url: str) -> Warehouse:
    return PostgresWarehouse(url)


@pytest.fixture
def hands(url: str) -> Hands:
    return PostgresHands(url)


def _typed(rows: list[tuple[object, ...]]) -> list[tuple[tuple[str, object], ...]]:
    """Rows with each value's Python type: Decimal 10.5 == float 10.5, but not here."""
    return [tuple((type(v).__name__, v) for v in row) for row in rows]


def _lines(violations: list[Violation]) -> list[tuple[str, str, str, int]]:
    """What a violation names, without its examples (quoted as the engine prints values)."""
    return [(v.file, v.column, v.rule, v.bad_rows) for v in violations]


# --- a clean source ---------------------------------------------------------------------


def test_a_clean_source_is_copied_into_raw_as_a_file_load_of_the_same_cells_would(
    wh: Warehouse, hands: Hands, tmp_path: Path
) -> None:
    hands.make_source(SHOP)
    check = wh.check_source(SOURCE, NOW)
    assert check.violations == []
    assert check.fingerprint is not None
    assert (str(check.first_order_on), str(check.last_order_on)) == ("2024-01-01", "2024-05-03")
    result = wh.load_raw_from_source(SOURCE, check.fingerprint, "run-1")
    assert result.row_counts == {"customers": 3, "orders": 5}
    load = wh.latest_load()
    assert load is not None and load["load_id"] == result.load_id
    assert (load["dagster_run_id"], load["orders_file"]) == ("run-1", "table shop.orders")
    assert load["customers_sha256"] == check.fingerprint.digest("customers")
    assert wh.last_order_date() == check.last_order_on
    from_tables = {table: hands.raw_rows(table) for table in CONTRACT}
    c1, c2, c3 = from_tables["customers"]
    assert c1 == ("c1", datetime(2023, 12, 1), "a@x.io")  # offsets -> naive UTC
    assert c2 == ("c2", None, None)
    assert c3 == ("c3", datetime(2024, 1, 2), None)  # trimmed; blank text is missing
    o3 = from_tables["orders"][2]
    assert o3[:3] == ("3", "c2", datetime(2024, 3, 1, 8, 30))  # integer ids as text
    assert (Decimal(str(o3[3])), o3[4]) == (Decimal("99.99"), 3)

    # The same cells delivered as files, loaded on a warehouse without raw tables.
    for table in CONTRACT:
        hands.drop(f"raw.{table}")
    SHOP.write_csv(tmp_path / "raw")
    wh.load_raw_tables(read_raw_tables(tmp_path / "raw", now=NOW), "run-2")
    for table in CONTRACT:
        assert _typed(hands.raw_rows(table)) == _typed(from_tables[table]), table


def test_a_changed_source_changes_the_data_version_and_a_load_checked_before_is_refused(
    wh: Warehouse, hands: Hands
) -> None:
    hands.make_source(SHOP)
    first = wh.observe_source(SOURCE)
    assert (first.customers_rows, first.orders_rows) == (3, 5)
    assert wh.observe_source(SOURCE) == first  # nothing new: the same version
    check = wh.check_source(SOURCE, NOW)
    assert check.fingerprint is not None
    wh.load_raw_from_source(SOURCE, check.fingerprint)
    loaded = {table: hands.raw_rows(table) for table in CONTRACT}
    load = wh.latest_load()

    # A value changed in place: the data version cannot see it, the load's proof does.
    orders = SHOP.tables["orders"]
    changed = [("1", "c1", "2024-01-01 10:00:00+00", "11", "1", "books"), *orders.rows[1:]]
    hands.make_source(Shop({**SHOP.tables, "orders": replace(orders, rows=changed)}))
    assert wh.observe_source(SOURCE).data_version == first.data_version
    with pytest.raises(SourceChanged, match="nothing was loaded"):
        wh.load_raw_from_source(SOURCE, check.fingerprint)

    # A broken delivery of a new order: a new version, and the rules it breaks.
    hands.append("orders", [("6", "c9", "2024-05-04 00:00:00+00", "-1", "1", None)])
    second = wh.observe_source(SOURCE)
    assert second.data_version != first.data_version and second.orders_rows == 6
    broken = wh.check_source(SOURCE, NOW)
    assert _lines(broken.violations) == [
        ("shop.orders", "amount", "amount >= 0", 1),
        ("shop.orders", "customer_id", contract.KNOWN_CUSTOMER, 1),
    ]
    assert {table: hands.raw_rows(table) for table in CONTRACT} == loaded  # raw as it was
    assert wh.latest_load() == load

    hands.append("customers", [("c4", None, None)])
    assert wh.observe_source(SOURCE).data_version != second.data_version


# --- broken sources: every broken rule one line, naming table, column, rule and rows ------

# Columns of their own types (read natively), one broken rule per offending row and column.
NATIVE = Shop(
    {
        "customers": Table(
            {"customer_id": "text", "signup_at": "boolean", "email": "text"},
            [("c1", None, "a@x.io"), ("c2", "true", None), ("c3", None, None), (" ", None, None)],
        ),
        "orders": Table(
            {**ORDERS_COLUMNS, "order_id": "text", "ordered_at": "timestamp"}
            | {"amount": "double precision", "item_count": "numeric"},
            [
                ("o1", "c1", "2024-01-01 10:00", "-4.5", "1", "books"),
                ("o2", "c2", "2024-02-01", "NaN", None, None),
                ("o3", "c2", "2024-03-01 08:30", "1e13", "1.5", "toys"),
                ("o4", "c9", "2024-04-20", "5", "0", "toys"),
                ("o4", "c3", "2024-04-21", "5", "2000000", LONG),
                ("o6", None, "2030-01-01", "7", "1", "books"),
                ("o7", "c1", "1899-12-31", "7", "1", None),
                (None, "c1", "2024-05-03", "7", "1", None),
            ],
        ),
    }
)
NATIVE_LINES = [
    ("shop.customers", "customer_id", contract.NOT_NULL, 1),
    ("shop.customers", "signup_at", contract.ISO_8601, 1),
    ("shop.orders", "order_id", contract.NOT_NULL, 1),
    ("shop.orders", "customer_id", contract.NOT_NULL, 1),
    ("shop.orders", "ordered_at", FUTURE, 1),
    ("shop.orders", "ordered_at", contract.NOT_BEFORE, 1),
    ("shop.orders", "amount", contract.FINITE, 1),
    ("shop.orders", "amount", "amount >= 0", 1),
    ("shop.orders", "amount", "amount <= 1,000,000,000,000", 1),
    ("shop.orders", "item_count", "integer", 1),
    ("shop.orders", "item_count", "item_count >= 1", 1),
    ("shop.orders", "item_count", "item_count <= 1,000,000", 1),
    ("shop.orders", "category", "at most 256 characters", 1),
    ("shop.orders", "order_id", contract.UNIQUE, 2),
    ("shop.orders", "customer_id", contract.KNOWN_CUSTOMER, 1),
]

# Everything as text, parsed as a file's cells are; customers without a column.
TEXT = Shop(
    {
        "customers": Table(
            {"customer_id": "text", "signup_at": "text"}, [("c1", "2024-01-01"), ("c2", None)]
        ),
        "orders": Table(
            dict.fromkeys(ORDERS_COLUMNS, "text"),
            [
                ("o1", "c1", "yesterday", "10", "1", None),
                ("o2", "c1", "2024-02-30", "ten", "1", None),
                ("o3", "c1", "2030-01-01", " NaN ", "1.5", None),
                ("o4", "c1", "2024-01-01T10:00:00+02:00", "-1e400", "0", None),
                ("o5", "c1", None, "1e400", "2000000", None),
                ("o6", "c1", "2024-01-01", None, "x", None),
                (" o7 ", "c\x01", "2024-01-01", "1", "1", None),
            ],
        ),
    }
)
TEXT_LINES = [
    ("shop.customers", "email", contract.column_present_rule(["customer_id", "signup_at"]), 0),
    ("shop.orders", "customer_id", contract.NO_CONTROL_CHARACTERS, 1),
    ("shop.orders", "ordered_at", contract.NOT_NULL, 1),
    ("shop.orders", "ordered_at", contract.ISO_8601, 2),
    ("shop.orders", "ordered_at", FUTURE, 1),
    ("shop.orders", "amount", contract.NOT_NULL, 1),
    ("shop.orders", "amount", contract.FINITE, 1),
    ("shop.orders", "amount", "numeric", 1),
    ("shop.orders", "amount", "amount >= 0", 1),
    ("shop.orders", "amount", "amount <= 1,000,000,000,000", 1),
    ("shop.orders", "item_count", "integer", 2),
    ("shop.orders", "item_count", "item_count >= 1", 1),
    ("shop.orders", "item_count", "item_count <= 1,000,000", 1),
]

# No orders table, no customers.
EMPTY = Shop({"customers": Table(CUSTOMERS_COLUMNS)})
EMPTY_LINES = [
    ("shop.orders", "", "a table or view that exists", 0),
    ("shop.customers", "", contract.AT_LEAST_ONE_ROW, 0),
]


def test_each_broken_rule_in_a_table_is_one_line_naming_table_column_rule_and_rows(
    wh: Warehouse, hands: Hands
) -> None:
    for shop, lines in ((NATIVE, NATIVE_LINES), (TEXT, TEXT_LINES), (EMPTY, EMPTY_LINES)):
        hands.make_source(shop)
        check = wh.check_source(SOURCE, NOW)
        assert _lines(check.violations) == lines
        assert check.fingerprint is None
        error = str(RawDataContractError(check.violations))
        assert len(error.splitlines()) == 1 + len(lines)  # one line each
        if shop is NATIVE:
            assert "; e.g. order_id 'o1': '-4.5'" in error
            assert "'unique' in 2 row(s); e.g. order_id 'o4'" in error
            assert "'exists in customers.customer_id' in 1 row(s); e.g. customer_id 'c9'" in error
            assert "'not null' in 1 row(s); e.g. customer_id null: ' '" in error
    with pytest.raises(ValueError, match=r"shop\.orders: breaks rule 'a table or view that"):
        wh.observe_source(SOURCE)
    assert hands.raw_rows("orders") == []  # a check writes nothing


# The checks every engine runs (tests/spark/test_spark_warehouse.py imports them).
SOURCE_CHECKS = (
    test_a_clean_source_is_copied_into_raw_as_a_file_load_of_the_same_cells_would,
    test_a_changed_source_changes_the_data_version_and_a_load_checked_before_is_refused,
    test_each_broken_rule_in_a_table_is_one_line_naming_table_column_rule_and_rows,
)


# --- the ingest step (Postgres) ---------------------------------------------------------


def _sql(url: str, statements: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statements)
    conn.close()


@pytest.fixture
def tables_mode(url: str, hands: Hands, monkeypatch: pytest.MonkeyPatch) -> str:
    hands.make_source(SHOP)
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", url)
    monkeypatch.setenv("CHURN_RAW_SOURCE", "tables")
    monkeypatch.setenv("CHURN_RAW_CUSTOMERS_TABLE", SOURCE.customers)
    monkeypatch.setenv("CHURN_RAW_ORDERS_TABLE", SOURCE.orders)
    return url


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    sensor = sensors.defs().get_sensor_def(sensors.RAW_FILES_SENSOR)
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        return sensor.evaluate_tick(context)


def test_the_ingest_step_loads_a_clean_table_and_a_broken_one_changes_nothing(
    tables_mode: str, hands: Hands, instance: dg.DagsterInstance
) -> None:
    # The sensor observes the source, records its data version and asks for the load.
    tick = _tick(instance, None)
    assert len(tick.run_requests) == 1
    (observation,) = tick.asset_events  # type: ignore[misc]
    assert observation.asset_key == RAW_SOURCE
    version = observation.tags[sensors.DATA_VERSION_TAG]

    result = run_job(defs(), instance, "ingest_job")
    assert result.success
    orders = result.asset_materializations_for_node("raw_tables")[1]
    assert orders.metadata[SOURCE_DATA_VERSION].value == version  # type: ignore[attr-defined]
    loaded = {table: hands.raw_rows(table) for table in CONTRACT}
    assert len(loaded["orders"]) == 5

    # Loaded: the next tick observes nothing new and asks for nothing.
    again = _tick(instance, tick.cursor)
    assert again.run_requests == [] and not again.asset_events

    # A broken delivery: the step fails naming the table, and `raw` stays as it was.
    _sql(tables_mode, "insert into shop.orders values (6, 'c9', '2024-05-04', -1, 1, null)")
    tick = _tick(instance, again.cursor)
    assert len(tick.run_requests) == 1 and len(tick.asset_events) == 1
    failed = run_job(defs(), instance, "ingest_job")
    assert not failed.success
    message = str(failed.all_events)
    assert "shop.orders: column 'amount' breaks rule 'amount >= 0' in 1 row(s)" in message
    assert "shop.orders: column 'customer_id' breaks rule 'exists in customers" in message
    assert {table: hands.raw_rows(table) for table in CONTRACT} == loaded
