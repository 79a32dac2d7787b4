"""The whole graph, in process, against the embedded Postgres: `churn demo` as a user runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from churn_assets import warehouse
from churn_assets.cli import main
from churn_assets.settings import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(churn_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    """`churn demo` once for the module, with default settings and an empty raw dir."""
    raw_dir = tmp_path_factory.mktemp("demo_raw")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHURN_HOME", str(churn_home))
        mp.setenv("CHURN_RAW_DIR", str(raw_dir))
        result = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    return result, raw_dir


def _rows(query: str) -> list[tuple[Any, ...]]:
    url = warehouse.start_embedded(load_settings().embedded_pg_dir)
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def test_demo_generates_data_and_materialises_the_graph(demo: tuple[Result, Path]) -> None:
    result, raw_dir = demo
    assert result.exit_code == 0, result.output
    assert "generating the reference demo data" in result.output
    assert (raw_dir / "customers.csv").exists() and (raw_dir / "ground_truth.csv").exists()
    assert "succeeded" in result.output
    assert "1,000 customers" in result.output


def test_demo_labels_agree_with_the_generators_hidden_truth(demo: tuple[Result, Path]) -> None:
    # The dbt labels and the generator implement the same definition independently: the
    # population and every label must agree row for row.
    _, raw_dir = demo
    truth = pd.read_csv(raw_dir / "ground_truth.csv", dtype={"customer_id": str})
    rows = _rows("select customer_id, as_of, churned from marts.training_snapshot")
    snapshot = pd.DataFrame(rows, columns=["customer_id", "as_of", "churned"])
    merged = truth.merge(snapshot, on="customer_id", how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged["churned_x"] == merged["churned_y"]).all()
    assert {str(d) for d in snapshot["as_of"]} == set(truth["as_of"].astype(str))
    assert 0.17 <= snapshot["churned"].mean() <= 0.23


def test_demo_records_metadata_in_the_persistent_instance(demo: tuple[Result, Path]) -> None:
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        snapshot = instance.get_latest_materialization_event(dg.AssetKey("training_snapshot"))
        raw_orders = instance.get_latest_materialization_event(dg.AssetKey("raw_orders"))
    assert snapshot is not None and raw_orders is not None
    meta = snapshot.asset_materialization.metadata  # type: ignore[union-attr]
    rows = _rows("select count(*), avg(churned::float) from marts.training_snapshot")[0]
    assert meta["dagster/row_count"].value == rows[0]
    assert meta["label_rate"].value == pytest.approx(rows[1])
    assert meta["as_of"].value == "2025-10-02"
    assert "days_since_last_order" in meta["preview"].value
    orders_meta = raw_orders.asset_materialization.metadata  # type: ignore[union-attr]
    assert orders_meta["dagster/row_count"].value == _rows("select count(*) from raw.orders")[0][0]


def test_run_on_bad_files_fails_clearly_and_changes_nothing(
    demo: tuple[Result, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, raw_dir = demo
    before = _rows("select * from marts.training_snapshot order by customer_id")
    orders = pd.read_csv(raw_dir / "orders.csv", dtype=str)
    orders.loc[[3, 7], "amount"] = "-1"
    (tmp_path / "bad").mkdir()
    orders.to_csv(tmp_path / "bad" / "orders.csv", index=False)
    (tmp_path / "bad" / "customers.csv").write_bytes((raw_dir / "customers.csv").read_bytes())
    monkeypatch.setenv("CHURN_RAW_DIR", str(tmp_path / "bad"))
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 1
    assert "orders.csv: column 'amount' breaks rule 'amount >= 0' in 2 row(s)" in result.output
    assert "row 4: '-1'" in result.output
    assert _rows("select * from marts.training_snapshot order by customer_id") == before
