"""Read the dbt training snapshot into pandas with the dtypes the ML code expects."""

from __future__ import annotations

import hashlib

import pandas as pd
import psycopg2.extensions

from churn_assets.schema import CURRENT_FEATURES_TABLE, SNAPSHOT_DTYPES, TRAINING_SNAPSHOT_TABLE

# DataFrame.attrs key under which the training dataset carries the raw load it came from.
RAW_LOAD_ATTR = "raw_load"
# ... and the directory its raw files came from: label rates compare within one source.
RAW_SOURCE_ATTR = "raw_source"
FEATURE_TABLES = (TRAINING_SNAPSHOT_TABLE, CURRENT_FEATURES_TABLE)

# Postgres numeric arrives as Decimal and integers as Python ints; the model and the
# data-quality suite want plain numpy dtypes, as listed once in the schema.
_DTYPES = {column: dtype for column, dtype in SNAPSHOT_DTYPES.items() if column != "as_of"}


def read_training_snapshot(conn: psycopg2.extensions.connection) -> pd.DataFrame:
    """The whole training snapshot, one row per customer, ordered by ``customer_id``."""
    return read_feature_table(conn, TRAINING_SNAPSHOT_TABLE)


def read_feature_table(conn: psycopg2.extensions.connection, table: str) -> pd.DataFrame:
    """A features table (e.g. ``marts.current_features``) with the same dtypes."""
    if table not in FEATURE_TABLES:
        raise ValueError(f"unknown feature table {table!r}; expected one of {FEATURE_TABLES}")
    with conn.cursor() as cur:
        cur.execute(f"select * from {table} order by customer_id")
        columns = [column.name for column in cur.description or ()]
        frame = pd.DataFrame(cur.fetchall(), columns=columns)
    # Only cast columns that are present: a missing column is the quality suite's to report.
    return frame.astype({c: t for c, t in _DTYPES.items() if c in frame.columns})


def dataset_sha256(frame: pd.DataFrame) -> str:
    """A content hash of the dataset (values and column names), stable across runs."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
