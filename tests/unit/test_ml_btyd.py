"""Unit tests for the BG/NBD buy-till-you-die reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.btyd import (
    BGNBDParams,
    PurchaseHistory,
    compare_with_btyd,
    fit_bgnbd,
    log_likelihood,
    p_alive,
    p_no_order,
    purchase_history,
)
from churn_assets.ml.features import LABEL
from tests.unit._features import default_run

TRUE = BGNBDParams(r=0.8, alpha=40.0, a=0.9, b=3.0)


def _simulate(params: BGNBDParams, n: int, seed: int) -> PurchaseHistory:
    """Customers drawn from BG/NBD itself: Poisson purchases at a Gamma rate, and after each
    repeat purchase a Beta dropout coin; observed for T ~ U(30, 720) days."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(params.r, 1.0 / params.alpha, n)
    dropout = rng.beta(params.a, params.b, n)
    age = rng.uniform(30.0, 720.0, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = rng.exponential(1.0 / rate[i])
        while t <= age[i]:
            x[i] += 1
            t_x[i] = t
            if rng.random() < dropout[i]:
                break
            t += rng.exponential(1.0 / rate[i])
    return PurchaseHistory(x=x, t_x=t_x, T=age)


@pytest.fixture(scope="module")
def simulated() -> PurchaseHistory:
    return _simulate(TRUE, 5000, seed=1)


def test_fit_recovers_the_parameters_the_data_was_simulated_from(
    simulated: PurchaseHistory,
) -> None:
    fitted = fit_bgnbd(simulated)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE, name), rel=0.2), name
    # The optimum beats the truth on its own sample (it is the maximum).
    assert log_likelihood(fitted, simulated).sum() >= log_likelihood(TRUE, simulated).sum()


def test_fit_is_deterministic(simulated: PurchaseHistory) -> None:
    assert fit_bgnbd(simulated) == fit_bgnbd(simulated)


def test_log_likelihood_of_a_customer_without_repeats_is_the_closed_form() -> None:
    # x = 0: L = (alpha / (alpha + T))^r (never bought again and never had a chance to drop).
    one = PurchaseHistory(x=np.array([0.0]), t_x=np.array([0.0]), T=np.array([100.0]))
    expected = TRUE.r * np.log(TRUE.alpha / (TRUE.alpha + 100.0))
    assert log_likelihood(TRUE, one)[0] == pytest.approx(expected)


def test_frequent_recent_buyers_are_more_alive_than_long_silent_ones() -> None:
    history = PurchaseHistory(
        x=np.array([10.0, 10.0, 0.0]),
        t_x=np.array([360.0, 60.0, 0.0]),  # last order 5 days ago vs 305 days ago
        T=np.array([365.0, 365.0, 365.0]),
    )
    alive = p_alive(TRUE, history)
    assert alive[0] > 0.9 > 0.1 > alive[1]
    assert alive[2] == 1.0  # no repeat purchase: no chance to drop out yet (BG/NBD)
    quiet = p_no_order(TRUE, history, 90.0)
    assert quiet[0] < quiet[1]
    assert ((quiet >= 0.0) & (quiet <= 1.0)).all()
    # A longer horizon can only make "no order" less likely.
    assert (p_no_order(TRUE, history, 180.0) <= quiet).all()


def test_purchase_history_reads_the_snapshot_columns_exactly() -> None:
    # order_frequency = orders * 30 / max(lifetime, 30): the count comes back as an integer.
    frame = pd.DataFrame(
        {
            "order_frequency": [3 * 30 / 200, 1 * 30 / 30, 5 * 30 / 30],
            "customer_lifetime_days": [200, 10, 0],
            "days_since_last_order": [50, 10, 0],
        }
    )
    history = purchase_history(frame)
    assert history.x.tolist() == [2.0, 0.0, 4.0]
    assert history.T.tolist() == [200.0, 10.0, 0.0]
    assert history.t_x.tolist() == [150.0, 0.0, 0.0]


def test_purchase_history_recovers_every_order_count_of_the_demo() -> None:
    run = default_run()
    data, snapshot = run.data, run.snapshot
    as_of = pd.Timestamp(data.config.as_of)
    known = data.orders[data.orders["ordered_at"].dt.normalize() <= as_of]
    counts = known.groupby("customer_id").size()
    expected = counts.loc[snapshot["customer_id"]].to_numpy() - 1
    assert np.array_equal(purchase_history(snapshot).x, expected)


def test_btyd_auc_on_a_tiny_holdout() -> None:
    run = default_run()
    result = compare_with_btyd(run.train_df, run.holdout_df, window_days=90)
    assert result.n_fit == len(run.train_df)
    assert result.window_days == 90
    assert 0.6 < result.auc <= 1.0  # far better than chance on the demo
    tiny = pd.DataFrame(
        {
            "order_frequency": [10 * 30 / 365, 10 * 30 / 365, 2 * 30 / 365, 1 * 30 / 365],
            "customer_lifetime_days": [365, 365, 365, 365],
            "days_since_last_order": [3, 300, 200, 364],
            LABEL: [0, 1, 1, 1],
        }
    )
    result = compare_with_btyd(run.train_df, tiny, window_days=90)
    assert result.auc == 1.0  # the only recent, frequent buyer is the only stayer
