"""``churn status`` on a big online prediction log, and pruning it (issue 24).

Why: ``scoring.online_predictions`` grew without bound and ``churn status --json`` read all
of it (521k rows, 185 MB: 11 s). This fills the log of a fresh database on an embedded
server with ``--rows`` rows (default 1,000,000, every one with a shadow result: the worst
case for the shadow comparison), then times

* ``status_report()`` in process (``--repeat`` times; the median and the best), and the
  shadow comparison alone,
* ``churn status --json`` as a subprocess (the whole command, interpreter start and
  imports included: the same on an empty log is timed first, as the command's floor),
* the retention's pruning, when this code has it: the rows are spread evenly over
  ``--days`` days (default 240), so with the default retention
  (``CHURN_PREDICTION_LOG_RETENTION_DAYS``, 180) a quarter of them are older than it,
* ``status`` again after the pruning, and
* what the log's writer pays per 500-row COPY (its batch) into the big log: with this
  code's indexes (none before the retention, ``scored_at`` since).

Rows look like the scorer's (uuid request ids, sha256 hex hashes: ~350 bytes a row, as
in the issue's log). Two (champion, challenger) pairs, one after the other; 10 % of the rows
were answered by the canary. No MLflow store exists under the benchmark's ``CHURN_HOME``,
so the registry part of the report answers at once: what is timed is the warehouse part.

    python benchmarks/prediction_log.py                    # 1,000,000 rows over 240 days
    python benchmarks/prediction_log.py --rows 521000 --days 60

To time older code with this script, put its tree first on the path:
``git archive <commit> churn_assets dbt_project | tar -x -C /tmp/old`` and
``PYTHONPATH=/tmp/old python benchmarks/prediction_log.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2

from churn_assets.app.status import shadow, status_report
from churn_assets.infra import warehouse
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.settings import load_settings
from churn_assets.tables.online_predictions import COLUMNS
from churn_assets.tables.postgres import online_predictions

CHUNK = 100_000


def _chunk(rng: np.random.Generator, start: int, rows: int, total: int, days: float) -> str:
    """``rows`` log rows as COPY text; row ``i`` of ``total`` scored ``i / total`` of the
    way through the last ``days`` days."""
    index = np.arange(start, start + rows)
    now = datetime.now(UTC)
    ages = (1.0 - index / total) * days * 86_400.0  # oldest first
    scored_at = pd.to_datetime(now.timestamp() - ages, unit="s", utc=True)
    first_pair = index < total // 2
    canary = rng.random(rows) < 0.10
    champion = np.where(first_pair, "3", "4")
    challenger = np.where(first_pair, "4", "5")
    p_champion = rng.random(rows)
    p_challenger = np.clip(p_champion + rng.normal(0.0, 0.05, rows), 0.0, 1.0)

    def band(p: np.ndarray) -> np.ndarray:
        return np.where(p >= 0.6, "high", np.where(p >= 0.3, "medium", "low"))

    hexes = np.array([f"{h:064x}" for h in rng.integers(0, 2**62, rows)])
    frame = pd.DataFrame(
        {
            "request_id": [f"{i:08x}-0000-4000-8000-{i:012x}" for i in index],
            "scored_at": scored_at.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
            "customer_id": [f"c{i % 100_000:06d}" for i in index],
            "input_hash": hexes,
            "features_as_of": "2025-10-31",
            "model_name": "churn-model",
            "model_version": np.where(canary, challenger, champion),
            "model_sha256": hexes,
            "churn_probability": np.where(canary, p_challenger, p_champion),
            "risk_band": band(np.where(canary, p_challenger, p_champion)),
            "latency_ms": rng.random(rows) * 3.0,
            "served_by": np.where(canary, "canary", "champion"),
            "shadow_model_version": np.where(canary, champion, challenger),
            "shadow_model_sha256": hexes,
            "shadow_probability": np.where(canary, p_champion, p_challenger),
            "shadow_risk_band": band(np.where(canary, p_champion, p_challenger)),
            "batch_item": "\\N",
        },
        columns=list(online_predictions.COLUMNS),
    )
    return frame.to_csv(sep="\t", header=False, index=False, float_format="%.17g")


def fill(url: str, rows: int, days: float) -> float:
    """Create the log and COPY ``rows`` rows into it; returns the seconds it took."""
    rng = np.random.default_rng(24)
    started = time.perf_counter()
    with warehouse.connect(url) as conn:
        online_predictions.create_table(conn)
        with conn.cursor() as cur:
            columns = ", ".join(COLUMNS)
            for start in range(0, rows, CHUNK):
                text = _chunk(rng, start, min(CHUNK, rows - start), rows, days)
                cur.copy_expert(
                    f"copy {ONLINE_PREDICTIONS_TABLE} ({columns}) from stdin", io.StringIO(text)
                )
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True  # VACUUM runs outside a transaction
        with conn.cursor() as cur:
            cur.execute(f"vacuum analyze {ONLINE_PREDICTIONS_TABLE}")  # as autovacuum would
    finally:
        conn.close()
    return time.perf_counter() - started


def table_facts(url: str) -> tuple[int, float]:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            f"select count(*), pg_total_relation_size(%s) from {ONLINE_PREDICTIONS_TABLE}",
            (ONLINE_PREDICTIONS_TABLE,),
        )
        count, size = cur.fetchone()
    return int(count), size / 1e6


def time_status(repeat: int) -> dict[str, float]:
    settings = load_settings()
    status_report(settings)  # untimed: the first call pays the imports (mlflow: ~1.2 s)
    report_s, shadow_s = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        report = status_report(settings)
        report_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        shadow(settings)
        shadow_s.append(time.perf_counter() - started)
    command_s = []
    churn = Path(sys.executable).with_name("churn")
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run(
            [str(churn), "status", "--json"], check=True, capture_output=True, text=True
        )
        command_s.append(time.perf_counter() - started)
    assert '"shadow"' in out.stdout
    print(f"  shadow rows {report['shadow']['rows']:,}: {report['shadow']['summary']}")
    return {
        "status_report median": statistics.median(report_s),
        "status_report best": min(report_s),
        "shadow() median": statistics.median(shadow_s),
        "churn status --json median": statistics.median(command_s),
        "churn status --json best": min(command_s),
    }


def time_copy(url: str, batches: int = 100, rows: int = 500) -> dict[str, float]:
    """The writer's batch: ``batches`` COPYs of ``rows`` fresh rows, one transaction each,
    on a connection like the writer's (synchronous_commit off)."""
    rng = np.random.default_rng(7)
    lines = _chunk(rng, 0, batches * rows, batches * rows, 0.001).splitlines(keepends=True)
    lines = [f"copy-{line}" for line in lines]  # request ids of their own
    columns = ", ".join(online_predictions.COLUMNS)
    copy = f"copy {ONLINE_PREDICTIONS_TABLE} ({columns}) from stdin"
    conn = psycopg2.connect(url, options="-c synchronous_commit=off")
    seconds = []
    try:
        for start in range(0, len(lines), rows):
            text = "".join(lines[start : start + rows])
            started = time.perf_counter()
            with conn, conn.cursor() as cur:
                cur.copy_expert(copy, io.StringIO(text))
            seconds.append(time.perf_counter() - started)
    finally:
        conn.close()
    return {"COPY median": statistics.median(seconds), "COPY p90": float(np.quantile(seconds, 0.9))}


def _print(label: str, timings: Callable[[], dict[str, float]]) -> None:
    print(label)
    for name, seconds in timings().items():
        if name.startswith("COPY"):
            print(f"    {name:<28} {seconds * 1000:7.2f} ms")
        else:
            print(f"    {name:<28} {seconds:7.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=240.0, help="age of the oldest row")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plog", dir="/tmp") as tmp:
        home = Path(tmp)
        os.environ["CHURN_HOME"] = str(home)
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        admin = warehouse.start_embedded(home / "pg")
        try:
            params = warehouse.parse_url(admin)
            warehouse.ensure_database(admin, "prediction_log_bench")
            url = (
                f"postgresql://{params.user}@/prediction_log_bench"
                f"?host={params.host}&port={params.port}"
            )
            os.environ["CHURN_WAREHOUSE_URL"] = url
            with warehouse.connect(url) as conn:
                online_predictions.create_table(conn)
            _print("status, empty log (the command's floor):", lambda: time_status(args.repeat))
            seconds = fill(url, args.rows, args.days)
            count, size = table_facts(url)
            print(f"log: {count:,} rows over {args.days:g} days, {size:.0f} MB ({seconds:.1f} s)")
            _print("status, full log:", lambda: time_status(args.repeat))
            prune = getattr(online_predictions, "prune", None)
            if prune is None:
                print("(no retention in this code: nothing pruned)")
            else:
                from churn_assets.policy import load_policy

                days = load_policy().prediction_log_retention_days
                cutoff = datetime.now(UTC) - timedelta(days=days)
                started = time.perf_counter()
                with warehouse.connect(url) as conn:
                    deleted = prune(conn, cutoff)
                pruned_s = time.perf_counter() - started
                started = time.perf_counter()
                with warehouse.connect(url) as conn:
                    prune(conn, cutoff)
                again_s = time.perf_counter() - started
                count, size = table_facts(url)
                print(
                    f"pruned {deleted:,} rows older than {days} days in {pruned_s:.2f} s "
                    f"(a second pass, nothing to delete: {again_s * 1000:.1f} ms): "
                    f"{count:,} rows left, {size:.0f} MB"
                )
                _print("status, after pruning:", lambda: time_status(args.repeat))
            _print("writer's COPY into the big log (per 500-row batch):", lambda: time_copy(url))
        finally:
            warehouse.stop_embedded(home / "pg")


if __name__ == "__main__":
    main()
