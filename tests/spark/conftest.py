"""What the Spark test modules share: settings for a Spark engine under a short directory
of /tmp (one per module: each module starts its own JVM and embedded Derby metastore)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from churn_assets.settings import Settings, load_settings


@pytest.fixture(scope="module")
def spark_settings() -> Iterator[Settings]:
    """Spark's warehouse, metastore (and derby.log) and scratch space under a short
    directory of /tmp, removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="churn-spark-", dir="/tmp"))
    yield load_settings(
        {"CHURN_HOME": str(home), "CHURN_ENGINE": "spark", "CHURN_SPARK_MASTER": "local[2]"}
    )
    shutil.rmtree(home, ignore_errors=True)
