"""Which periods a delivery rebuilds (churn_assets.periods.periods_to_rebuild): a month's file
costs a month, not a history (issue 25 item 8)."""

from __future__ import annotations

from datetime import date

import pytest

from churn_assets.periods import (
    Period,
    PeriodDigests,
    as_key,
    period_ends,
    periods_to_rebuild,
)

WINDOW = 90


def _keys(last: date) -> list[str]:
    return [as_key(end) for end in period_ends(date(2023, 12, 1), last, Period.MONTH)]


def _digests(
    last: date,
    *,
    revised: dict[str, str] | None = None,
    customers: dict[str, str] | None = None,
    window: int = WINDOW,
    period: Period = Period.MONTH,
) -> PeriodDigests:
    """A history from December 2023 to ``last``: each month's orders digest is the month's
    name and the content that was delivered by then (the last month's is partial)."""
    buckets = [as_key(end) for end in period_ends(date(2023, 12, 1), last, Period.MONTH)]
    if last.isoformat() not in buckets:
        buckets.append(as_key(_month_end(last)))  # the incomplete month after the newest
    orders = {key: f"{key}@{min(last.isoformat(), key)}" for key in buckets}
    return PeriodDigests(
        period=period,
        window_days=window,
        last_order_on=last,
        orders={**orders, **(revised or {})},
        customers={key: f"customers of {key}" for key in buckets} | (customers or {}),
    )


def _month_end(day: date) -> date:
    from churn_assets.periods import period_end

    return period_end(day, Period.MONTH)


OCT, NOV = date(2025, 10, 31), date(2025, 11, 30)


def test_the_first_load_rebuilds_every_period() -> None:
    assert periods_to_rebuild(None, _digests(NOV), _keys(NOV)) == _keys(NOV)


def test_a_new_month_rebuilds_it_and_the_periods_whose_labels_it_matures() -> None:
    # A 90-day window from 2025-08-31 ends 2025-11-29: November's orders are in it, and
    # its label closes now. 2025-07-31's closed 2025-10-29, before the previous file ended.
    assert periods_to_rebuild(_digests(OCT), _digests(NOV), _keys(NOV)) == [
        "2025-08-31",
        "2025-09-30",
        "2025-10-31",
        "2025-11-30",
    ]


def test_a_mid_month_delivery_rebuilds_every_period_whose_window_reaches_its_new_orders() -> None:
    # The previous file ended 2025-10-20, this one 2025-11-20: orders of 2025-10-21..31
    # arrive, inside 2025-07-31's window (to 2025-10-29). No new whole period.
    previous, current = _digests(date(2025, 10, 20)), _digests(date(2025, 11, 20))
    keys = _keys(date(2025, 11, 20))
    assert keys[-1] == "2025-10-31"
    assert periods_to_rebuild(previous, current, keys) == [
        "2025-07-31",
        "2025-08-31",
        "2025-09-30",
        "2025-10-31",
    ]


def test_a_revised_old_order_rebuilds_from_the_oldest_label_window_reaching_it() -> None:
    # An order of February 2025 changes: February's features and every later period's
    # (counts are cumulative), and the labels of every period whose 90-day window reaches
    # into February: from 2024-11-30 (to 2025-02-28) on; 2024-10-31's ends 2025-01-29.
    revised = {"2025-02-28": "2025-02-28@revised"}
    current = _digests(NOV, revised=revised)
    rebuilt = periods_to_rebuild(_digests(NOV), current, _keys(NOV))
    assert rebuilt == [key for key in _keys(NOV) if key >= "2024-11-30"]


def test_an_order_removed_from_the_first_period_rebuilds_everything() -> None:
    current = _digests(NOV, revised={"2023-12-31": "2023-12-31@fewer"})
    assert periods_to_rebuild(_digests(NOV), current, _keys(NOV)) == _keys(NOV)


def test_a_changed_customer_rebuilds_from_the_period_of_their_first_order() -> None:
    # Their signup date or email enters their features from their first period on; the
    # labels read no customer column.
    current = _digests(NOV, customers={"2025-03-31": "a customer's email changed"})
    rebuilt = periods_to_rebuild(_digests(NOV), current, _keys(NOV))
    assert rebuilt == [key for key in _keys(NOV) if key >= "2025-03-31"]


@pytest.mark.parametrize(
    "previous",
    [
        _digests(OCT, window=60),  # the labels were built with another window
        _digests(OCT, period=Period.WEEK),  # weeks then, months now: nothing compares
    ],
)
def test_another_window_or_period_length_rebuilds_every_period(previous: PeriodDigests) -> None:
    assert periods_to_rebuild(previous, _digests(NOV), _keys(NOV)) == _keys(NOV)


def test_the_same_file_again_rebuilds_the_newest_period_only() -> None:
    # A run builds at least one period, and the newest is the one scored.
    assert periods_to_rebuild(_digests(NOV), _digests(NOV), _keys(NOV)) == ["2025-11-30"]


def test_a_period_the_previous_load_did_not_rebuild_is_rebuilt_now() -> None:
    # Its run failed (or no daemon ran): the next load carries it over.
    rebuilt = periods_to_rebuild(_digests(OCT), _digests(NOV), _keys(NOV), ["2025-05-31"])
    assert rebuilt == [key for key in _keys(NOV) if key >= "2025-05-31"]


def test_a_shorter_delivery_rebuilds_the_periods_whose_labels_it_takes_back() -> None:
    # November's orders are gone (a file cut at 2025-10-31 again): the periods labelled by
    # them (2025-08-31) lose their labels.
    assert periods_to_rebuild(_digests(NOV), _digests(OCT), _keys(OCT)) == [
        "2025-08-31",
        "2025-09-30",
        "2025-10-31",
    ]


def test_older_history_delivered_later_rebuilds_everything() -> None:
    previous = _digests(NOV)
    previous = PeriodDigests(
        previous.period,
        previous.window_days,
        previous.last_order_on,
        {k: v for k, v in previous.orders.items() if k != "2023-12-31"},
        {k: v for k, v in previous.customers.items() if k != "2023-12-31"},
    )
    assert periods_to_rebuild(previous, _digests(NOV), _keys(NOV)) == _keys(NOV)


def test_the_digests_survive_their_json_and_anything_else_reads_as_unknown() -> None:
    digests = _digests(NOV)
    assert PeriodDigests.from_json(digests.to_json()) == digests
    assert PeriodDigests.from_json({"period": "month"}) is None
    assert PeriodDigests.from_json("not digests") is None
