"""What a user needs to know about their data before the first run (``churn profile``).

Pure pandas over validated raw tables (the contract has run first). The label rule is the
dbt one (``dbt_project/models/marts/churn_labels.sql``): dates compare as calendar dates,
the population at ``as_of`` is every customer with an order on or before it, and a customer
churned when they placed no order in ``(as_of, as_of + window]``. The training ``as_of`` is
the latest date whose label window the data has closed: the last order date minus the
window (the platform itself trains on whole periods; `churn profile` prints them too).

The training minimums come from the policy (``churn_assets.policy``, the one home of every
threshold), so the profile warns with exactly the numbers the run will stop at.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from churn_assets.data.contract import RawTables
from churn_assets.policy import Policy, env_name
from churn_assets.settings import DEFAULT_WINDOW_DAYS

FloatArray = npt.NDArray[np.float64]
_SECONDS_PER_DAY = 86_400
_EPOCH = date(1970, 1, 1)

_WINDOW_QUANTILE = 0.9  # a window that covers 90% of the gaps between repeat orders
_WINDOW_UNIT_DAYS = 30  # windows are suggested in whole months: 30, 60, 90, ...
# When nobody ordered twice there is no gap to learn from: the platform's default window.
_FALLBACK_WINDOW_DAYS = DEFAULT_WINDOW_DAYS
# Below this share of repeat buyers, "most customers ordered once": recency and frequency
# then separate few customers, which is worth saying before the first run.
_MOSTLY_ONE_OFF_REPEAT_SHARE = 0.5


@dataclass(frozen=True)
class DataProfile:
    """The numbers `churn profile` prints; ``as_dict`` gives the documented JSON keys.

    ``repeat_customer_share`` is over customers with at least one order (customers who never
    ordered are in no training population); dates are ISO strings.
    """

    customers: int
    orders: int
    first_order_at: str | None
    last_order_at: str | None
    repeat_customer_share: float | None
    median_days_between_orders: float | None
    suggested_window_days: int
    window_reasoning: str
    suggested_as_of: str | None
    labelled_customers_at_suggested_as_of: int
    label_rate_at_suggested_as_of: float | None
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["warnings"] = list(self.warnings)
        return values


def profile_raw_tables(tables: RawTables, policy: Policy) -> DataProfile:
    """Profile validated raw tables; warnings use the policy's training minimums."""
    orders = tables.orders  # validated: customer_id and ordered_at are never null
    n_customers = len(tables.customers)
    if orders.empty:
        return DataProfile(
            n_customers, 0, None, None, None, None, _FALLBACK_WINDOW_DAYS,
            "no orders: nothing to learn a window from", None, 0, None,
            ("no orders at all: there is nothing to train on",),
        )  # fmt: skip
    customer = pd.factorize(orders["customer_id"])[0].astype(np.int64)
    day = _days(orders["ordered_at"])
    first = _EPOCH + timedelta(days=int(day.min()))
    last = _EPOCH + timedelta(days=int(day.max()))
    repeat_share = float((np.bincount(customer) > 1).mean())
    gaps = _gaps_in_days(customer, orders["ordered_at"])
    median_gap = float(np.median(gaps)) if gaps.size else None
    history_days = (last - first).days
    window, reasoning = suggest_window(gaps, history_days)
    as_of = last - timedelta(days=window)
    labelled, churned = _label_counts(customer, day, as_of, window)
    label_rate = churned / labelled if labelled else None
    warnings = _warnings(policy, repeat_share, window, history_days, labelled, churned)
    return DataProfile(
        customers=n_customers,
        orders=len(tables.orders),
        first_order_at=first.isoformat(),
        last_order_at=last.isoformat(),
        repeat_customer_share=round(repeat_share, 4),
        median_days_between_orders=None if median_gap is None else round(median_gap, 1),
        suggested_window_days=window,
        window_reasoning=reasoning,
        suggested_as_of=as_of.isoformat(),
        labelled_customers_at_suggested_as_of=labelled,
        label_rate_at_suggested_as_of=None if label_rate is None else round(label_rate, 4),
        warnings=warnings,
    )


def _gaps_in_days(customer: npt.NDArray[np.int64], ordered_at: pd.Series) -> FloatArray:
    """Days between consecutive orders of the same customer (timestamps, fractional).

    Sorted on integer customer codes, not the id strings: ten million orders in seconds.
    """
    seconds = ordered_at.to_numpy(dtype="datetime64[s]").astype(np.int64)
    order = np.lexsort((seconds, customer))
    same = customer[order][1:] == customer[order][:-1]
    gaps: FloatArray = np.diff(seconds[order])[same] / _SECONDS_PER_DAY
    return gaps


def suggest_window(gaps: FloatArray, history_days: int) -> tuple[int, str]:
    """A label window covering 90% of repeat-order gaps, in whole months, leaving at least
    as much history before the as_of as the window itself; and why."""
    cap = max(_WINDOW_UNIT_DAYS, (history_days // 2) // _WINDOW_UNIT_DAYS * _WINDOW_UNIT_DAYS)
    if gaps.size == 0:
        window = min(_FALLBACK_WINDOW_DAYS, cap)
        return window, f"no customer ordered twice: the default {window} days"
    quantile = float(np.quantile(gaps, _WINDOW_QUANTILE))
    unit = _WINDOW_UNIT_DAYS
    window = max(unit, math.ceil(quantile / unit) * unit)
    reasoning = (
        f"{_WINDOW_QUANTILE:.0%} of repeat orders come within {quantile:.0f} days of the "
        f"previous one; rounded up to {window} days, a customer silent that long has most "
        "likely left"
    )
    if window > cap:
        reasoning += f" (capped at {cap} days: half of the {history_days}-day history)"
        window = cap
    return window, reasoning


def label_counts(orders: pd.DataFrame, as_of: date, window_days: int) -> tuple[int, int]:
    """(labelled customers, churned) at ``as_of`` under the dbt label rule."""
    customer, _ = pd.factorize(orders["customer_id"])
    return _label_counts(customer.astype(np.int64), _days(orders["ordered_at"]), as_of, window_days)


def _days(ordered_at: pd.Series) -> npt.NDArray[np.int64]:
    """Calendar day numbers (days since 1970-01-01): SQL's ``ordered_at::date`` as integers."""
    days: npt.NDArray[np.int64] = ordered_at.to_numpy(dtype="datetime64[D]").astype(np.int64)
    return days


def _label_counts(
    customer: npt.NDArray[np.int64], day: npt.NDArray[np.int64], as_of: date, window_days: int
) -> tuple[int, int]:
    """Population: an order on or before ``as_of``; churned: none in (as_of, as_of + window]."""
    start = (as_of - _EPOCH).days
    n = int(customer.max()) + 1 if customer.size else 0
    known = np.bincount(customer[day <= start], minlength=n) > 0
    in_window = (day > start) & (day <= start + window_days)
    returned = np.bincount(customer[in_window], minlength=n) > 0
    return int(known.sum()), int((known & ~returned).sum())


def _warnings(
    policy: Policy,
    repeat_share: float,
    window: int,
    history_days: int,
    labelled: int,
    churned: int,
) -> tuple[str, ...]:
    warnings = []
    stayers = labelled - churned
    if labelled < policy.min_labelled_customers:
        warnings.append(
            f"only {labelled:,} labelled customers at the suggested as_of; training needs "
            f"{policy.min_labelled_customers:,} ({env_name('min_labelled_customers')})"
        )
    if churned < policy.min_churners or stayers < policy.min_non_churners:
        warnings.append(
            f"{churned:,} churners and {stayers:,} non-churners at the suggested as_of; "
            f"training needs {policy.min_churners:,} ({env_name('min_churners')}) and "
            f"{policy.min_non_churners:,} ({env_name('min_non_churners')})"
        )
    if window >= history_days:
        warnings.append(
            f"the {window}-day window is longer than the {history_days}-day history: no "
            "customer has both orders before the as_of and a complete label window"
        )
    elif window * 2 > history_days:
        warnings.append(
            f"the history ({history_days} days) is shorter than twice the window "
            f"({window} days): little behaviour is visible before the as_of"
        )
    if repeat_share < _MOSTLY_ONE_OFF_REPEAT_SHARE:
        warnings.append(
            f"most customers ordered once ({1 - repeat_share:.0%}): recency and frequency "
            "say little about them, so expect a lower AUC than on subscription data"
        )
    return tuple(warnings)
