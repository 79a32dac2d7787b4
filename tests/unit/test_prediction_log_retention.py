"""The prediction log's retention against the label window: a retention that would delete
predictions before their labels can exist is refused, naming what to move."""

from __future__ import annotations

import pytest

from churn_assets.periods import Period
from churn_assets.policy import Policy, PolicyError, load_policy
from churn_assets.settings import DEFAULT_WINDOW_DAYS
from churn_assets.tables.online_predictions import check_retention, min_retention_days


def test_the_shortest_retention_is_the_label_window_plus_the_longest_period() -> None:
    assert min_retention_days(90, Period.MONTH) == 121
    assert min_retention_days(90, Period.WEEK) == 97


@pytest.mark.parametrize("period", list(Period))
def test_the_default_retention_keeps_predictions_past_the_default_label_window(
    period: Period,
) -> None:
    check_retention(Policy().prediction_log_retention_days, DEFAULT_WINDOW_DAYS, period)


def test_a_retention_shorter_than_the_window_plus_a_period_is_refused() -> None:
    check_retention(121, 90, Period.MONTH)  # just enough
    with pytest.raises(PolicyError) as refused:
        check_retention(120, 90, Period.MONTH)
    message = str(refused.value)
    assert "CHURN_PREDICTION_LOG_RETENTION_DAYS=120" in message
    assert "CHURN_WINDOW_DAYS=90" in message
    assert "at least 121" in message


def test_the_retention_is_read_from_its_variable() -> None:
    env = {"CHURN_PREDICTION_LOG_RETENTION_DAYS": "365"}
    assert load_policy(env).prediction_log_retention_days == 365
    with pytest.raises(PolicyError, match="CHURN_PREDICTION_LOG_RETENTION_DAYS"):
        load_policy({"CHURN_PREDICTION_LOG_RETENTION_DAYS": "0"})
