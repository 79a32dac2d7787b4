"""The buy-till-you-die reference: a BG/NBD model of each customer's purchases.

Why: the logistic reference asks whether the network beats a linear model of the same
features; this one asks whether it beats the classic model of non-contractual customers
(Fader, Hardie & Lee 2005, "Counting your customers the easy way"), which needs only each
customer's purchase count and dates and no labels. It is fitted on the training part and
scored on exactly the MLP's holdout, so the AUCs are paired (``btyd_auc`` beside
``reference_auc``).

The model: while alive a customer buys as a Poisson process with rate lambda ~ Gamma(r,
alpha); after each repeat purchase they drop out with probability p ~ Beta(a, b). Per
customer it takes x (repeat purchases), t_x (time of the last purchase since the first) and
T (age since the first purchase) at ``as_of``, in days. The churn score is the probability
of *no order in the next ``window_days`` days*, which is exactly the label's event:
``1 - P(alive) + P(alive) * ((alpha + T) / (alpha + T + window))^(r + x)``.

Why our own fit: four parameters by maximum likelihood is a few lines of scipy, which is
already installed. ``lifetimes`` (last release 2020) is unmaintained and pins old numpy/pandas
behaviour; ``btyd`` (its fork) stopped at a 2022 beta; ``pymc-marketing`` fits the same model
but brings PyMC and PyTensor, a heavy dependency for four numbers. The log-likelihood (FHL
2005, eq. 6) is written with ``gammaln``/``betaln`` and ``logaddexp`` in log space; the
optimiser (L-BFGS-B with the analytic gradient) works on log-parameters inside bounds, from a
fixed start, so the same rows give the same parameters.

Where x, t_x and T come from: the snapshot's own columns, not a second copy of the feature
SQL. The order count is recovered exactly from ``order_frequency`` (orders * 30 /
max(lifetime, 30), see ``customer_features.yml``); t_x and T are measured from the start of
``customer_lifetime_days`` (signup, or the first order if earlier or missing) rather than
from the first order. In the generated data the first order follows signup by ~2 days, so
this shifts T and t_x by that lag; a ``days_since_first_order`` column in dbt would remove it.
Stacked cohorts repeat customers (one row per customer and period): each row is a valid
observation at its own ``as_of``, so the pooled likelihood still estimates the population's
parameters (a composite likelihood), it only weights long-lived customers more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln
from sklearn.metrics import roc_auc_score

from churn_assets.ml.features import labels

FloatArray = npt.NDArray[np.float64]

# Log-parameter bounds: e^-10 .. e^10 covers every plausible shape and a rate scale of up
# to ~60 years in days, and keeps the optimiser away from overflow.
_LOG_BOUND = 10.0
_MAX_ITER = 500


@dataclass(frozen=True)
class BGNBDParams:
    """The four BG/NBD parameters (time unit: days)."""

    r: float
    alpha: float
    a: float
    b: float

    def as_array(self) -> FloatArray:
        return np.array([self.r, self.alpha, self.a, self.b], dtype=np.float64)


@dataclass(frozen=True)
class PurchaseHistory:
    """Per customer: repeat purchases ``x``, last purchase ``t_x`` and age ``T`` (days)."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray

    def __post_init__(self) -> None:
        if not (self.x.shape == self.t_x.shape == self.T.shape):
            raise ValueError("x, t_x and T must have the same shape")
        if (self.x < 0).any() or (self.t_x < 0).any() or (self.t_x > self.T).any():
            raise ValueError("need x >= 0 and 0 <= t_x <= T")


def purchase_history(df: pd.DataFrame) -> PurchaseHistory:
    """x, t_x, T at each row's ``as_of`` from the snapshot's columns (see the module doc)."""
    lifetime = df["customer_lifetime_days"].to_numpy(dtype=np.float64)
    since_last = df["days_since_last_order"].to_numpy(dtype=np.float64)
    frequency = df["order_frequency"].to_numpy(dtype=np.float64)
    orders = np.rint(frequency * np.maximum(lifetime, 30.0) / 30.0)
    x = np.maximum(orders - 1.0, 0.0)
    T = np.maximum(lifetime, 0.0)
    t_x = np.where(x > 0, np.clip(T - since_last, 0.0, T), 0.0)
    return PurchaseHistory(x=x, t_x=t_x, T=T)


def _terms(log_params: FloatArray, h: PurchaseHistory) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per customer: log-likelihood and the weights of its two likelihood branches."""
    r, alpha, a, b = np.exp(log_params)
    x, t_x, T = h.x, h.t_x, h.T
    repeat = x > 0
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    # The dropped-out-after-the-last-purchase branch exists only after a repeat purchase.
    a4 = np.full_like(x, -np.inf)
    a4[repeat] = (
        np.log(a) - np.log(b + x[repeat] - 1.0) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    )
    mix = np.logaddexp(a3, a4)
    return a1 + a2 + mix, np.exp(a3 - mix), np.exp(a4 - mix)


def log_likelihood(params: BGNBDParams, history: PurchaseHistory) -> FloatArray:
    """Each customer's BG/NBD log-likelihood (FHL 2005, eq. 6)."""
    return _terms(np.log(params.as_array()), history)[0]


def _objective(log_params: FloatArray, h: PurchaseHistory) -> tuple[float, FloatArray]:
    """Mean negative log-likelihood and its gradient in log-parameters."""
    r, alpha, a, b = np.exp(log_params)
    x, t_x, T = h.x, h.t_x, h.T
    ll, w3, w4 = _terms(log_params, h)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + T)
    d_r -= np.where(w4 > 0, w4 * np.log(alpha + t_x), 0.0)
    d_alpha = r / alpha - w3 * (r + x) / (alpha + T) - w4 * (r + x) / (alpha + t_x)
    d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    d_b = digamma(b + x) - digamma(a + b + x) - digamma(b) + digamma(a + b)
    d_b -= np.where(w4 > 0, w4 / np.maximum(b + x - 1.0, np.finfo(float).tiny), 0.0)
    gradient = np.array([d_r.mean(), d_alpha.mean(), d_a.mean(), d_b.mean()])
    return -float(ll.mean()), -gradient * np.array([r, alpha, a, b])


def fit_bgnbd(history: PurchaseHistory) -> BGNBDParams:
    """Maximum-likelihood BG/NBD parameters; deterministic (fixed start, no randomness).

    Raises ``ValueError`` when there are no customers or the optimiser fails.
    """
    if history.x.size == 0:
        raise ValueError("the BG/NBD model needs at least one customer")
    # Start: unit shapes, and a rate scale of the customers' mean age (a rate near 1/T).
    start = np.log([1.0, max(float(history.T.mean()), 1.0), 1.0, 1.0])
    result = minimize(
        _objective,
        start,
        args=(history,),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 4,
        options={"maxiter": _MAX_ITER},
    )
    if not np.isfinite(result.fun):
        raise ValueError(f"BG/NBD fit failed: {result.message}")
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return BGNBDParams(r=r, alpha=alpha, a=a, b=b)


def p_alive(params: BGNBDParams, history: PurchaseHistory) -> FloatArray:
    """P(still active at T | x, t_x, T) (FHL 2005, eq. 11); 1 without a repeat purchase."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = history.x, history.t_x, history.T
    repeat = x > 0
    log_odds = np.full_like(x, -np.inf)
    log_odds[repeat] = (
        np.log(a)
        - np.log(b + x[repeat] - 1.0)
        + (r + x[repeat]) * (np.log(alpha + T[repeat]) - np.log(alpha + t_x[repeat]))
    )
    out: FloatArray = np.exp(-np.logaddexp(0.0, log_odds))  # 1 / (1 + odds)
    return out


def p_no_order(params: BGNBDParams, history: PurchaseHistory, days: float) -> FloatArray:
    """P(no order in (T, T + days]): dropped out, or alive and no purchase (the churn score).

    Alive, the posterior rate is Gamma(r + x, alpha + T), so no purchase in ``days`` has
    probability ((alpha + T) / (alpha + T + days))^(r + x).
    """
    alive = p_alive(params, history)
    T = history.T
    quiet = np.exp(
        (params.r + history.x) * (np.log(params.alpha + T) - np.log(params.alpha + T + days))
    )
    out: FloatArray = 1.0 - alive + alive * quiet
    return out


@dataclass(frozen=True)
class BTYDResult:
    """The BG/NBD reference's holdout AUC, its parameters and how many rows it was fitted on."""

    auc: float
    params: BGNBDParams
    n_fit: int
    window_days: int


def compare_with_btyd(
    train_df: pd.DataFrame, holdout: pd.DataFrame, *, window_days: int
) -> BTYDResult:
    """Fit BG/NBD on ``train_df`` (labels unused) and score P(no order in ``window_days``)
    on ``holdout``: the AUC of that score against the holdout's churn labels."""
    params = fit_bgnbd(purchase_history(train_df))
    score = p_no_order(params, purchase_history(holdout), float(window_days))
    return BTYDResult(
        auc=float(roc_auc_score(labels(holdout), score)),
        params=params,
        n_fit=len(train_df),
        window_days=window_days,
    )
