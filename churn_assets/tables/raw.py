"""The raw tables as every engine sees them: ``raw.customers`` and ``raw.orders`` (the
delivered files, validated against the contract in :mod:`churn_assets.data.contract`) and
``raw.loads``, one row per load.

A load replaces both tables at once, all or nothing: a failure at any point (bad file, lost
connection) leaves the previous tables exactly as they were, and loading the same files
twice gives the same tables. ``raw.loads`` records which files (path, sha256, rows) the raw
tables hold and which Dagster run put them there; training records the row it trained on,
so a model names the exact raw data behind it. How Postgres does it:
:mod:`churn_assets.tables.postgres.raw`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

RAW_SCHEMA = "raw"
LOADS_TABLE = f"{RAW_SCHEMA}.loads"


@dataclass(frozen=True)
class LoadResult:
    """What one load wrote."""

    row_counts: dict[str, int]
    loaded_at: datetime
    load_id: int
    files_sha256: dict[str, str]
