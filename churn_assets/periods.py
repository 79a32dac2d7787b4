"""Periods: the calendar the platform lives on, defined once.

A period is a calendar month (default) or an ISO week (Monday to Sunday), named by its last
day, its *period end*. Features of period ``p`` use orders dated on or before ``p``; its label
asks whether the customer ordered in ``(p, p + window]``. So:

* the periods of a data set are the period ends from the first order's period up to the last
  order date: a period the data has not reached the end of is not a period yet (its features
  would call a customer "silent" for days nobody has seen);
* a period is *labelled* once its label window has closed in the data:
  ``p + window <= last order date``;
* a model evaluated out of time on the newest labelled period ``h`` trains on the labelled
  periods whose label windows closed by ``h`` (``p + window <= h``): no training label
  uses an order after the holdout's ``as_of``.

These are the Dagster partition keys (ISO dates), the dbt ``period_ends`` var and the
cohorts of the training set. Pure Python: the ML library, the CLI and the tests read it.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Any


class Period(StrEnum):
    MONTH = "month"
    WEEK = "week"


def period_end(day: date, period: Period) -> date:
    """The last day of the period containing ``day``."""
    if period is Period.WEEK:
        return day + timedelta(days=6 - day.weekday())  # Sunday
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def longest_period(period: Period) -> timedelta:
    """The longest a period can last (31 days for a month): how long data may go quiet
    before a monthly (weekly) refresh is late."""
    return timedelta(days=7 if period is Period.WEEK else 31)


def period_start(end: date, period: Period) -> date:
    """The first day of the period ending ``end`` (a period end)."""
    if period is Period.WEEK:
        return end - timedelta(days=6)
    return end.replace(day=1)


def next_period_end(end: date, period: Period) -> date:
    """The period end after ``end`` (itself a period end)."""
    return period_end(end + timedelta(days=1), period)


def period_ends(first_day: date, last_day: date, period: Period) -> list[date]:
    """Every complete period from ``first_day``'s period to ``last_day``, oldest first."""
    ends: list[date] = []
    end = period_end(first_day, period)
    while end <= last_day:
        ends.append(end)
        end = next_period_end(end, period)
    return ends


def labelled_periods(ends: Iterable[date], last_day: date, window_days: int) -> list[date]:
    """The periods whose label window ``(p, p + window]`` has closed by ``last_day``."""
    return sorted(end for end in ends if end + timedelta(days=window_days) <= last_day)


def training_cohorts(
    labelled: Sequence[date], holdout: date, count: int, window_days: int
) -> list[date]:
    """The newest ``count`` labelled periods whose label windows closed by ``holdout``."""
    closed = [p for p in sorted(labelled) if p + timedelta(days=window_days) <= holdout]
    return closed[-count:]


def as_key(end: date) -> str:
    """A period's Dagster partition key: its ISO date."""
    return end.isoformat()


def from_key(key: str) -> date:
    return date.fromisoformat(key)


def partition_changes(
    existing: Sequence[str], wanted: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(keys to delete, keys to add) so the registered partitions become ``wanted``, in order.

    Dagster orders dynamic partitions by when they were added, and partition ranges (a
    backfill ``--from``/``--to``) follow that order. New periods at the end are simply
    added; periods that left the data, or new periods *before* registered ones (older data
    delivered later), need the registered tail re-added behind them.
    """
    wanted_set = set(wanted)
    stale = [key for key in existing if key not in wanted_set]
    kept = [key for key in existing if key in wanted_set]
    # Keep the longest prefix of ``wanted`` that is already registered, in order.
    prefix = 0
    while prefix < len(kept) and prefix < len(wanted) and kept[prefix] == wanted[prefix]:
        prefix += 1
    readd = kept[prefix:]
    return stale + readd, list(wanted[prefix:])


class PeriodError(ValueError):
    """The data's periods cannot give what was asked (names the periods and the setting)."""


def whole_periods(first_day: date, last_day: date, period: Period) -> list[date]:
    """:func:`period_ends` of a delivery, refusing one that does not cover a whole period:
    loading it would retire every period already built (the data "no longer has" them)."""
    ends = period_ends(first_day, last_day, period)
    if not ends:
        raise PeriodError(
            f"the orders run from {first_day.isoformat()} to {last_day.isoformat()}: not one "
            f"whole {period} (CHURN_PERIOD), so there is nothing to build features for; "
            "nothing was loaded and nothing already built was changed"
        )
    return ends


def trainable_periods(
    first_day: date, last_day: date, period: Period, window_days: int, pinned: date | None
) -> list[date]:
    """The labelled periods of a history, refusing one that cannot train a model with this
    window (or that lacks the pinned holdout) before anything is loaded or rebuilt."""
    ends = whole_periods(first_day, last_day, period)
    labelled = labelled_periods(ends, last_day, window_days)
    if not labelled:
        longest = (last_day - ends[0]).days
        raise PeriodError(
            f"no period is labelled with a {window_days}-day window (CHURN_WINDOW_DAYS): the "
            f"orders end {last_day.isoformat()}, so even the first period "
            f"({ends[0].isoformat()}) needs a window of at most {longest} days; nothing was "
            "loaded"
        )
    check_pinned(labelled, pinned, window_days)
    return labelled


def check_pinned(labelled: Sequence[date], pinned: date | None, window_days: int) -> None:
    """Refuse a pinned holdout (``CHURN_AS_OF``) that is not one of the ``labelled`` periods
    (sorted, at least one), naming the ones there are."""
    if pinned is not None and pinned not in labelled:
        raise PeriodError(
            f"CHURN_AS_OF={pinned.isoformat()} is not a labelled period with a {window_days}-day "
            f"window; labelled periods: {labelled[0].isoformat()} .. "
            f"{labelled[-1].isoformat()} ({len(labelled)})"
        )


@dataclass(frozen=True)
class TrainingPeriods:
    """Which labelled periods a model trains on and which one it is judged on.

    ``holdout`` is ``None`` when the history is too short for an out-of-time holdout: the
    model then trains and is judged (random holdout) within the newest labelled period, and
    ``note`` says why.
    """

    holdout: date | None
    training: tuple[date, ...]
    note: str

    @property
    def all(self) -> tuple[date, ...]:
        return (*self.training, *((self.holdout,) if self.holdout else ()))


def choose_training_periods(
    labelled: Sequence[date], *, count: int, window_days: int, pinned: date | None = None
) -> TrainingPeriods:
    """The newest labelled period (or ``pinned``, ``CHURN_AS_OF``) as the out-of-time holdout,
    and the ``count`` labelled periods whose label windows closed by it as the training set."""
    labelled = sorted(labelled)
    if not labelled:
        raise PeriodError(
            "no period has a closed label window yet: a period p is labelled once the data "
            f"reaches p + {window_days} days (CHURN_WINDOW_DAYS); load a longer history"
        )
    check_pinned(labelled, pinned, window_days)
    holdout = pinned or labelled[-1]
    cohorts = training_cohorts(labelled, holdout, count, window_days)
    if not cohorts:
        return TrainingPeriods(
            None,
            (holdout,),
            f"no labelled period closed its window by {holdout.isoformat()} (that needs "
            f"{window_days} more days of history): trained and evaluated within "
            f"{holdout.isoformat()} on a random holdout, not out of time",
        )
    return TrainingPeriods(
        holdout,
        tuple(cohorts),
        f"trained on {len(cohorts)} period(s) {cohorts[0].isoformat()} .. "
        f"{cohorts[-1].isoformat()}, evaluated out of time on {holdout.isoformat()}",
    )


def backtest_periods(
    labelled: Sequence[date], *, evaluate: int, count: int, window_days: int
) -> list[date]:
    """Every period a backtest of the newest ``evaluate`` labelled periods reads: those
    periods and each one's training cohorts."""
    labelled = sorted(labelled)
    needed: set[date] = set()
    for holdout in labelled[-evaluate:]:
        needed.add(holdout)
        needed.update(training_cohorts(labelled, holdout, count, window_days))
    return sorted(needed)


@dataclass(frozen=True)
class PeriodDigests:
    """What one load held, period by period, for the next load to compare against.

    ``orders`` maps the period end of every calendar period holding orders (the incomplete
    one after the newest period too) to a digest of the orders dated in it; ``customers``
    maps a period end to a digest of the customers whose first order is in that period
    (a customer who never ordered is in no period's population, so in no digest). Equal
    digests mean equal rows (see ``churn_assets.data.digests``). ``window_days`` is the
    label window the load's periods are built with.
    """

    period: Period
    window_days: int
    last_order_on: date
    orders: Mapping[str, str] = field(default_factory=dict)
    customers: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period.value,
            "window_days": self.window_days,
            "last_order_on": self.last_order_on.isoformat(),
            "orders": dict(sorted(self.orders.items())),
            "customers": dict(sorted(self.customers.items())),
        }

    @classmethod
    def from_json(cls, value: object) -> PeriodDigests | None:
        """The digests :meth:`to_json` wrote; ``None`` for anything else (an older load's
        metadata, a hand-made value): then nothing is known and every period rebuilds."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                period=Period(value["period"]),
                window_days=int(value["window_days"]),
                last_order_on=date.fromisoformat(value["last_order_on"]),
                orders={str(k): str(v) for k, v in dict(value["orders"]).items()},
                customers={str(k): str(v) for k, v in dict(value["customers"]).items()},
            )
        except (KeyError, TypeError, ValueError):
            return None


def periods_to_rebuild(
    previous: PeriodDigests | None,
    current: PeriodDigests,
    keys: Sequence[str],
    pending: Iterable[str] = (),
) -> list[str]:
    """The periods of ``keys`` (the current data's, oldest first) a load can have changed:
    the tail from the oldest one on, because a run builds a contiguous range.

    Period ``p``'s features read the orders dated up to ``p`` and the rows of the customers
    who ordered by then; its labels read the orders in ``(p, p + window]`` and exist once
    ``p + window`` <= the last order date. So, against the ``previous`` load:

    * orders of period ``q`` added, removed or revised: ``q``'s features and every later
      period's (counts and sums are cumulative), and the labels of every period whose
      window reaches into ``q``: from ``start(q) - window`` on;
    * a customer whose first order is in ``q`` changed (signup date, email): from ``q`` on;
    * the last order date moved: the periods whose windows end after the earlier of the
      two dates gain (or lose) their labels, and the new orders' windows are theirs:
      from ``min(last order dates) - window + 1 day`` on;
    * a period the previous load did not have, and each ``pending`` period (one a previous
      load was to rebuild and that was not rebuilt since);
    * the newest period always: a run builds at least one, and it is the one scored.

    Every period when there is no previous load, or it was built with another window or
    period length: nothing it recorded compares.
    """
    keys = list(keys)
    if not keys:
        return []
    if (
        previous is None
        or previous.period is not current.period
        or previous.window_days != current.window_days
    ):
        return keys
    window = timedelta(days=current.window_days)
    starts = [from_key(keys[-1])]
    for changed in _changed(previous.orders, current.orders):
        starts.append(period_start(from_key(changed), current.period) - window)
    starts.extend(from_key(changed) for changed in _changed(previous.customers, current.customers))
    if previous.last_order_on != current.last_order_on:
        earlier = min(previous.last_order_on, current.last_order_on)
        starts.append(earlier - window + timedelta(days=1))
    had = set(_periods_of(previous))
    starts.extend(from_key(key) for key in keys if key not in had)
    wanted = set(keys)
    starts.extend(from_key(key) for key in pending if key in wanted)
    oldest = min(starts)
    return [key for key in keys if from_key(key) >= oldest]


def _changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The periods whose digest differs, or that one side lacks."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _periods_of(digests: PeriodDigests) -> list[str]:
    """The whole periods of the load ``digests`` describes."""
    if not digests.orders:
        return []
    first = from_key(min(digests.orders))
    return [as_key(end) for end in period_ends(first, digests.last_order_on, digests.period)]
