"""Synthetic raw customer/order history with a known churn ground truth.

Why synthetic: the platform must be testable end to end (load -> dbt features -> model ->
serving) without real customer data, and a model's ceiling must be known. So the hidden churn
probability is built from exactly the behaviour the dbt features can see at ``as_of`` plus
noise; the oracle AUC of ``churn_probability`` is the best any model can do.

Everything is vectorised with numpy (no per-customer Python loops) so a million customers fit
in a benchmark, and a single ``np.random.default_rng(seed)`` drives all draws so the same config
always yields identical frames.

Behaviour model: signups spread uniformly over the history, 2 % never order, the first order
follows signup by ~2 days; later orders are a Poisson process per customer with a lognormal
rate and a per-customer exponential trend (35 % fading, 10 % growing); spend is lognormal with
its own trend; each customer buys from a few favourite categories. The hidden churn logit is a
weighted sum of standardised visible signals (recency strongest, then frequency, 30- vs 365-day
spend trend, category diversity, email class, tenure) plus Gaussian noise, with the intercept
bisected so the mean probability equals ``target_churn_rate``. Only the last label window
(``as_of``, ``end_date``] is drawn from it; the labels of earlier periods (the platform's monthly
cohorts) follow from the order process itself.

``DriftScenario`` shifts the behaviour from a date on: distributions, and with
``concept_shift`` also who churns. ``arrived_by`` cuts one history into the files a monthly
feed would have delivered (``scenarios.MONTHLY_STORY``).

``PROFILES`` names ready-made configs: ``subscription`` (the default above) and ``retail``
(most customers order once, a long tail of repeat buyers, 75 % churn in 90 days).

Label definition (the dbt SQL computes exactly this; ``ground_truth`` agrees row for row):

* dates are compared as calendar dates (``ordered_at.date()``);
* the training population at ``as_of`` is every customer with >= 1 order on or before it;
* ``churned = 1`` iff the customer has no order dated in ``(as_of, as_of + window_days]``;
* ``as_of = max order date - window_days``: an order is always placed on ``end_date`` and none
  after it, so the platform's default ``as_of`` equals ``GeneratorConfig.as_of``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from churn_assets.schema import EMAIL_DOMAIN_CLASSES

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365.0

CATEGORIES: tuple[str, ...] = (
    "grocery",
    "fashion",
    "electronics",
    "home",
    "books",
    "beauty",
    "sports",
    "toys",
)
# Global popularity; each customer ranks categories by a noisy draw from it.
_CATEGORY_WEIGHTS = np.array([0.20, 0.16, 0.14, 0.14, 0.12, 0.10, 0.08, 0.06])

EMAIL_CLASSES = EMAIL_DOMAIN_CLASSES  # the model's vocabulary, named once in schema.py
DEFAULT_EMAIL_MIX: Mapping[str, float] = {
    "free": 0.55,
    "business": 0.30,
    "education": 0.10,
    "unknown": 0.05,  # "unknown" means the email is missing
}
# Must match the dbt classification: free list, education = *.edu or contains ".ac.".
FREE_EMAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "aol.com",
    "proton.me",
    "gmx.de",
    "mail.com",
)
BUSINESS_EMAIL_DOMAINS: tuple[str, ...] = (
    "acme.com",
    "globex.com",
    "initech.com",
    "hooli.io",
    "umbrella-corp.com",
    "wayne-enterprises.com",
    "stark-industries.com",
    "wonka.co.uk",
    "cyberdyne.systems",
    "soylent.de",
)
EDUCATION_EMAIL_DOMAINS: tuple[str, ...] = (
    "mit.edu",
    "stanford.edu",
    "berkeley.edu",
    "ox.ac.uk",
    "cam.ac.uk",
    "u-tokyo.ac.jp",
)
_FIRST_NAMES = np.array(
    ["anna", "ben", "carla", "david", "emma", "felix", "grace", "hugo", "ines", "jonas",
     "kira", "liam", "maya", "noah", "olga", "paul", "rosa", "sam", "tara", "yusuf"]
)  # fmt: skip
_LAST_NAMES = np.array(
    ["smith", "mueller", "garcia", "kim", "rossi", "novak", "silva", "khan", "berg", "ito"]
)  # fmt: skip

# Data-quality knobs of the raw contract.
DORMANT_RATE = 0.02  # customers who never order: outside every training population
SIGNUP_NULL_RATE = 0.03  # features fall back to the first order date
LATE_SIGNUP_RATE = 0.01  # guest checkout first, account later: signup_at > first order
EMAIL_NULL_RATE = DEFAULT_EMAIL_MIX["unknown"]
ITEM_COUNT_NULL_RATE = 0.01
CATEGORY_NULL_RATE = 0.02
FREE_ORDER_RATE = 0.005  # 100 % voucher: amount 0.00 is legal and should be exercised

# Hidden-truth weights on standardised visible signals (positive = more churn).
# Recency dominates, then frequency, spend trend, diversity and tenure; email is an offset.
_LOGIT_WEIGHTS: Mapping[str, float] = {
    "recency": 1.1,
    "frequency": -0.55,
    "spend_trend": -0.35,
    "diversity": -0.25,
    "tenure": -0.18,
}
_EMAIL_EFFECT = np.array([0.10, -0.25, 0.07, 0.30])  # indexed like EMAIL_CLASSES
_LOGIT_NOISE_SD = 0.7  # unexplainable churn: no model can reach the oracle
# Concept drift (``DriftScenario.concept_shift``): direction of each email class's change of
# order rate after the drift start, indexed like EMAIL_CLASSES. Business accounts, the loyal
# class of the hidden truth, defect (fewer orders, so more churn); free-mail and no-email
# customers, its risky classes, become loyal; education is unchanged. Opposite directions on
# classes of similar size keep the overall label rate roughly level, so the shift shows up
# as a changed relation between features and churn, not as a broken label rate.
_CONCEPT_DIRECTION = np.array([1.0, -1.0, 0.0, 1.0])


@dataclass(frozen=True)
class DriftScenario:
    """A behaviour shift from ``starts_at`` on, to produce a drifted "period 2".

    Period 1 is ``generate(GeneratorConfig())``; period 2 is ``generate`` with a later
    ``end_date`` (e.g. one quarter on) and ``drift=DriftScenario(starts_at=<period-1 end + 1>)``.
    Orders dated on or after ``starts_at`` get their Poisson order rate multiplied by
    ``order_rate_multiplier`` and their amounts by ``spend_multiplier``; customers signing up
    on or after ``starts_at`` draw their email class from ``email_mix`` (keys from
    ``EMAIL_CLASSES``, normalised to sum 1). Orders before ``starts_at`` keep the baseline
    distribution. The label rule is unchanged: the hidden truth is recomputed from the drifted
    visible behaviour (intercept re-calibrated to ``target_churn_rate``), so ``ground_truth``
    still matches the SQL label definition.

    Those knobs move feature *distributions* only: who churns given the features stays the
    same, so a model retrained after them is no better than the old one. ``concept_shift``
    (a log-rate, >= 0; 0 = off) changes the relation itself. From ``starts_at`` on, business
    email customers order at ``exp(-concept_shift)`` times their rate and free-mail and
    no-email customers at ``exp(+concept_shift)`` times (education unchanged), on top of
    ``order_rate_multiplier``: the class that was loyal starts churning and the risky ones
    stay. Labels follow from the orders as always (a customer who stops ordering churns), and
    the hidden truth of a label window after ``starts_at`` moves its logit by the same amount
    (scaled by the share of the window past ``starts_at``), so ``ground_truth`` and the
    order-derived labels of every other period tell the same story. At ``1.5`` a model
    trained on the new labels beats one trained before them by several AUC points (see
    ``scenarios.MONTHLY_STORY``).
    """

    starts_at: date
    spend_multiplier: float = 1.0
    order_rate_multiplier: float = 1.0
    email_mix: dict[str, float] | None = None
    concept_shift: float = 0.0

    def __post_init__(self) -> None:
        if self.spend_multiplier < 0 or self.order_rate_multiplier < 0:
            raise ValueError("drift multipliers must be >= 0")
        if not (math.isfinite(self.concept_shift) and self.concept_shift >= 0):
            raise ValueError(f"concept_shift must be finite and >= 0, got {self.concept_shift}")
        if self.email_mix is not None:
            unknown = set(self.email_mix) - set(EMAIL_CLASSES)
            if unknown:
                raise ValueError(f"email_mix keys must be in {EMAIL_CLASSES}, got {unknown}")
            if any(v < 0 for v in self.email_mix.values()) or sum(self.email_mix.values()) <= 0:
                raise ValueError("email_mix weights must be >= 0 with a positive sum")


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate; frozen so a config can be a cache key and is safe to share."""

    n_customers: int = 1000
    seed: int = 42
    # Last day of data; an order is guaranteed on it. The 29th, so that the label as_of
    # (end_date - window_days = 2025-09-30) is a month end: the hidden truth is then a period
    # the platform evaluates on (its out-of-time holdout), and the oracle AUC is comparable.
    end_date: date = date(2025, 12, 29)
    history_days: int = 730  # data starts at end_date - history_days
    window_days: int = 90  # label window
    target_churn_rate: float = 0.20
    mean_orders_per_customer: float = 10.0  # ~10,000 orders for 1,000 customers
    # Spread (lognormal sigma) of customers' order rates: larger = a longer tail of heavy
    # buyers among many who order once (the retail profile).
    order_rate_spread: float = 0.8
    drift: DriftScenario | None = None

    def __post_init__(self) -> None:
        if self.n_customers < 1:
            raise ValueError("n_customers must be >= 1")
        if self.window_days < 1 or self.history_days <= self.window_days:
            raise ValueError("need window_days >= 1 and history_days > window_days")
        if not 0.0 < self.target_churn_rate < 1.0:
            raise ValueError("target_churn_rate must be in (0, 1)")
        if self.mean_orders_per_customer <= 0:
            raise ValueError("mean_orders_per_customer must be > 0")
        if self.order_rate_spread <= 0:
            raise ValueError("order_rate_spread must be > 0")

    @property
    def start_date(self) -> date:
        return self.end_date - timedelta(days=self.history_days)

    @property
    def as_of(self) -> date:
        return self.end_date - timedelta(days=self.window_days)


# Named starting points for `churn generate --profile`. "subscription" is the reference demo
# (regular buyers, 20% churn in 90 days) and must stay byte-identical to GeneratorConfig().
# "retail" is a one-off shop: few orders per customer (1.4) with widely spread rates
# (lognormal sigma 1.8) give ~69% single-order customers and a long tail of heavy buyers,
# and 75% churn in the default 90-day window (seed 42, 5,000 customers: 68.4% single-order,
# label rate 0.750, oracle AUC 0.84). Its window_days stays 90, so the ground truth is the
# label `churn run` computes with no setting; at the ~330-day window `churn profile`
# suggests for it the label rate is ~0.78. Only parameters differ, so it is as vectorised
# as the default (1M customers, 1.5M orders: ~2 s).
PROFILES: Mapping[str, GeneratorConfig] = {
    "subscription": GeneratorConfig(),
    "retail": GeneratorConfig(
        target_churn_rate=0.75, mean_orders_per_customer=1.4, order_rate_spread=1.8
    ),
}


@dataclass(frozen=True)
class GeneratedData:
    """The three raw tables plus the config that produced them (for provenance)."""

    customers: pd.DataFrame
    orders: pd.DataFrame
    ground_truth: pd.DataFrame
    config: GeneratorConfig


@dataclass(frozen=True)
class _Customers:
    """Per-customer latent behaviour; times are integer seconds since ``start_date``."""

    signup_sec: IntArray  # recorded signup (may be after the first order, see LATE_SIGNUP_RATE)
    signup_null: BoolArray
    first_sec: IntArray  # first order; meaningless where ~active
    active: BoolArray
    rate: FloatArray  # orders/day at the first order
    order_trend: FloatArray  # log-rate change per year (< 0: fading)
    spend_level: FloatArray
    spend_trend: FloatArray  # log-amount change per year
    breadth: IntArray  # how many of the customer's preferred categories they buy from
    preference: npt.NDArray[np.int8]  # (n, 8) categories ranked by the customer's taste
    email_class: IntArray  # index into EMAIL_CLASSES
    email: npt.NDArray[np.object_]


# One stretch of each customer's order process: [a, b) in seconds and its rate factor.
_Segment = tuple[IntArray, IntArray, float | FloatArray]


@dataclass(frozen=True)
class _Orders:
    cust: IntArray
    sec: IntArray
    amount: FloatArray
    item_count: IntArray
    item_count_null: BoolArray
    category: npt.NDArray[np.int8]  # -1 = null


def generate(config: GeneratorConfig = GeneratorConfig()) -> GeneratedData:
    """Generate customers, orders and the ground truth that agrees with the SQL label rule.

    Order: latent customers -> orders up to ``as_of`` -> visible features -> hidden churn
    probability -> churn draw -> window orders (none for churners, >= 1 otherwise).
    """
    rng = np.random.default_rng(config.seed)
    history_end = (config.history_days + 1) * SECONDS_PER_DAY  # exclusive, in seconds
    as_of_day = config.history_days - config.window_days
    as_of_end = (as_of_day + 1) * SECONDS_PER_DAY
    drift = config.drift
    drift_sec = _drift_start_sec(config)

    cust = _draw_customers(rng, config)
    n = config.n_customers
    first_day = cust.first_sec // SECONDS_PER_DAY
    in_population = cust.active & (first_day <= as_of_day)
    rate_mult = _post_drift_rate_multiplier(drift, cust)

    # Orders on or before as_of: the first order plus a Poisson process until as_of ends.
    pop_idx = np.flatnonzero(in_population)
    pre_segments = _split(cust.first_sec, np.full(n, as_of_end), drift_sec, rate_mult)
    pre_counts = [_poisson_counts(rng, cust, a, b, m, in_population) for a, b, m in pre_segments]
    pre_cust, pre_sec = _concat_times(
        rng, cust, pop_idx, cust.first_sec[pop_idx], pre_segments, pre_counts
    )
    pre = _draw_marks(rng, cust, pre_cust, pre_sec, drift_sec, drift)

    probability, churned = _hidden_truth(rng, config, cust, pre, pop_idx, drift_sec)

    # Label window (as_of, end_date]: churners are silent, everyone else orders at least once.
    churned_all = np.zeros(n, dtype=bool)
    churned_all[pop_idx] = churned
    stayers = in_population & ~churned_all
    win_segments = _split(np.full(n, as_of_end), np.full(n, history_end), drift_sec, rate_mult)
    win_counts = [_poisson_counts(rng, cust, a, b, m, stayers) for a, b, m in win_segments]
    _force_at_least_one(cust, win_segments, win_counts, stayers)
    # Customers whose first order falls after as_of: outside the population, rate-driven.
    newcomers = cust.active & ~in_population
    new_idx = np.flatnonzero(newcomers)
    new_segments = _split(cust.first_sec, np.full(n, history_end), drift_sec, rate_mult)
    new_counts = [_poisson_counts(rng, cust, a, b, m, newcomers) for a, b, m in new_segments]
    win_cust, win_sec = _concat_times(
        rng, cust, np.empty(0, np.int64), np.empty(0, np.int64), win_segments, win_counts
    )
    new_cust, new_sec = _concat_times(
        rng, cust, new_idx, cust.first_sec[new_idx], new_segments, new_counts
    )
    post_cust = np.concatenate([win_cust, new_cust])
    post_sec = np.concatenate([win_sec, new_sec])
    _ensure_order_on_end_date(rng, config, post_cust, post_sec, stayers)
    post = _draw_marks(rng, cust, post_cust, post_sec, drift_sec, drift)

    customer_ids = _ids("C", np.arange(1, n + 1), 7)
    return GeneratedData(
        customers=_customers_frame(config, cust, customer_ids),
        orders=_orders_frame(config, pre, post, customer_ids),
        ground_truth=_ground_truth_frame(config, pop_idx, probability, churned, customer_ids),
        config=config,
    )


def write_raw_files(
    data: GeneratedData, out_dir: Path, fmt: Literal["csv", "parquet"] = "csv"
) -> list[Path]:
    """Writes customers.<fmt>, orders.<fmt>, ground_truth.<fmt> into out_dir (created if
    missing); returns the paths.

    pyarrow does the writing: it is several times faster than ``DataFrame.to_csv`` on ten
    million orders and keeps types exact in parquet (timestamp[s], date32, nullable int64).
    CSV nulls are empty unquoted fields and strings are quoted, so Postgres ``COPY ... CSV``
    reads nulls back as NULL.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, frame in (
        ("customers", data.customers),
        ("orders", data.orders),
        ("ground_truth", data.ground_truth),
    ):
        path = out_dir / f"{name}.{fmt}"
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if fmt == "csv":
            pa_csv.write_csv(table, path)
        else:
            pq.write_table(table, path)
        paths.append(path)
    return paths


def arrived_by(data: GeneratedData, day: date) -> GeneratedData:
    """``data`` as a feed would have delivered it by the end of ``day``: a monthly file.

    Orders dated on or before ``day``; customers whose account exists by then (``signup_at``
    on or before ``day``) or who ordered by then (a guest checkout, or no signup date), so
    every order's customer is in the file; the ground truth only once its label window has
    closed (``day >= config.end_date``), else empty: before that it would be the future.
    Cutting one generated history keeps every file consistent with the next: a label that
    has matured in one file is the same in every later one.
    """
    cutoff = pd.Timestamp(day) + pd.Timedelta(days=1)  # exclusive: all of ``day`` counts
    orders = data.orders.loc[data.orders["ordered_at"] < cutoff].reset_index(drop=True)
    customers = data.customers
    ordered = customers["customer_id"].isin(orders["customer_id"])
    signed_up = customers["signup_at"].notna() & (customers["signup_at"] < cutoff)
    truth = data.ground_truth
    if day < data.config.end_date:
        truth = truth.iloc[:0]
    return GeneratedData(
        customers=customers.loc[signed_up | ordered].reset_index(drop=True),
        orders=orders,
        ground_truth=truth.reset_index(drop=True),
        config=data.config,
    )


# --------------------------------------------------------------------------- latent customers


def _draw_customers(rng: np.random.Generator, config: GeneratorConfig) -> _Customers:
    """Draw every per-customer latent variable up front, unconditionally.

    Drawing all arrays for all customers (and deriving the drifted email mix from the same
    uniforms) keeps the random stream independent of the drift scenario, so a drifted run
    shares its customers with the baseline run of the same seed.
    """
    n = config.n_customers
    horizon = config.history_days + 1  # days, continuous
    history_end = horizon * SECONDS_PER_DAY

    signup_day = np.sort(rng.uniform(0.0, horizon, n))  # ids ascend with signup, as in a CRM
    active = rng.random(n) >= DORMANT_RATE
    first_order_lag = rng.exponential(2.0, n)  # days between signup and first order
    relative_rate = rng.lognormal(0.0, config.order_rate_spread, n)
    trend_kind = rng.random(n)
    fading = -rng.uniform(0.5, 3.0, n)
    growing = rng.uniform(0.2, 1.0, n)
    stable = rng.normal(0.0, 0.15, n)
    order_trend = np.where(trend_kind < 0.35, fading, np.where(trend_kind < 0.45, growing, stable))
    spend_level = rng.lognormal(np.log(40.0), 0.5, n)
    spend_trend = rng.normal(0.0, 0.3, n)
    breadth = 1 + rng.binomial(len(CATEGORIES) - 1, rng.beta(1.2, 3.0, n))
    gumbel = -np.log(-np.log(rng.random((n, len(CATEGORIES)))))
    preference = np.argsort(-(np.log(_CATEGORY_WEIGHTS) + gumbel), axis=1).astype(np.int8)
    email_u = rng.random(n)
    domain_u = rng.random(n)
    first_name = rng.integers(0, len(_FIRST_NAMES), n)
    last_name = rng.integers(0, len(_LAST_NAMES), n)
    signup_null = rng.random(n) < SIGNUP_NULL_RATE
    late_signup = rng.random(n) < LATE_SIGNUP_RATE
    late_by = rng.uniform(1.0, 30.0, n) * SECONDS_PER_DAY

    true_signup_sec = np.minimum(
        np.floor(signup_day * SECONDS_PER_DAY).astype(np.int64), history_end - 1
    )
    first_sec = np.minimum(
        np.floor((signup_day + first_order_lag) * SECONDS_PER_DAY).astype(np.int64),
        history_end - 1,
    )
    signup_sec = np.where(
        late_signup & active,
        np.minimum(first_sec + late_by.astype(np.int64), history_end - 1),
        true_signup_sec,
    )

    email_class = _email_classes(config, email_u, true_signup_sec)
    email = _emails(email_class, domain_u, first_name, last_name)

    # Scale rates so the expected order count (ignoring churn) is mean_orders_per_customer.
    unit_mass = _mass(np.ones(n), order_trend, first_sec, np.full(n, history_end))
    expected_extra = float(np.sum(relative_rate * unit_mass * active))
    wanted_extra = config.mean_orders_per_customer * n - float(active.sum())
    scale = max(wanted_extra, 0.0) / expected_extra if expected_extra > 0 else 0.0

    return _Customers(
        signup_sec=signup_sec,
        signup_null=signup_null,
        first_sec=first_sec,
        active=active,
        rate=relative_rate * scale,
        order_trend=order_trend,
        spend_level=spend_level,
        spend_trend=spend_trend,
        breadth=breadth.astype(np.int64),
        preference=preference,
        email_class=email_class,
        email=email,
    )


def _email_classes(config: GeneratorConfig, u: FloatArray, signup_sec: IntArray) -> IntArray:
    """Map one uniform per customer through the (possibly drifted) class mix."""
    classes = _classes_from_mix(DEFAULT_EMAIL_MIX, u)
    drift = config.drift
    if drift is not None and drift.email_mix is not None:
        drifted = _classes_from_mix(drift.email_mix, u)
        classes = np.where(signup_sec >= _drift_start_sec(config), drifted, classes)
    return classes


def _classes_from_mix(mix: Mapping[str, float], u: FloatArray) -> IntArray:
    weights = np.array([mix.get(c, 0.0) for c in EMAIL_CLASSES], dtype=np.float64)
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(EMAIL_CLASSES) - 1).astype(
        np.int64
    )


def _emails(
    email_class: IntArray, domain_u: FloatArray, first: IntArray, last: IntArray
) -> npt.NDArray[np.object_]:
    """Build ``first.lastNNN@domain`` addresses with numpy string ops (fast at 1M rows)."""
    n = email_class.size
    pools = (FREE_EMAIL_DOMAINS, BUSINESS_EMAIL_DOMAINS, EDUCATION_EMAIL_DOMAINS)
    domain = np.full(n, "", dtype="U32")
    for cls, pool in enumerate(pools):
        mask = email_class == cls
        pick = np.minimum((domain_u[mask] * len(pool)).astype(np.int64), len(pool) - 1)
        domain[mask] = np.asarray(pool)[pick]
    local = np.char.add(np.char.add(_FIRST_NAMES[first], "."), _LAST_NAMES[last])
    local = np.char.add(local, np.arange(1, n + 1).astype("U20"))  # unique per customer
    emails: npt.NDArray[np.object_] = np.char.add(np.char.add(local, "@"), domain).astype(object)
    emails[email_class == EMAIL_CLASSES.index("unknown")] = None
    return emails


# ------------------------------------------------------------------------------ order process


def _drift_start_sec(config: GeneratorConfig) -> int:
    """Seconds since start where drift begins; past the end when there is no drift."""
    history_end = (config.history_days + 1) * SECONDS_PER_DAY
    if config.drift is None:
        return history_end
    days = (config.drift.starts_at - config.start_date).days
    return int(np.clip(days * SECONDS_PER_DAY, 0, history_end))


def _post_drift_rate_multiplier(
    drift: DriftScenario | None, cust: _Customers
) -> float | FloatArray:
    """Each customer's order-rate factor from the drift start on.

    A scalar unless a concept shift needs one factor per customer: the scalar path is the
    arithmetic the generator had before concept drift existed, so those runs stay
    byte-identical. Derived from the email class, no draw: the random stream does not depend
    on the scenario.
    """
    if drift is None:
        return 1.0
    if drift.concept_shift == 0.0:
        return drift.order_rate_multiplier
    shift: FloatArray = np.exp(drift.concept_shift * _CONCEPT_DIRECTION[cust.email_class])
    return drift.order_rate_multiplier * shift


def _split(
    a_sec: IntArray, b_sec: IntArray, drift_sec: int, rate_mult: float | FloatArray
) -> list[_Segment]:
    """Split each customer's interval [a, b) at the drift start: (before, x1), (after, xm)."""
    cut = np.int64(drift_sec)
    return [
        (a_sec, np.minimum(b_sec, cut), 1.0),
        (np.maximum(a_sec, cut), b_sec, rate_mult),
    ]


def _expm1_over_x(x: FloatArray) -> FloatArray:
    small = np.abs(x) < 1e-9
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 + x / 2.0, np.expm1(safe) / safe)


def _mass(rate: FloatArray, trend: FloatArray, origin_sec: IntArray, b_sec: IntArray) -> FloatArray:
    """Expected orders of rate*exp(trend*(t-origin)/year) over [origin, b), t in days."""
    return _segment_mass(rate, trend, origin_sec, origin_sec, b_sec)


def _segment_mass(
    rate: FloatArray, trend: FloatArray, origin_sec: IntArray, a_sec: IntArray, b_sec: IntArray
) -> FloatArray:
    length = np.maximum(b_sec - a_sec, 0) / SECONDS_PER_DAY
    offset = (a_sec - origin_sec) / SECONDS_PER_DAY
    level = rate * np.exp(trend * offset / DAYS_PER_YEAR)
    mass: FloatArray = level * length * _expm1_over_x(trend * length / DAYS_PER_YEAR)
    return mass


def _poisson_counts(
    rng: np.random.Generator,
    cust: _Customers,
    a_sec: IntArray,
    b_sec: IntArray,
    mult: float | FloatArray,
    mask: BoolArray,
) -> IntArray:
    """Number of orders per customer in [a, b) of the customer's inhomogeneous process."""
    mass = _segment_mass(cust.rate, cust.order_trend, cust.first_sec, a_sec, b_sec) * mult
    counts: IntArray = rng.poisson(np.where(mask, mass, 0.0)).astype(np.int64)
    return counts


def _force_at_least_one(
    cust: _Customers,
    segments: list[_Segment],
    counts: list[IntArray],
    mask: BoolArray,
) -> None:
    """Give each masked customer with no order one order, in its most likely segment."""
    total = np.sum(counts, axis=0)
    needs = mask & (total == 0)
    masses = np.stack(
        [
            _segment_mass(cust.rate, cust.order_trend, cust.first_sec, a, b) * m
            + (b > a) * 1e-12  # an empty segment never wins
            for a, b, m in segments
        ]
    )
    best = np.argmax(masses, axis=0)
    for k, c in enumerate(counts):
        c[needs & (best == k)] += 1


def _concat_times(
    rng: np.random.Generator,
    cust: _Customers,
    fixed_cust: IntArray,
    fixed_sec: IntArray,
    segments: list[_Segment],
    counts: list[IntArray],
) -> tuple[IntArray, IntArray]:
    """Place the counted orders in time by inverting each segment's cumulative rate."""
    out_cust = [fixed_cust]
    out_sec = [fixed_sec]
    for (a_sec, b_sec, _), c in zip(segments, counts, strict=True):
        idx = np.repeat(np.arange(c.size, dtype=np.int64), c)
        a = a_sec[idx]
        b = b_sec[idx]
        length = (b - a) / SECONDS_PER_DAY
        dx = cust.order_trend[idx] * length / DAYS_PER_YEAR
        u = rng.random(idx.size)
        small = np.abs(dx) < 1e-9
        frac = np.where(small, u, np.log1p(u * np.expm1(dx)) / np.where(small, 1.0, dx))
        sec = a + np.floor(frac * (b - a)).astype(np.int64)
        out_cust.append(idx)
        out_sec.append(np.clip(sec, a, b - 1))
    return np.concatenate(out_cust), np.concatenate(out_sec)


def _ensure_order_on_end_date(
    rng: np.random.Generator,
    config: GeneratorConfig,
    post_cust: IntArray,
    post_sec: IntArray,
    stayers: BoolArray,
) -> None:
    """Move one window order onto ``end_date`` so max(order date) - window = as_of.

    A non-churned population customer's order is preferred: moving it within the window
    changes no label. Otherwise any newcomer's order is moved (still outside the population).
    """
    end_day = config.history_days
    if post_sec.size and (post_sec // SECONDS_PER_DAY == end_day).any():
        return
    candidates = np.flatnonzero(stayers[post_cust])
    if candidates.size == 0:
        candidates = np.arange(post_sec.size)
    if candidates.size == 0:
        raise ValueError(
            "every customer churned or never ordered, so no order can be placed on end_date "
            "without breaking a label; use more customers or another seed"
        )
    pick = candidates[rng.integers(0, candidates.size)]
    post_sec[pick] = end_day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY)


def _draw_marks(
    rng: np.random.Generator,
    cust: _Customers,
    order_cust: IntArray,
    order_sec: IntArray,
    drift_sec: int,
    drift: DriftScenario | None,
) -> _Orders:
    """Amount, item count and category for each order, driven by the customer's latents."""
    m = order_cust.size
    years = (order_sec - cust.first_sec[order_cust]) / SECONDS_PER_DAY / DAYS_PER_YEAR
    amount = (
        cust.spend_level[order_cust]
        * np.exp(cust.spend_trend[order_cust] * years)
        * rng.lognormal(0.0, 0.35, m)
    )
    if drift is not None:
        amount = np.where(order_sec >= drift_sec, amount * drift.spend_multiplier, amount)
    amount = np.where(rng.random(m) < FREE_ORDER_RATE, 0.0, np.round(amount, 2))
    item_count = 1 + rng.poisson(0.8, m).astype(np.int64)
    item_count_null = rng.random(m) < ITEM_COUNT_NULL_RATE
    # Favourites dominate: rank = floor(breadth * u^2) picks low ranks more often.
    rank = (cust.breadth[order_cust] * rng.random(m) ** 2).astype(np.int64)
    category = cust.preference[order_cust, rank]
    category = np.where(rng.random(m) < CATEGORY_NULL_RATE, np.int8(-1), category)
    return _Orders(
        cust=order_cust,
        sec=order_sec,
        amount=amount,
        item_count=item_count,
        item_count_null=item_count_null,
        category=category.astype(np.int8),
    )


# ------------------------------------------------------------------------------ hidden truth


def _hidden_truth(
    rng: np.random.Generator,
    config: GeneratorConfig,
    cust: _Customers,
    pre: _Orders,
    pop_idx: IntArray,
    drift_sec: int,
) -> tuple[FloatArray, IntArray]:
    """Churn probability from the features dbt sees at as_of, calibrated to the target rate.

    Under a concept shift the logit also moves by the shift a customer's order rate gets
    (minus its log factor: fewer orders, more churn), weighted by the share of the label
    window past the drift start, so this window's labels follow the same new rule as the
    order-derived labels of the other periods.
    """
    n = config.n_customers
    as_of_day = config.history_days - config.window_days
    day = pre.sec // SECONDS_PER_DAY

    n_orders = np.bincount(pre.cust, minlength=n)
    last_day = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_day, pre.cust, day)
    first_day = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_day, pre.cust, day)

    def revenue(days: int) -> FloatArray:
        recent = day > as_of_day - days
        summed = np.bincount(pre.cust[recent], weights=pre.amount[recent], minlength=n)
        return summed.astype(np.float64)

    rev30, rev365 = revenue(30), revenue(365)
    bits = np.where(pre.category >= 0, np.left_shift(1, pre.category.astype(np.int64)), 0)
    seen = np.zeros(n, dtype=np.int64)
    np.bitwise_or.at(seen, pre.cust, bits)
    diversity = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)[seen]

    signup_day = cust.signup_sec // SECONDS_PER_DAY
    tenure_start = np.where(cust.signup_null, first_day, np.minimum(signup_day, first_day))
    lifetime = as_of_day - tenure_start

    p = pop_idx
    signals = {
        "recency": np.log1p(as_of_day - last_day[p]),
        "frequency": np.log(n_orders[p] * 30.0 / np.maximum(lifetime[p], 30)),
        "spend_trend": np.log1p(rev30[p]) - np.log1p(rev365[p] * 30.0 / 365.0),
        "diversity": diversity[p].astype(np.float64),
        "tenure": np.log1p(lifetime[p].astype(np.float64)),
    }
    logit = _EMAIL_EFFECT[cust.email_class[p]] + rng.normal(0.0, _LOGIT_NOISE_SD, p.size)
    for name, weight in _LOGIT_WEIGHTS.items():
        logit = logit + weight * _standardise(signals[name])
    drift = config.drift
    if drift is not None and drift.concept_shift != 0.0:
        window_start = (as_of_day + 1) * SECONDS_PER_DAY
        window_end = (config.history_days + 1) * SECONDS_PER_DAY
        exposed = (window_end - max(drift_sec, window_start)) / (window_end - window_start)
        direction = _CONCEPT_DIRECTION[cust.email_class[p]]
        logit = logit - drift.concept_shift * max(exposed, 0.0) * direction
    intercept = _calibrate_intercept(logit, config.target_churn_rate)
    probability = np.clip(_sigmoid(logit + intercept), 1e-6, 1.0 - 1e-6)
    churned = (rng.random(p.size) < probability).astype(np.int64)
    return probability, churned


def _standardise(x: FloatArray) -> FloatArray:
    sd = float(x.std()) if x.size else 0.0
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))
    return out


def _calibrate_intercept(logit: FloatArray, target: float) -> float:
    """Bisection on the intercept so that mean(sigmoid(logit + b)) == target."""
    if logit.size == 0:
        return 0.0
    lo, hi = -40.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if float(_sigmoid(logit + mid).mean()) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# ---------------------------------------------------------------------------------- frames


def _ids(prefix: str, numbers: IntArray, width: int) -> npt.NDArray[np.object_]:
    digits = np.char.zfill(numbers.astype(f"U{max(width, 20)}"), width)
    ids: npt.NDArray[np.object_] = np.char.add(prefix, digits).astype(object)
    return ids


def _timestamps(config: GeneratorConfig, sec: IntArray) -> npt.NDArray[np.datetime64]:
    start = np.datetime64(config.start_date, "s")
    stamps: npt.NDArray[np.datetime64] = start + sec.astype("timedelta64[s]")
    return stamps


def _customers_frame(
    config: GeneratorConfig, cust: _Customers, customer_ids: npt.NDArray[np.object_]
) -> pd.DataFrame:
    signup_at = _timestamps(config, cust.signup_sec)
    signup_at[cust.signup_null] = np.datetime64("NaT")
    return pd.DataFrame(
        {
            "customer_id": customer_ids,
            "signup_at": signup_at,
            "email": cust.email,
        }
    )


def _orders_frame(
    config: GeneratorConfig, pre: _Orders, post: _Orders, customer_ids: npt.NDArray[np.object_]
) -> pd.DataFrame:
    """Concatenate, sort by time (order ids follow time, like a real sequence).

    Customer ids are indexed from the customers' id array, so ten million order rows share
    one million string objects instead of formatting ten million new ones.
    """
    cust = np.concatenate([pre.cust, post.cust])
    sec = np.concatenate([pre.sec, post.sec])
    order = np.lexsort((cust, sec))
    item_count = np.concatenate([pre.item_count, post.item_count])[order]
    item_null = np.concatenate([pre.item_count_null, post.item_count_null])[order]
    category_code = np.concatenate([pre.category, post.category])[order]
    category_lookup = np.array([*CATEGORIES, None], dtype=object)  # -1 -> None
    return pd.DataFrame(
        {
            "order_id": _ids("O", np.arange(1, order.size + 1), 8),
            "customer_id": customer_ids[cust[order]],
            "ordered_at": _timestamps(config, sec[order]),
            "amount": np.concatenate([pre.amount, post.amount])[order],
            "item_count": pd.arrays.IntegerArray(item_count, item_null),
            "category": category_lookup[category_code],
        }
    )


def _ground_truth_frame(
    config: GeneratorConfig,
    pop_idx: IntArray,
    probability: FloatArray,
    churned: IntArray,
    customer_ids: npt.NDArray[np.object_],
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": customer_ids[pop_idx],
            "as_of": np.full(pop_idx.size, config.as_of, dtype=object),
            "churn_probability": probability,
            "churned": churned,
        }
    )
