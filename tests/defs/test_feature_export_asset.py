"""The asset that writes the scorer's feed on Spark, called directly over a stand-in
warehouse: the file lands at the setting's path and the materialisation says what it holds."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churn_assets.defs.resources import WarehouseResource
from churn_assets.defs.serving.assets import current_features_export
from churn_assets.schema import SNAPSHOT_DTYPES
from churn_assets.serving.features import parquet_loader
from churn_assets.tables.feature_export import EXPORT_COLUMNS

FEB = date(2025, 2, 28)


class _CurrentFeatures:
    """What the asset asks of the warehouse: the newest period's rows, model dtypes."""

    def read_current_features(self) -> pd.DataFrame:
        rows = [
            {**dict.fromkeys(EXPORT_COLUMNS, 1), "as_of": FEB, "customer_id": f"c{i}"}
            | {"email_domain_class": "free", "total_revenue_30d": i + 0.5}
            for i in range(3)
        ]
        frame = pd.DataFrame(rows)
        return frame.astype({c: SNAPSHOT_DTYPES[c] for c in EXPORT_COLUMNS if c != "as_of"})


class _StandIn(WarehouseResource):
    def client(self) -> Any:
        return _CurrentFeatures()


def test_the_export_asset_writes_the_settings_file_and_says_what_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "elsewhere" / "features.parquet"
    monkeypatch.setenv("CHURN_ONLINE_FEATURES_PATH", str(path))
    result = current_features_export(warehouse=_StandIn())
    meta = {key: getattr(value, "value", value) for key, value in result.metadata.items()}
    assert meta == {
        "dagster/row_count": 3,
        "as_of": "2025-02-28",
        "path": str(path),
        "bytes": path.stat().st_size,
    }
    snapshot = parquet_loader(path)(None)
    assert snapshot is not None and snapshot.rows == 3 and snapshot.as_of == FEB
    assert snapshot.row("c2") == _CurrentFeatures().read_current_features().iloc[2].to_dict()
