"""Risk bands for churn probabilities: the single definition online and batch scoring share.

The edges live here and nowhere else, so an API response and a row of
``scoring.churn_scores`` can never disagree about what "high" means. The bands apply to the
model's score as served: training weights churners up (``pos_weight``), so scores run higher
than observed churn rates, and the edges were chosen on that scale, not as calibrated rates.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

RiskBand = Literal["low", "medium", "high"]

# low < MEDIUM_FROM <= medium < HIGH_FROM <= high. Changing an edge changes the meaning of
# every stored score's band: do it together with a re-run of batch scoring.
MEDIUM_FROM: Final = 0.3
HIGH_FROM: Final = 0.6
BANDS: Final[tuple[RiskBand, ...]] = ("low", "medium", "high")


def risk_band(probability: float) -> RiskBand:
    """The band of one probability in [0, 1]; raises ``ValueError`` outside it (or NaN),
    since a band for an impossible score would hide a scoring bug."""
    if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
        raise ValueError(f"churn probability must be in [0, 1], got {probability}")
    if probability < MEDIUM_FROM:
        return "low"
    if probability < HIGH_FROM:
        return "medium"
    return "high"


def risk_bands(probabilities: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """Vectorised :func:`risk_band` for batch scoring (same edges, same validation)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if not (np.isfinite(p) & (p >= 0.0) & (p <= 1.0)).all():
        raise ValueError("churn probabilities must be in [0, 1]")
    index = (p >= MEDIUM_FROM).astype(np.int64) + (p >= HIGH_FROM).astype(np.int64)
    return np.asarray(BANDS)[index]
