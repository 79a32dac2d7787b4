"""Test fixtures: the training snapshot computed in pandas from generated data, a trained run.

The platform computes these features once, in dbt SQL (``customer_features.sql``); this
restatement exists only so ML tests and benchmarks get realistic frames without a database.
It follows the same definitions: calendar dates, orders on or before ``as_of`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache

import numpy as np
import pandas as pd

from churn_assets.data.generator import FREE_EMAIL_DOMAINS, GeneratedData, GeneratorConfig, generate
from churn_assets.ml.features import split_holdout
from churn_assets.ml.train import TrainConfig, TrainResult, train


def email_domain_class(email: pd.Series) -> pd.Series:
    """free | education | business | unknown, as the dbt staging model + CASE classify it."""
    normalised = email.astype("string").str.strip().str.lower()
    domain = normalised.str.extract(r"@([^@]*)$", expand=False)
    domain = domain.where(domain != "")  # "x@" has no domain, like SQL nullif(..., '')
    is_free = domain.isin([d.lower() for d in FREE_EMAIL_DOMAINS]).fillna(False)
    is_education = (domain.str.endswith(".edu") | domain.str.contains(".ac.", regex=False)).fillna(
        False
    )
    out = np.where(
        domain.isna(),
        "unknown",
        np.where(is_free, "free", np.where(is_education, "education", "business")),
    )
    return pd.Series(out, index=email.index, dtype=object)


def training_snapshot(data: GeneratedData, as_of: date | None = None) -> pd.DataFrame:
    """One row per customer with >= 1 order on or before ``as_of``, 8 features + ``churned``.

    Dtypes match what the Dagster side hands to ``churn_assets.ml`` (see the ML brief).
    """
    as_of = data.config.as_of if as_of is None else as_of
    as_of_ts = pd.Timestamp(as_of)
    orders = data.orders
    ordered_on = orders["ordered_at"].dt.normalize()
    known = orders.loc[ordered_on <= as_of_ts].assign(ordered_on=ordered_on)
    age_days = (as_of_ts - known["ordered_on"]).dt.days
    grouped = known.assign(
        rev30=known["amount"].where(age_days < 30, 0.0),
        rev90=known["amount"].where(age_days < 90, 0.0),
        rev365=known["amount"].where(age_days < 365, 0.0),
    ).groupby("customer_id", sort=True)
    agg = pd.DataFrame(
        {
            "first_order_on": grouped["ordered_on"].min(),
            "last_order_on": grouped["ordered_on"].max(),
            "order_count": grouped.size(),
            "total_revenue_30d": grouped["rev30"].sum(),
            "total_revenue_90d": grouped["rev90"].sum(),
            "total_revenue_365d": grouped["rev365"].sum(),
            "cart_diversity": grouped["category"].nunique(dropna=True),
        }
    )
    customers = data.customers.set_index("customer_id").loc[agg.index]
    signup_on = customers["signup_at"].dt.normalize()
    # min() ignores NaT, like SQL least(): a missing signup falls back to the first order.
    tenure_start = pd.concat([signup_on, agg["first_order_on"]], axis=1).min(axis=1)
    lifetime = (as_of_ts - tenure_start).dt.days.astype("int64")
    frame = pd.DataFrame(
        {
            "customer_id": agg.index.astype(str),
            "as_of": as_of,
            "days_since_last_order": (as_of_ts - agg["last_order_on"]).dt.days.astype("int64"),
            "total_revenue_30d": agg["total_revenue_30d"].astype("float64"),
            "total_revenue_90d": agg["total_revenue_90d"].astype("float64"),
            "total_revenue_365d": agg["total_revenue_365d"].astype("float64"),
            "order_frequency": agg["order_count"] * 30.0 / np.maximum(lifetime, 30),
            "cart_diversity": agg["cart_diversity"].astype("int64"),
            "email_domain_class": email_domain_class(customers["email"]).to_numpy(),
            "customer_lifetime_days": lifetime,
        }
    ).reset_index(drop=True)
    truth = data.ground_truth[["customer_id", "churned"]]
    merged = frame.merge(truth, on="customer_id", how="inner", validate="one_to_one")
    if len(merged) != len(frame):
        raise AssertionError("ground truth does not cover the feature population")
    merged["churned"] = merged["churned"].astype("int64")
    return merged


def generated_snapshot(
    n_customers: int = 1000, seed: int = 42
) -> tuple[pd.DataFrame, GeneratedData]:
    """Generate raw data and its training snapshot; returns (snapshot, raw data)."""
    data = generate(GeneratorConfig(n_customers=n_customers, seed=seed))
    return training_snapshot(data), data


@dataclass(frozen=True)
class DefaultRun:
    """One training run on the default demo data, shared by the ML tests (trained once)."""

    snapshot: pd.DataFrame
    data: GeneratedData
    train_df: pd.DataFrame
    holdout_df: pd.DataFrame
    result: TrainResult


@cache
def default_run() -> DefaultRun:
    """Default data (1,000 customers, seed 42), default split and ``TrainConfig``; cached."""
    snapshot, data = generated_snapshot()
    train_df, holdout_df = split_holdout(snapshot)
    return DefaultRun(snapshot, data, train_df, holdout_df, train(train_df, TrainConfig()))
