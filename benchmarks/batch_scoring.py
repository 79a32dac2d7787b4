"""Batch scoring throughput for 1M customers: the `churn_scores` path, stage by stage.

Read `marts.current_features` from a real (embedded) Postgres, score with onnxruntime in
100k-row batches, write `scoring.churn_scores` + history in one transaction. The feature
rows are the demo's real features tiled to the requested size with fresh customer ids (the
dbt build of 10M orders is measured elsewhere; this isolates scoring).

    python benchmarks/batch_scoring.py --rows 1000000
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' feature fixture

from churn_assets.data.generator import GeneratorConfig, generate
from churn_assets.infra import warehouse
from churn_assets.ml.bands import RiskBands
from churn_assets.ml.export import OnnxScorer, export_onnx
from churn_assets.ml.features import NUMERIC_FEATURES, split_holdout
from churn_assets.ml.scoring import score_in_batches
from churn_assets.ml.train import train
from churn_assets.policy import load_policy
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from tests.unit._features import training_snapshot

COLUMNS = ["as_of", "customer_id", *NUMERIC_FEATURES, "email_domain_class"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bsc", dir="/tmp") as tmp:
        root = Path(tmp)
        snapshot = training_snapshot(generate(GeneratorConfig()))
        model = train(split_holdout(snapshot)[0]).model
        export_onnx(model, root / "model.onnx")
        url = warehouse.start_embedded(root / "pg")
        try:
            _load_features(url, snapshot, args.rows)
            timings = _score(url, root / "model.onnx")
        finally:
            warehouse.stop_embedded(root / "pg")
    total = sum(timings.values())
    print(f"rows: {args.rows:,}")
    for stage, seconds in timings.items():
        print(f"  {stage:<28} {seconds:7.2f} s  {args.rows / seconds:>12,.0f} rows/s")
    print(f"  {'total':<28} {total:7.2f} s  {args.rows / total:>12,.0f} rows/s")


def _load_features(url: str, snapshot: pd.DataFrame, rows: int) -> None:
    reps = -(-rows // len(snapshot))
    tiled = pd.concat([snapshot] * reps, ignore_index=True).iloc[:rows].copy()
    tiled["customer_id"] = [f"B{i:08d}" for i in range(rows)]
    buffer = io.StringIO()
    tiled[COLUMNS].to_csv(buffer, index=False, header=False)
    buffer.seek(0)
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute("create schema if not exists marts")
        cur.execute(
            "create table marts.current_features (as_of date, customer_id text, "
            + ", ".join(f"{c} double precision" for c in NUMERIC_FEATURES)
            + ", email_domain_class text)"
        )
        cur.copy_expert(
            f"copy marts.current_features ({', '.join(COLUMNS)}) from stdin with (format csv)",
            buffer,
        )


def _score(url: str, onnx_path: Path) -> dict[str, float]:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    features = PostgresWarehouse(url).read_current_features()
    timings["read features (Postgres)"] = time.perf_counter() - start

    start = time.perf_counter()
    probabilities = score_in_batches(OnnxScorer(onnx_path), features)
    timings["score (onnxruntime)"] = time.perf_counter() - start

    start = time.perf_counter()
    scores = features[["customer_id"]].assign(
        churn_probability=probabilities.astype(np.float64),
        risk_band=RiskBands.from_policy(load_policy()).bands(probabilities),
        model_name="churn-model",
        model_version="1",
        model_sha256="0" * 64,
        feature_as_of=features["as_of"].astype(str),
        scored_at=datetime.now(UTC).isoformat(),
        dagster_run_id="benchmark",
    )
    timings["build rows + risk bands"] = time.perf_counter() - start

    start = time.perf_counter()
    PostgresWarehouse(url).write_scores(scores)
    timings["write scores + history (txn)"] = time.perf_counter() - start
    return timings


if __name__ == "__main__":
    main()
