"""Named data scenarios for demos and tests (pure configs for the generator)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Literal

from churn_assets.data.generator import (
    DriftScenario,
    GeneratedData,
    GeneratorConfig,
    arrived_by,
    write_raw_files,
)
from churn_assets.periods import Period, next_period_end, period_end

# Period 1: the reference demo (two years to 2025-12-29).
PERIOD_1 = GeneratorConfig()

# Period 2: half a year later, and from 2026-01-01 customers order half as often, spend 60% less
# and new sign-ups come mostly from business domains. A model trained on period 1 sees
# features it was never trained on: the drift gate should fail and trigger a retrain. Only
# distributions move (no concept_shift): who churns given the features does not, so a model
# retrained on period 2 does not beat period 1's; MONTHLY_STORY is the story that does.
PERIOD_2 = GeneratorConfig(
    end_date=date(2026, 6, 29),  # as_of 2026-03-31, a month end like period 1's
    drift=DriftScenario(
        starts_at=date(2026, 1, 1),
        spend_multiplier=0.4,
        order_rate_multiplier=0.5,
        email_mix={"free": 0.25, "business": 0.55, "education": 0.05, "unknown": 0.15},
    ),
)

# The month-by-month story: one generated history, delivered as the files a monthly feed would
# have brought (``story_month_ends``, ``write_month``). The first file ends 2025-11-30 with
# 20 months of history: labelled periods up to 2025-08-31, so the first model trains on six
# cohorts (2024-12-31 .. 2025-05-31), all before the drift, and is judged out of time on
# 2025-08-31. Then one file per month end, 2025-12-31 .. 2026-03-31. From 2025-10-01 business
# customers defect and free-mail customers stay (concept_shift 1.5; no distribution knob):
# in period 2025-10-31, 66% of business customers churn against 10% of free-mail ones (30%
# and 32% in 2025-06-30), and orders grow (free mail is the largest class), while the label
# rate of a period stays within 0.07 of the same history without the shift.
#
# Labels lag, so a retrain cannot win at once: a model retrained on the file of month end E
# is judged on E - 3 months and trains on cohorts up to E - 6 months, and the first cohort
# whose label window saw the drift at all is 2025-07-31 (a third of it; 2025-08-31 two
# thirds, 2025-09-30 all). Measured with the pandas restatement of the features (seed 7;
# tests/unit/test_concept_drift.py; the drift gate against all of a pre-drift model's cohort
# rows, so indicative), retrained vs pre-drift model on each file's holdout:
#
#   file        holdout     MLP gain  logistic gain  drift gate (8 features)
#   2025-10-31  2025-07-31   -0.001     +0.003       passes (1 drifted)
#   2025-11-30  2025-08-31   -0.001     +0.009       fails  (3)
#   2025-12-31  2025-09-30   +0.005     +0.012       fails  (3)
#   2026-01-31  2025-10-31   +0.021     +0.036       fails  (4)
#   2026-02-28  2025-11-30   +0.036     +0.056       fails  (5)
#   2026-03-31  2025-12-31   +0.043     +0.072       fails  (4)
#
# In the platform (``churn demo --scenario drift``, measured): v1 from the first file;
# retrains on 2025-12-31 and 2026-01-31 are kept (-0.004, +0.008 < the 0.010 required);
# those on 2026-02-28 and 2026-03-31 are promoted (+0.027, +0.020).
# so the drift gate fails before a retrain can win: the story needs the retrain trigger to
# fire again after a kept challenger (no cooldown across the story's months).
# The last file's holdout (2025-12-31) is the generator's hidden truth: the oracle AUC shows.
# Without the concept shift the same history gives no gain (|gain| <= 0.002) and no gate fails.
#
# 4,000 customers: each holdout has ~2,400-3,400 labelled customers, enough for the paired
# bootstrap interval of a gain of a few AUC points to exclude 0 (about +-0.01), while
# loading, dbt and training a month take seconds, so five monthly files make a demo.
MONTHLY_STORY = GeneratorConfig(
    n_customers=4_000,
    seed=7,
    end_date=date(2026, 3, 31),  # as_of 2025-12-31: the last file's holdout is the truth's
    history_days=730,
    drift=DriftScenario(starts_at=date(2025, 10, 1), concept_shift=1.5),
)
STORY_FIRST_MONTH_END = date(2025, 11, 30)


def story_month_ends(
    config: GeneratorConfig = MONTHLY_STORY, first: date = STORY_FIRST_MONTH_END
) -> list[date]:
    """The end of each file the story delivers: ``first`` (all history up to it), then every
    month end up to the last one on or before ``config.end_date``."""
    if first != period_end(first, Period.MONTH):
        raise ValueError(f"first must be a month end, got {first.isoformat()}")
    if not config.start_date < first <= config.end_date:
        raise ValueError(
            f"first ({first.isoformat()}) must lie in the generated history "
            f"({config.start_date.isoformat()} .. {config.end_date.isoformat()}]"
        )
    ends = [first]
    while (following := next_period_end(ends[-1], Period.MONTH)) <= config.end_date:
        ends.append(following)
    return ends


def story_deliveries(deliveries: Sequence[date] = ()) -> list[date]:
    """The files the story's feed brings: ``deliveries`` in order, each one of
    :func:`story_month_ends`, or all of those when none are given."""
    month_ends = story_month_ends()
    unknown = sorted({d for d in deliveries if d not in month_ends})
    if unknown:
        raise ValueError(
            f"{', '.join(d.isoformat() for d in unknown)}: not a month end of the story "
            f"({month_ends[0].isoformat()} .. {month_ends[-1].isoformat()})"
        )
    return sorted(set(deliveries)) or month_ends


def write_month(
    data: GeneratedData, month_end: date, out_dir: Path, fmt: Literal["csv", "parquet"] = "csv"
) -> list[Path]:
    """Write the raw files of ``data`` as they stood at the end of ``month_end`` into
    ``out_dir`` (see ``generator.arrived_by``); same files and format as ``write_raw_files``."""
    return write_raw_files(arrived_by(data, month_end), out_dir, fmt)
