"""Risk bands: edges from the policy, one rule for single and vectorised scores."""

from __future__ import annotations

import numpy as np
import pytest

from churn_assets.ml.bands import RiskBands
from churn_assets.policy import load_policy


def test_band_edges_come_from_the_policy_variables() -> None:
    bands = RiskBands.from_policy(
        load_policy({"CHURN_RISK_MEDIUM_FROM": "0.1", "CHURN_RISK_HIGH_FROM": "0.2"})
    )
    assert [bands.band(p) for p in (0.09, 0.1, 0.19, 0.2)] == ["low", "medium", "medium", "high"]


def test_vectorised_bands_agree_with_the_single_band_everywhere() -> None:
    bands = RiskBands.from_policy(load_policy({}))
    edges = [bands.medium_from, bands.high_from]
    probabilities = np.r_[
        np.linspace(0, 1, 1001), edges, np.nextafter(edges, 0.0), np.nextafter(edges, 1.0)
    ]
    assert list(bands.bands(probabilities)) == [bands.band(float(p)) for p in probabilities]


@pytest.mark.parametrize("probability", [-0.01, 1.01, float("nan"), float("inf")])
def test_bands_refuse_impossible_probabilities(probability: float) -> None:
    bands = RiskBands.from_policy(load_policy({}))
    with pytest.raises(ValueError, match="must be in"):
        bands.bands([0.5, probability])
