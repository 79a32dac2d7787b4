"""The newest period's features as one Parquet file: what the online scorer loads its copy
of ``marts.current_features`` from when the warehouse is one it cannot read without a JVM
(Spark, issue 26 item 3). The asset ``current_features_export`` writes it
(``defs/serving/assets.py``); the scorer reads it with pyarrow alone
(:func:`churn_assets.serving.features.parquet_loader`).

The file holds the columns the scorer reads from the table, in the table's order, typed as
the Postgres copy hands them over (integers as int64, the other numbers as float64, ``as_of``
as a date, text as strings), so a scorer's copy is the same on either engine. It is written
beside its final name and renamed over it: a scorer polling the path sees the old file or
the new one, never half of one.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churn_assets.schema import CATEGORICAL_FEATURE, ID, NUMERIC_FEATURES, SNAPSHOT_DTYPES

EXPORT_ASSET = "current_features_export"  # the asset that writes the file (named in errors)
EXPORT_COLUMNS: tuple[str, ...] = ("as_of", ID, *NUMERIC_FEATURES, CATEGORICAL_FEATURE)
# The model's dtypes (what the warehouse interface reads) as Arrow types; as_of is a date.
_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "object": pa.string()}
EXPORT_SCHEMA = pa.schema(
    [
        (column, pa.date32() if column == "as_of" else _ARROW_TYPES[SNAPSHOT_DTYPES[column]])
        for column in EXPORT_COLUMNS
    ]
)


@dataclass(frozen=True)
class ExportedFile:
    """What was written: shown on the asset's materialisation."""

    path: Path
    rows: int
    as_of: date | None  # the newest period in the file (None: no rows)
    bytes: int


def write_feature_export(features: pd.DataFrame, path: Path) -> ExportedFile:
    """Write ``features`` (rows of ``marts.current_features`` as the warehouse interface
    reads them) to ``path`` as one Parquet file, replacing it atomically; the directory is
    created if missing. Raises ``KeyError`` for a missing column, ``OSError`` when the
    directory cannot be written (the old file, if any, is left as it was)."""
    table = pa.Table.from_pandas(
        features[list(EXPORT_COLUMNS)], schema=EXPORT_SCHEMA, preserve_index=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the rename is atomic (one file system); a dot name, so nothing
    # that lists the directory for Parquet files takes it for one. Not tempfile.mkstemp:
    # its file is private to this user (0600), and a scorer may run as another one.
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with temporary.open("xb") as out:
            pq.write_table(table, out)
            out.flush()
            os.fsync(out.fileno())  # a crash after the rename leaves the rows, not an empty file
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return ExportedFile(
        path=path,
        rows=table.num_rows,
        as_of=pc.max(table.column("as_of")).as_py(),
        bytes=path.stat().st_size,
    )
