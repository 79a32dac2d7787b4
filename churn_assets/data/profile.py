"""What a user needs to know about their data before the first run (``churn profile``).

Pure pandas over validated raw tables (the contract has run first). The label rule is the
dbt one (``dbt_project/models/marts/churn_labels.sql``): dates compare as calendar dates,
the population at ``as_of`` is every customer with an order on or before it, and a customer
churned when they placed no order in ``(as_of, as_of + window]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from churn_assets.data.contract import RawTables
from churn_assets.policy import Policy
from churn_assets.settings import DEFAULT_WINDOW_DAYS

_WINDOW_QUANTILE = 0.9  # a window that covers 90% of the gaps between repeat orders
_WINDOW_UNIT_DAYS = 30  # windows are suggested in whole months: 30, 60, 90, ...
# When nobody ordered twice there is no gap to learn from: the platform's default window.
_FALLBACK_WINDOW_DAYS = DEFAULT_WINDOW_DAYS


@dataclass(frozen=True)
class DataProfile:
    """The numbers `churn profile` prints; ``as_dict`` gives the documented JSON keys."""

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
    orders = tables.orders[["customer_id", "ordered_at"]].dropna()
    n_customers = len(tables.customers)
    if orders.empty:
        return DataProfile(
            n_customers, 0, None, None, None, None, _FALLBACK_WINDOW_DAYS,
            "no orders: nothing to learn a window from", None, 0, None,
            ("no orders at all: there is nothing to train on",),
        )  # fmt: skip
    days = orders["ordered_at"].dt.normalize()
    first, last = days.min().date(), days.max().date()
    per_customer = orders.groupby("customer_id").size()
    repeat_share = float((per_customer > 1).mean())
    gaps = _gaps_in_days(orders)
    median_gap = float(np.median(gaps)) if gaps.size else None
    history_days = (last - first).days
    window, reasoning = suggest_window(gaps, history_days)
    as_of = last - timedelta(days=window)
    labelled, churned = label_counts(orders, as_of, window)
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


def _gaps_in_days(orders: pd.DataFrame) -> np.ndarray:
    """Days between consecutive orders of the same customer (timestamps, fractional)."""
    ordered = orders.sort_values(["customer_id", "ordered_at"])
    same = ordered["customer_id"].eq(ordered["customer_id"].shift())
    delta = ordered["ordered_at"].diff()[same]
    return (delta.dt.total_seconds() / 86_400).to_numpy(dtype=np.float64)


def suggest_window(gaps: np.ndarray, history_days: int) -> tuple[int, str]:
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
    day = orders["ordered_at"].dt.date
    end = as_of + timedelta(days=window_days)
    population = set(orders.loc[day <= as_of, "customer_id"])
    active = set(orders.loc[(day > as_of) & (day <= end), "customer_id"])
    return len(population), len(population - active)


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
            f"{policy.min_labelled_customers:,} (CHURN_MIN_LABELLED_CUSTOMERS)"
        )
    if churned < policy.min_churners or stayers < policy.min_non_churners:
        warnings.append(
            f"{churned:,} churners and {stayers:,} non-churners at the suggested as_of; "
            f"training needs {policy.min_churners:,} (CHURN_MIN_CHURNERS) and "
            f"{policy.min_non_churners:,} (CHURN_MIN_NON_CHURNERS)"
        )
    if window * 2 > history_days:
        warnings.append(
            f"the history ({history_days} days) is shorter than twice the window "
            f"({window} days): little behaviour is visible before the as_of"
        )
    if repeat_share < 0.5:
        warnings.append(
            f"most customers ordered once ({1 - repeat_share:.0%}): recency and frequency "
            "say little about them, so expect a lower AUC than on subscription data"
        )
    return tuple(warnings)
