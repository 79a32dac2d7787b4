"""Test frames for stacked periods: synthetic customers, one row per customer and period.

Churn depends on recency and frequency through a logit whose direction ``sign`` can flip,
so a test can build a period where the learned relation no longer holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    ID,
    LABEL,
    NUMERIC_FEATURES,
)


def period_frame(as_of: str, n: int, seed: int, sign: float = 1.0) -> pd.DataFrame:
    """``n`` customers (ids ``c00000``...) at ``as_of`` with a strong recency/frequency
    signal; ``sign=-1`` reverses it (the churners become the recent, frequent buyers)."""
    rng = np.random.default_rng(seed)
    recency = rng.exponential(40.0, n)
    frequency = rng.exponential(1.0, n)
    logit = sign * (0.06 * (recency - 40.0) - 1.5 * (frequency - 1.0)) - 1.0
    frame = pd.DataFrame({name: rng.uniform(0, 100, n) for name in NUMERIC_FEATURES})
    frame["days_since_last_order"] = recency
    frame["order_frequency"] = frequency
    frame[CATEGORICAL_FEATURE] = rng.choice(EMAIL_DOMAIN_CLASSES, n)
    frame[ID] = [f"c{i:05d}" for i in range(n)]
    frame[LABEL] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame.insert(0, "as_of", as_of)
    return frame


def stacked(as_ofs: list[str], n: int, seed: int = 0, flip: str | None = None) -> pd.DataFrame:
    """One ``period_frame`` per as_of (the same customer ids each time), stacked; the period
    ``flip`` gets the reversed relation."""
    return pd.concat(
        [
            period_frame(a, n, seed + i, sign=-1.0 if a == flip else 1.0)
            for i, a in enumerate(as_ofs)
        ],
        ignore_index=True,
    )
