"""Risk bands for churn probabilities: the one definition online and batch scoring share.

The edges are policy rules (``CHURN_RISK_MEDIUM_FROM``, ``CHURN_RISK_HIGH_FROM`` in
:mod:`churn_assets.policy`), so an API response and a row of ``scoring.churn_scores`` can
never disagree about what "high" means. Probabilities are calibrated (the prior correction
in training), so the edges read as expected churn rates. Changing an edge changes the
meaning of every stored band: re-run batch scoring with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from churn_assets.policy import Policy

RiskBand = Literal["low", "medium", "high"]
BANDS: Final[tuple[RiskBand, ...]] = ("low", "medium", "high")


@dataclass(frozen=True)
class RiskBands:
    """low < ``medium_from`` <= medium < ``high_from`` <= high (edges inclusive from below)."""

    medium_from: float
    high_from: float

    @classmethod
    def from_policy(cls, policy: Policy) -> RiskBands:
        return cls(policy.risk_medium_from, policy.risk_high_from)

    def band(self, probability: float) -> RiskBand:
        """The band of one probability in [0, 1]; raises ``ValueError`` outside it (or NaN),
        since a band for an impossible score would hide a scoring bug."""
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            raise ValueError(f"churn probability must be in [0, 1], got {probability}")
        if probability < self.medium_from:
            return "low"
        if probability < self.high_from:
            return "medium"
        return "high"

    def bands(self, probabilities: npt.ArrayLike) -> npt.NDArray[np.str_]:
        """Vectorised :meth:`band` for batch scoring (same edges, same validation)."""
        p = np.asarray(probabilities, dtype=np.float64)
        if not (np.isfinite(p) & (p >= 0.0) & (p <= 1.0)).all():
            raise ValueError("churn probabilities must be in [0, 1]")
        index = (p >= self.medium_from).astype(np.int64) + (p >= self.high_from).astype(np.int64)
        return np.asarray(BANDS)[index]
