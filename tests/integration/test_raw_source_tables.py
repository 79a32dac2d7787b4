"""Raw data read where it lives (CHURN_RAW_SOURCE=tables): the contract checked in SQL with
the same one-line errors as for files, the rows copied into `raw` inside the warehouse, and
new rows noticed by the source's data version."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import psycopg2
import pytest

from churn_assets.data.contract import RawDataContractError
from churn_assets.definitions import defs
from churn_assets.defs.ingest import sensors
from churn_assets.defs.ingest.assets import RAW_SOURCE, SOURCE_DATA_VERSION
from churn_assets.lib.runs import run_job
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.source import SourceChanged, SourceTables

pytestmark = pytest.mark.integration

SOURCE = SourceTables("shop.customers", "shop.orders")
NOW = datetime(2025, 1, 15, tzinfo=UTC)

# Four whole months of orders (2024-01 .. 2024-04) for three customers.
_SCHEMA = """
create schema shop;
create table shop.customers (customer_id text, signup_at timestamptz, email text);
create table shop.orders (order_id text, customer_id text, ordered_at timestamp,
                          amount numeric, item_count integer, category text);
insert into shop.customers values
    ('c1', '2023-12-01 00:00+00', 'a@x.io'), ('c2', null, null), ('c3', '2024-01-02', '  ');
insert into shop.orders values
    ('o1', 'c1', '2024-01-01 10:00', 10.5, 1, 'books'),
    ('o2', 'c2', '2024-02-01', 0, null, null),
    ('o3', 'c2', '2024-03-01 08:30', 99.99, 3, 'toys'),
    ('o4', 'c3', '2024-04-20', 5, 2, 'toys'),
    ('o5', 'c1', '2024-05-03', 7, 1, 'books');
"""


def _sql(url: str, statements: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statements)
    conn.close()


def _raw(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        tables = {}
        for name in ("customers", "orders", "loads"):
            cur.execute("select to_regclass(%s)", (f"raw.{name}",))
            if cur.fetchone()[0] is None:
                tables[name] = []
                continue
            cur.execute(f"select * from raw.{name} order by 1")
            tables[name] = cur.fetchall()
    conn.close()
    return tables


@pytest.fixture
def shop(fresh_database_url: str) -> str:
    _sql(fresh_database_url, _SCHEMA)
    return fresh_database_url


def test_a_clean_source_passes_and_is_copied_into_raw_as_a_file_load_would(shop: str) -> None:
    client = PostgresWarehouse(shop)
    check = client.check_source(SOURCE, NOW)
    assert check.violations == []
    assert check.fingerprint is not None
    assert (str(check.first_order_on), str(check.last_order_on)) == ("2024-01-01", "2024-05-03")
    result = client.load_raw_from_source(SOURCE, check.fingerprint, "run-1")
    assert result.row_counts == {"customers": 3, "orders": 5}
    raw = _raw(shop)
    c1, c2, c3 = (row[:3] for row in raw["customers"])
    assert c1 == ("c1", datetime(2023, 12, 1), "a@x.io")  # timestamptz -> naive UTC
    assert c2 == ("c2", None, None)
    assert c3[2] is None  # blank text is missing, as in a file
    o2 = raw["orders"][1]
    assert (o2[0], float(o2[3]), o2[4], o2[5]) == ("o2", 0.0, None, None)
    (load,) = raw["loads"]
    assert load[1:3] == ("run-1", "table shop.customers")
    assert load[3] == check.fingerprint.digest("customers")


def test_a_source_that_changed_after_its_check_is_not_loaded(shop: str) -> None:
    client = PostgresWarehouse(shop)
    check = client.check_source(SOURCE, NOW)
    assert check.fingerprint is not None
    _sql(shop, "update shop.orders set amount = 11 where order_id = 'o1'")
    with pytest.raises(SourceChanged):
        client.load_raw_from_source(SOURCE, check.fingerprint)
    assert _raw(shop)["orders"] == []


# Each case breaks one rule in the source; the error names table, column, rule and rows.
VIOLATIONS = [
    # required column missing
    (
        "alter table shop.orders drop column amount",
        "shop.orders: column 'amount' breaks rule 'column present",
        None,
    ),
    # a column of a type the contract cannot read
    (
        "alter table shop.orders alter column ordered_at type boolean using true",
        "shop.orders: column 'ordered_at' breaks rule 'ISO 8601 date/timestamp' in 5 row(s)",
        None,
    ),
    # a null key
    (
        "update shop.orders set order_id = null where order_id in ('o1', 'o2')",
        "shop.orders: column 'order_id' breaks rule 'not null' in 2 row(s)",
        None,
    ),
    # an empty id is a missing one
    (
        "update shop.customers set customer_id = ' ' where customer_id = 'c3'",
        "shop.customers: column 'customer_id' breaks rule 'not null' in 1 row(s)",
        None,
    ),
    # duplicate ids: every row sharing one
    (
        "update shop.orders set order_id = 'o1' where order_id in ('o2', 'o3')",
        "shop.orders: column 'order_id' breaks rule 'unique' in 3 row(s)",
        None,
    ),
    # amounts out of range
    (
        "update shop.orders set amount = -4.5 where order_id in ('o1', 'o2')",
        "shop.orders: column 'amount' breaks rule 'amount >= 0' in 2 row(s)",
        "order_id 'o1': '-4.5'",
    ),
    (
        "update shop.orders set amount = 1e13 where order_id = 'o1'",
        "shop.orders: column 'amount' breaks rule 'amount <= 1,000,000,000,000' in 1 row(s)",
        None,
    ),
    (
        "update shop.orders set amount = 'NaN' where order_id = 'o1'",
        "shop.orders: column 'amount' breaks rule 'finite (not inf, -inf or NaN)' in 1 row(s)",
        None,
    ),
    # quantities out of range
    (
        "update shop.orders set item_count = 0 where order_id = 'o1'",
        "shop.orders: column 'item_count' breaks rule 'item_count >= 1' in 1 row(s)",
        None,
    ),
    (
        "update shop.orders set item_count = 2000000 where order_id = 'o1'",
        "shop.orders: column 'item_count' breaks rule 'item_count <= 1,000,000' in 1 row(s)",
        None,
    ),
    # an order of an unknown customer
    (
        "update shop.orders set customer_id = 'c9' where order_id = 'o4'",
        "shop.orders: column 'customer_id' breaks rule 'exists in customers.customer_id' in 1 row",
        "customer_id 'c9'",
    ),
    # dates in the future, or before 1900
    (
        "update shop.orders set ordered_at = '2030-01-01' where order_id = 'o5'",
        "shop.orders: column 'ordered_at' breaks rule 'not in the future (after 2025-01-16 00:00",
        None,
    ),
    (
        "update shop.customers set signup_at = '1899-12-31' where customer_id = 'c1'",
        "shop.customers: column 'signup_at' breaks rule 'not before 1900-01-01' in 1 row(s)",
        None,
    ),
    # text where a date or a number belongs: parsed as in a file
    (
        "alter table shop.orders alter column ordered_at type text;"
        " update shop.orders set ordered_at = 'yesterday' where order_id = 'o1'",
        "shop.orders: column 'ordered_at' breaks rule 'ISO 8601 date/timestamp' in 1 row(s)",
        None,
    ),
    (
        "alter table shop.orders alter column amount type text;"
        " update shop.orders set amount = 'ten' where order_id = 'o1'",
        "shop.orders: column 'amount' breaks rule 'numeric' in 1 row(s)",
        None,
    ),
    (
        "alter table shop.orders alter column item_count type numeric;"
        " update shop.orders set item_count = 1.5 where order_id = 'o1'",
        "shop.orders: column 'item_count' breaks rule 'integer' in 1 row(s)",
        None,
    ),
    # ids too long, text too long
    (
        "update shop.orders set category = repeat('x', 257) where order_id = 'o1'",
        "shop.orders: column 'category' breaks rule 'at most 256 characters' in 1 row(s)",
        None,
    ),
    # no rows at all
    ("delete from shop.orders", "shop.orders breaks rule 'at least one data row'", None),
    # a table that does not exist
    ("drop table shop.orders", "shop.orders breaks rule 'a table or view that exists'", None),
]


@pytest.mark.parametrize(("breakage", "line", "example"), VIOLATIONS, ids=lambda v: None)
def test_each_broken_rule_in_a_table_is_one_line_naming_table_column_rule_and_rows(
    shop: str, breakage: str, line: str, example: str | None
) -> None:
    _sql(shop, breakage)
    check = PostgresWarehouse(shop).check_source(SOURCE, NOW)
    text = str(RawDataContractError(check.violations))
    found = [str(v) for v in check.violations if str(v).startswith(line)]
    assert found, text
    assert all("\n" not in str(v) for v in check.violations)
    if example is not None:
        assert example in found[0], found[0]


def test_integer_ids_and_iso_text_dates_load_as_their_text(fresh_database_url: str) -> None:
    _sql(
        fresh_database_url,
        """
        create schema shop;
        create table shop.customers (customer_id bigint, signup_at date, email text);
        create table shop.orders (order_id bigint, customer_id bigint, ordered_at text,
                                  amount double precision, item_count bigint, category text);
        insert into shop.customers values (17, '2024-01-01', null);
        insert into shop.orders values (1, 17, '2024-01-05T10:00:00+02:00', 12.5, 1, 'x');
        """,
    )
    client = PostgresWarehouse(fresh_database_url)
    check = client.check_source(SOURCE, NOW)
    assert check.violations == [] and check.fingerprint is not None
    client.load_raw_from_source(SOURCE, check.fingerprint)
    raw = _raw(fresh_database_url)
    assert raw["customers"][0][:2] == ("17", datetime(2024, 1, 1))
    assert raw["orders"][0][:3] == ("1", "17", datetime(2024, 1, 5, 8, 0))


def test_the_data_version_changes_when_rows_are_added_and_not_otherwise(shop: str) -> None:
    client = PostgresWarehouse(shop)
    first = client.observe_source(SOURCE).data_version
    assert client.observe_source(SOURCE).data_version == first
    _sql(shop, "insert into shop.orders values ('o6', 'c2', '2024-05-04', 1, 1, null)")
    second = client.observe_source(SOURCE).data_version
    assert second != first
    _sql(shop, "insert into shop.customers values ('c4', null, null)")
    assert client.observe_source(SOURCE).data_version != second


@pytest.fixture
def tables_mode(shop: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", shop)
    monkeypatch.setenv("CHURN_RAW_SOURCE", "tables")
    monkeypatch.setenv("CHURN_RAW_CUSTOMERS_TABLE", SOURCE.customers)
    monkeypatch.setenv("CHURN_RAW_ORDERS_TABLE", SOURCE.orders)
    return shop


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    sensor = sensors.defs().get_sensor_def(sensors.RAW_FILES_SENSOR)
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        return sensor.evaluate_tick(context)


def test_the_ingest_step_loads_a_clean_table_and_a_broken_one_changes_nothing(
    tables_mode: str, instance: dg.DagsterInstance
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
    loaded = _raw(tables_mode)
    assert len(loaded["orders"]) == 5 and len(loaded["loads"]) == 1

    # Loaded: the next tick observes nothing new and asks for nothing.
    again = _tick(instance, tick.cursor)
    assert again.run_requests == [] and not again.asset_events

    # A broken delivery: the step fails naming the table, and `raw` stays as it was.
    _sql(tables_mode, "insert into shop.orders values ('o6', 'c9', '2024-05-04', -1, 1, null)")
    tick = _tick(instance, again.cursor)
    assert len(tick.run_requests) == 1 and len(tick.asset_events) == 1
    failed = run_job(defs(), instance, "ingest_job")
    assert not failed.success
    message = str(failed.all_events)
    assert "shop.orders: column 'amount' breaks rule 'amount >= 0' in 1 row(s)" in message
    assert "shop.orders: column 'customer_id' breaks rule 'exists in customers" in message
    assert _raw(tables_mode) == loaded
