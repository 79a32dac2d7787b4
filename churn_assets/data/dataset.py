"""The training dataset as a frame: what travels with it (``DataFrame.attrs`` keys, set
when the set is built, read by training and its checks) and its content hash."""

from __future__ import annotations

import hashlib

import pandas as pd

# DataFrame.attrs key under which the training dataset carries the raw load it came from.
RAW_LOAD_ATTR = "raw_load"
# ... and the directory its raw files came from: label rates compare within one source.
RAW_SOURCE_ATTR = "raw_source"
# ... the out-of-time holdout period (None: the history was too short, in-time holdout) ...
HOLDOUT_ATTR = "holdout_as_of"
# ... and the newest order date the platform knew when the set was built: scores of a
# period count towards a model's realized performance only if it was trained before it.
DATA_THROUGH_ATTR = "data_through"


def dataset_sha256(frame: pd.DataFrame) -> str:
    """A content hash of the dataset (values and column names), stable across runs."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
