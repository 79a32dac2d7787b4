"""The raw-files sensor: new content is noticed by its sha256, not by its mtime."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.data.contract import file_sha256
from churn_assets.defs.ingest import sensors


@pytest.fixture
def raw_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "customers.csv").write_text("customer_id,signup_at,email\nC1,2024-01-01,a@b.com\n")
    (raw / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount,item_count,category\nO1,C1,2024-02-01,10,1,books\n"
    )
    monkeypatch.setenv("CHURN_RAW_DIR", str(raw))
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    return raw


def _tick(
    instance: dg.DagsterInstance, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    sensor = sensors.defs().get_sensor_def(sensors.RAW_FILES_SENSOR)
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor, result.skip_message


def _loaded(instance: dg.DagsterInstance, raw_dir: Path) -> None:
    """What the ingest run reports after loading the files as they are now."""
    for table in ("customers", "orders"):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                f"raw_{table}", metadata={"source_sha256": file_sha256(raw_dir / f"{table}.csv")}
            )
        )


def test_new_files_are_loaded_once_and_a_touch_is_not_new(
    instance: dg.DagsterInstance, raw_dir: Path
) -> None:
    requests, cursor, _ = _tick(instance, None)
    assert len(requests) == 1
    first_key = requests[0].run_key
    assert requests[0].run_config == {"ops": {"raw_tables": {"config": {"raw_dir": str(raw_dir)}}}}
    # asked again before the load happened: the same run key, so the daemon runs it once
    again, cursor, _ = _tick(instance, cursor)
    assert [r.run_key for r in again] == [first_key]

    _loaded(instance, raw_dir)
    requests, cursor, skip = _tick(instance, cursor)
    assert requests == [] and "already loaded" in (skip or "")
    # same bytes, newer mtime: nothing to load
    orders = raw_dir / "orders.csv"
    os.utime(orders, (orders.stat().st_atime, orders.stat().st_mtime + 100))
    assert _tick(instance, cursor)[0] == []


def test_changed_content_is_loaded_and_returning_content_is_loaded_again(
    instance: dg.DagsterInstance, raw_dir: Path
) -> None:
    _loaded(instance, raw_dir)
    original = (raw_dir / "orders.csv").read_text()
    (raw_dir / "orders.csv").write_text(original + "O2,C1,2024-03-01,5,1,books\n")
    changed, cursor, _ = _tick(instance, None)
    assert len(changed) == 1
    _loaded(instance, raw_dir)
    (raw_dir / "orders.csv").write_text(original)  # A -> B -> A: A is news again
    back, _, _ = _tick(instance, cursor)
    assert len(back) == 1 and back[0].run_key != changed[0].run_key


def test_no_files_or_half_a_delivery_requests_nothing(
    instance: dg.DagsterInstance, raw_dir: Path
) -> None:
    (raw_dir / "orders.csv").unlink()
    requests, _, skip = _tick(instance, None)
    assert requests == [] and "does not hold one customers and one orders file" in (skip or "")
    (raw_dir / "customers.csv").unlink()
    requests, _, skip = _tick(instance, None)
    assert requests == [] and "no raw files" in (skip or "")
