"""The dbt feature tables as the Python side reads them, on every engine: the training
snapshot, the current features and the per-period features, in the dtypes the ML code
expects, and the labelled periods (checked against this run's label definition). How
Postgres reads them: :mod:`churn_assets.tables.postgres.snapshot`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd

from churn_assets.periods import PeriodError
from churn_assets.schema import (
    CHURN_LABELS_TABLE,
    CURRENT_FEATURES_TABLE,
    CUSTOMER_FEATURES_TABLE,
    SNAPSHOT_DTYPES,
    TRAINING_SNAPSHOT_TABLE,
)

FEATURE_TABLES = (TRAINING_SNAPSHOT_TABLE, CURRENT_FEATURES_TABLE, CUSTOMER_FEATURES_TABLE)

# A warehouse's numbers arrive in its own types (Postgres numeric as Decimal, integers as
# Python ints); the model and the data-quality suite want plain numpy dtypes, as listed
# once in the schema.
_DTYPES = {column: dtype for column, dtype in SNAPSHOT_DTYPES.items() if column != "as_of"}


class LabelDefinitionError(PeriodError):
    """Labels in the warehouse were built under another definition than this run's."""

    @classmethod
    def for_other_windows(
        cls, window_days: int, other: Sequence[tuple[int, int, int, date, date]]
    ) -> LabelDefinitionError:
        """The error for labels of other windows than ``window_days``: per window, its rows,
        periods, first and last period (what each engine's query returns)."""
        found = "; ".join(
            f"{rows:,} rows of {n} period(s) {first.isoformat()} .. {last.isoformat()} "
            f"with a {window}-day window"
            for window, rows, n, first, last in other
        )
        return cls(
            f"{CHURN_LABELS_TABLE} holds labels of another definition than this run's "
            f"{window_days}-day window (CHURN_WINDOW_DAYS): {found}. Rebuild every period "
            "with this window (churn run, or churn backfill) before training; nothing "
            "was trained"
        )


def with_model_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (rows of a feature table) with the dtypes of ``SNAPSHOT_DTYPES``. Only
    columns that are present are cast: a missing column is the quality suite's to report."""
    return frame.astype({c: t for c, t in _DTYPES.items() if c in frame.columns})
