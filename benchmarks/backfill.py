"""Backfill cost: every period in one run against one period's build, same data, one process.

Generates the reference data (default 100,000 customers, seed 42, 24 monthly periods), loads
it through the real ingest job into a fresh embedded Postgres, then runs `history_job` (the
staging views, the per-period features, labels and training snapshots, and
current_features; what `churn backfill` runs):

1. for the newest period alone (one partition),
2. for every period in one run (single-run backfill: one dbt invocation),
3. for the newest period alone again (warm, as after the backfill).

The ratio "all periods / one period" is the figure recorded in benchmarks/RESULTS.md.

    python benchmarks/backfill.py --customers 100000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import dagster as dg


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall time of each step of the run, from its start and success events."""
    started: dict[str, float] = {}
    took: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            took[event.step_key] = entry.timestamp - started[event.step_key]
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bfl", dir="/tmp") as tmp:
        home = Path(tmp)
        os.environ.update(
            CHURN_HOME=str(home), CHURN_RAW_DIR=str(home / "raw"), GX_ANALYTICS_ENABLED="false"
        )
        from churn_assets.data.generator import GeneratorConfig, generate, write_raw_files
        from churn_assets.definitions import defs
        from churn_assets.defs.partitions import registered_periods
        from churn_assets.infra import warehouse
        from churn_assets.lib.dbt import churn_dbt_project
        from churn_assets.lib.runs import period_range_tags, run_job
        from churn_assets.settings import load_settings

        settings = load_settings()
        data = generate(GeneratorConfig(n_customers=args.customers, seed=args.seed))
        write_raw_files(data, settings.raw_dir)
        warehouse.start_embedded(settings.embedded_pg_dir)
        project = churn_dbt_project()
        project.preparer.prepare(project)
        try:
            with dg.DagsterInstance.ephemeral() as instance:
                assert run_job(defs(), instance, "ingest_job").success  # registers the periods
                keys = registered_periods(instance)
                runs = [
                    ("newest period, cold", {"dagster/partition": keys[-1]}),
                    (f"all {len(keys)} periods, one run", period_range_tags(keys)),
                    ("newest period, warm", {"dagster/partition": keys[-1]}),
                ]
                print(f"customers: {args.customers:,}; orders: {len(data.orders):,}")
                timings: dict[str, float] = {}
                for name, tags in runs:
                    start = time.perf_counter()
                    result = run_job(defs(), instance, "history_job", tags=tags)
                    wall = time.perf_counter() - start
                    assert result.success, name
                    steps = _step_seconds(instance, result.run_id)
                    timings[name] = wall
                    detail = ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
                    print(f"  {name:<28} {wall:6.1f} s  ({detail})")
                one = timings["newest period, warm"]
                every = timings[f"all {len(keys)} periods, one run"]
                print(f"  ratio all / one (warm): {every / one:.2f}")
        finally:
            warehouse.stop_embedded(settings.embedded_pg_dir)


if __name__ == "__main__":
    main()
