"""Named data scenarios for demos and tests (pure configs for the generator)."""

from __future__ import annotations

from datetime import date

from churn_assets.data.generator import DriftScenario, GeneratorConfig

# Period 1: the reference demo (two years to 2025-12-29).
PERIOD_1 = GeneratorConfig()

# Period 2: half a year later, and from 2026-01-01 customers order half as often, spend 60% less
# and new sign-ups come mostly from business domains. A model trained on period 1 sees
# features it was never trained on: the drift gate should fail and trigger a retrain.
PERIOD_2 = GeneratorConfig(
    end_date=date(2026, 6, 29),  # as_of 2026-03-31, a month end like period 1's
    drift=DriftScenario(
        starts_at=date(2026, 1, 1),
        spend_multiplier=0.4,
        order_rate_multiplier=0.5,
        email_mix={"free": 0.25, "business": 0.55, "education": 0.05, "unknown": 0.15},
    ),
)
