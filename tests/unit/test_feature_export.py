"""The scorer's feed on Spark without Spark: the Parquet export of the newest period's
features, written as the asset writes it and loaded as the scorer loads it (pyarrow only),
giving the same copy as the warehouse's rows would."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn_assets.infra.warehouse import WarehouseError
from churn_assets.schema import SNAPSHOT_DTYPES
from churn_assets.serving.features import (
    FeatureSnapshot,
    OnlineFeatureSource,
    parquet_loader,
)
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.server import ServingError, _load_feature_copy
from churn_assets.settings import load_settings
from churn_assets.tables.feature_export import (
    EXPORT_ASSET,
    EXPORT_COLUMNS,
    EXPORT_SCHEMA,
    write_feature_export,
)

JAN, FEB = date(2025, 1, 31), date(2025, 2, 28)
NAMES = list(EXPORT_COLUMNS)  # as_of, customer_id, 7 numbers (3 integers), the class


def _row(as_of: date, customer: str, days: int | None, revenue: float | None) -> tuple[Any, ...]:
    """One row in the table's column order: integers are days_since_last_order,
    cart_diversity and customer_lifetime_days, the other numbers floats."""
    values = {
        "as_of": as_of,
        "customer_id": customer,
        "days_since_last_order": days,
        "total_revenue_30d": revenue,
        "total_revenue_90d": 0.1,
        "total_revenue_365d": 1e12 + 0.5,
        "order_frequency": 1 / 3,
        "cart_diversity": 70_000,  # more than 16 bits
        "customer_lifetime_days": 400,
        "email_domain_class": None if days is None else "free",
    }
    return tuple(values[name] for name in NAMES)


ROWS = [
    _row(JAN, "c1", 3, 10.5),
    _row(JAN, "c2", 2**40, -0.0),  # an integer that needs 64 bits
    _row(JAN, "c3", None, None),  # NULLs: an integer, a float and the class
    _row(JAN, "c\t4 é", 0, 1e-300),  # any text as an id
]


def _write_rows(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """A file as Parquet holds the rows (NULL integers included, which the asset's frames
    never have), through pyarrow alone."""
    columns = list(zip(*rows, strict=True))
    pq.write_table(pa.table(dict(zip(NAMES, columns, strict=True)), schema=EXPORT_SCHEMA), path)


def _typed(row: dict[str, Any] | None) -> list[tuple[str, Any, type]]:
    assert row is not None
    return [(name, value, type(value)) for name, value in row.items()]


def test_the_files_copy_equals_the_copy_of_the_same_rows(tmp_path: Path) -> None:
    path = tmp_path / "features.parquet"
    _write_rows(path, ROWS)
    loaded = parquet_loader(path, chunk_rows=3)(None)  # two batches
    expected = FeatureSnapshot.from_rows(NAMES, ROWS)
    assert loaded is not None
    assert (loaded.rows, loaded.as_of) == (expected.rows, expected.as_of) == (4, JAN)
    for row in ROWS:  # values, Python types and column order, row by row
        assert _typed(loaded.row(row[1])) == _typed(expected.row(row[1])), row[1]
    assert loaded.nbytes == expected.nbytes  # the same arrays, not only the same answers


def _frame(as_of: date, revenue: float) -> pd.DataFrame:
    """Rows as the warehouse interface reads ``marts.current_features`` (model dtypes)."""
    rows = [_row(as_of, "c1", 3, revenue), _row(as_of, "c2", 5, 0.25)]
    frame = pd.DataFrame(rows, columns=NAMES)
    return frame.astype({c: SNAPSHOT_DTYPES[c] for c in NAMES if c != "as_of"})


def test_the_export_round_trips_the_interfaces_rows_and_says_what_it_wrote(
    tmp_path: Path,
) -> None:
    path = tmp_path / "online" / "current_features.parquet"  # the directory is made
    frame = _frame(FEB, 12.75)
    exported = write_feature_export(frame.assign(extra=1), path)  # other columns stay out
    assert (exported.path, exported.rows, exported.as_of) == (path, 2, FEB)
    assert exported.bytes == path.stat().st_size > 0
    assert pq.read_schema(path).equals(EXPORT_SCHEMA)
    assert os.listdir(path.parent) == [path.name]  # no temporary file left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable as any file made here
    snapshot = parquet_loader(path)(None)
    assert snapshot is not None
    for record in frame.to_dict("records"):
        row = snapshot.row(record["customer_id"])
        assert row == record
        assert row is not None and isinstance(row["cart_diversity"], int)
        assert isinstance(row["total_revenue_30d"], float)


def test_a_failed_export_leaves_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "current_features.parquet"
    write_feature_export(_frame(JAN, 1.0), path)
    before = path.read_bytes()

    def disk_full(table: pa.Table, where: Any, **kwargs: Any) -> None:
        """Half a file, then the disk is full (wherever the writer asked to write)."""
        if hasattr(where, "write"):
            where.write(b"PAR1 half a file")
        else:
            Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_feature_export(_frame(FEB, 2.0), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_an_unchanged_file_is_not_reloaded_and_a_rewritten_one_is(tmp_path: Path) -> None:
    path = tmp_path / "current_features.parquet"
    write_feature_export(_frame(JAN, 1.0), path)
    load = parquet_loader(path)
    first = load(None)
    assert first is not None and first.as_of == JAN
    assert load(first.fingerprint) is None
    write_feature_export(_frame(FEB, 2.0), path)  # the same size: a new file all the same
    second = load(first.fingerprint)
    assert second is not None and second.fingerprint != first.fingerprint
    assert second.as_of == FEB
    assert second.row("c1") == first.row("c1") | {"as_of": FEB, "total_revenue_30d": 2.0}


def test_a_missing_file_fails_the_refresh_naming_it_and_the_copy_keeps_answering(
    tmp_path: Path,
) -> None:
    path = tmp_path / "current_features.parquet"
    write_feature_export(_frame(JAN, 1.0), path)
    source = OnlineFeatureSource.from_export(path)
    assert source.refresh()
    before = source.get("c1")
    path.unlink()
    with pytest.raises(WarehouseError, match="no online features file") as raised:
        parquet_loader(path)(None)
    assert str(path) in str(raised.value) and EXPORT_ASSET in str(raised.value)
    assert not source.refresh()
    state = source.state()
    assert state.available and state.refresh_failed and state.as_of == JAN
    assert state.table == str(path)  # what /health names
    assert state.last_error is not None and str(path) in state.last_error.message
    assert before is not None and source.get("c1") == before
    write_feature_export(_frame(FEB, 2.0), path)  # the next export: caught up, no restart
    assert source.refresh() and source.state().as_of == FEB


@pytest.mark.parametrize(
    "content",
    [
        b"not parquet at all\n",  # e.g. a file copied half-way by hand
        None,  # a Parquet file without the scorer's columns
    ],
)
def test_an_unreadable_file_is_one_warehouse_error_line(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "current_features.parquet"
    if content is None:
        pq.write_table(pa.table({"customer_id": ["c1"]}), path)
    else:
        path.write_bytes(content)
    with pytest.raises(WarehouseError) as raised:
        parquet_loader(path)(None)
    message = str(raised.value)
    assert message.startswith(f"cannot read the online features file {path}")
    assert EXPORT_ASSET in message and "\n" not in message


def test_the_scorer_on_spark_loads_the_export_and_names_it_when_missing(tmp_path: Path) -> None:
    settings = load_settings({"CHURN_HOME": str(tmp_path), "CHURN_ENGINE": "spark"})
    path = settings.online_features_path
    assert path == tmp_path / "online" / "current_features.parquet"
    with pytest.raises(ServingError) as raised:
        _load_feature_copy(settings, 5.0, ServingMetrics())
    message = str(raised.value)
    assert str(path) in message and f"Materialize {EXPORT_ASSET}" in message
    assert "churn demo" in message and "\n" not in message
    assert not (tmp_path / "pg").exists()  # no warehouse was started for it

    write_feature_export(_frame(FEB, 2.0), path)
    source = _load_feature_copy(settings, 5.0, ServingMetrics())
    try:
        state = source.state()
        assert (state.rows, state.as_of, state.table) == (2, FEB, str(path))
        assert source.get("c2") is not None
    finally:
        source.close()
