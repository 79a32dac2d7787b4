"""Per-period digests of a delivery's files (churn_assets.data.digests): equal rows give equal
digests, a changed row changes its own period's only."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from churn_assets.data.digests import _string_hashes, digest_raw_files, period_end_days
from churn_assets.data.generator import GeneratorConfig, generate
from churn_assets.data.scenarios import write_month
from churn_assets.periods import Period, PeriodDigests, period_end, periods_to_rebuild
from tests.raw_files import write_csv_delivery

CUSTOMERS = ["c1,2025-01-03 09:00:00,a@b.io", "c2,,", "c3,2025-02-01 00:00:00,x@uni.edu"]
ORDERS = [
    "o1,c1,2025-01-05 10:00:00,12.5,1,books",
    "o2,c2,2025-01-31 23:59:59,3,2,toys",
    "o3,c1,2025-02-10 08:00:00,7.25,,books",
    "o4,c3,2025-03-02 12:00:00,20,3,",
]


def _digests(raw_dir: Path, customers: list[str], orders: list[str]) -> PeriodDigests:
    write_csv_delivery(raw_dir, customers, orders)
    digests = digest_raw_files(raw_dir, Period.MONTH, 90)
    assert digests is not None
    return digests


def test_digests_name_each_month_of_orders_and_of_first_orders(tmp_path: Path) -> None:
    digests = _digests(tmp_path, CUSTOMERS, ORDERS)
    assert digests.last_order_on == date(2025, 3, 2)
    assert sorted(digests.orders) == ["2025-01-31", "2025-02-28", "2025-03-31"]
    assert [value.split(":")[0] for _, value in sorted(digests.orders.items())] == ["2", "1", "1"]
    # c1 and c2 first ordered in January, c3 in March
    assert sorted(digests.customers) == ["2025-01-31", "2025-03-31"]


def test_the_same_rows_in_another_order_give_the_same_digests(tmp_path: Path) -> None:
    first = _digests(tmp_path / "a", CUSTOMERS, ORDERS)
    shuffled = _digests(tmp_path / "b", CUSTOMERS[::-1], ORDERS[::-1])
    assert shuffled == first


@pytest.mark.parametrize(
    ("orders", "customers", "changed_orders", "changed_customers"),
    [
        # a revised amount: its own month only
        ([*ORDERS[:2], ORDERS[2].replace("7.25", "7.5"), ORDERS[3]], CUSTOMERS, ["2025-02-28"], []),
        # an order moved from February to March: both months
        (
            [*ORDERS[:2], ORDERS[2].replace("2025-02-10", "2025-03-10"), ORDERS[3]],
            CUSTOMERS,
            ["2025-02-28", "2025-03-31"],
            [],
        ),
        # c3's email: the month of c3's first order, no month of orders
        (ORDERS, [*CUSTOMERS[:2], "c3,2025-02-01 00:00:00,y@uni.edu"], [], ["2025-03-31"]),
        # a customer who never ordered changes nothing
        (ORDERS, [*CUSTOMERS, "c4,2025-02-01 00:00:00,"], [], []),
    ],
)
def test_a_changed_row_changes_its_own_months_digest_only(
    tmp_path: Path,
    orders: list[str],
    customers: list[str],
    changed_orders: list[str],
    changed_customers: list[str],
) -> None:
    before = _digests(tmp_path / "before", CUSTOMERS, ORDERS)
    after = _digests(tmp_path / "after", customers, orders)

    def changed(a: dict[str, str], b: dict[str, str]) -> list[str]:
        return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))

    assert changed(dict(before.orders), dict(after.orders)) == changed_orders
    assert changed(dict(before.customers), dict(after.customers)) == changed_customers


def test_a_time_zone_puts_an_order_in_its_utc_month(tmp_path: Path) -> None:
    # 2025-02-01T00:30+02:00 is 2025-01-31 22:30 UTC: January, as the contract loads it
    orders = [*ORDERS[:3], "o4,c3,2025-02-01T00:30:00+02:00,20,3,"]
    digests = _digests(tmp_path, CUSTOMERS, orders)
    assert digests.orders["2025-01-31"].startswith("3:")


def test_unreadable_files_have_no_digests(tmp_path: Path) -> None:
    assert digest_raw_files(tmp_path, Period.MONTH, 90) is None  # no files at all
    write_csv_delivery(tmp_path, CUSTOMERS, ORDERS)
    (tmp_path / "orders.csv").write_text("order_id,customer_id\no1,c1\n")  # columns missing
    assert digest_raw_files(tmp_path, Period.MONTH, 90) is None


@pytest.mark.parametrize("period", list(Period))
def test_period_ends_of_days_match_the_calendar(period: Period) -> None:
    first = date(2023, 12, 25)
    days = [first + timedelta(days=i) for i in range(800)]
    epoch = date(1970, 1, 1)
    numbers = np.array([(day - epoch).days for day in days], dtype=np.int64)
    ends = [epoch + timedelta(days=int(n)) for n in period_end_days(numbers, period)]
    assert ends == [period_end(day, period) for day in days]


def test_a_monthly_feed_rebuilds_the_new_month_and_the_maturing_ones(tmp_path: Path) -> None:
    """Two files of one generated history, to 2025-10-31 and to 2025-11-30 (parquet, as a
    feed would bring them): only November's orders and first orders differ."""
    data = generate(GeneratorConfig(n_customers=300, seed=5))
    october, november = tmp_path / "oct", tmp_path / "nov"
    write_month(data, date(2025, 10, 31), october, "parquet")
    write_month(data, date(2025, 11, 30), november, "parquet")
    before = digest_raw_files(october, Period.MONTH, 90)
    after = digest_raw_files(november, Period.MONTH, 90)
    assert before is not None and after is not None
    assert {k: v for k, v in after.orders.items() if k != "2025-11-30"} == before.orders
    assert {k: v for k, v in after.customers.items() if k != "2025-11-30"} == before.customers
    keys = sorted(after.orders)
    assert periods_to_rebuild(before, after, keys) == keys[-4:]
    assert keys[-4] == "2025-08-31"


def test_a_strings_hash_does_not_depend_on_its_neighbours() -> None:
    # Ids of one width take a faster path than mixed widths: both give the same hashes,
    # whatever the Arrow string type.
    same_width = _string_hashes(pa.array(["O0001", "O0002"]))
    mixed = _string_hashes(pa.array(["O0001", "O0002", "x", ""], pa.large_string()))
    assert list(mixed[:2]) == list(same_width)
    assert len(set(mixed)) == 4
