"""A month's delivery against one period's whole graph at scale (default 1M customers,
~10M orders), stage by stage.

In a fresh CHURN_HOME with the embedded Postgres and a local MLflow store:

1. generate the reference data at the requested size and write it as a monthly feed would
   have delivered it (``scenarios.write_month``): the history to the month end before the
   last one, and the history to the last month end (not timed in the graph figures);
2. **history**: `churn_pipeline` over every period of the first file in one run (what the
   first `churn run` does: load, every period's features/labels/snapshots, train, export,
   register, backtest, the promotion decision, the newest period's scores, drift, analyst
   tables);
3. **month**: the next month's file, as `churn run` runs it: the per-period digests of the
   files and the periods they can change (``periods_to_rebuild_for_files``), then
   `churn_pipeline` over those periods, to fresh scores;
4. **one period**: the same file again, `churn_pipeline` for the newest period alone (the
   other periods are built), with the same decision and scores.

Steps 2-4 each run in a process of their own, as each monthly `churn run` (or each run the
daemon launches) does, so each peak memory is that run's own. Steps are timed from the
instance's event log; peak memory is the phase process's max RSS and its largest child's
(dbt runs as a child process; the Postgres server is not counted).

    python benchmarks/scale.py --customers 1000000 [--skip-backtest] [--engine spark]

``--engine spark`` runs the same phases with ``CHURN_ENGINE=spark`` on ``local[2]`` (the
machine's two cores; ``--spark-master`` to change it): dbt-spark in each dbt step, the Python
steps in the run's own SparkSession, Parquet tables under the home. A JVM's memory is counted
when its process has ended (the run's stops with the run; each dbt step's with the step).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backfill import _step_seconds  # the same step timing

_PHASES = ("history", "month", "period")


def _peak_gb() -> tuple[float, float]:
    """Max RSS of this process, and of the largest finished child (the generator, dbt)."""
    kib = 1024 * 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib
    return own, children


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--skip-backtest", action="store_true", help="leave the backtest out of the runs"
    )
    parser.add_argument("--engine", choices=("postgres", "spark"), default="postgres")
    parser.add_argument("--spark-master", default="local[2]")
    # a child's job
    parser.add_argument("--phase", choices=(*_PHASES, "generate"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "generate":
        _write_feed(args.customers, args.seed)
        return
    if args.phase:
        _phase(args.phase, args.skip_backtest)
        return
    with tempfile.TemporaryDirectory(prefix="scl", dir="/tmp") as tmp:
        home = Path(tmp)
        os.environ.update(
            CHURN_HOME=str(home), CHURN_RAW_DIR=str(home / "raw"), GX_ANALYTICS_ENABLED="false"
        )
        if args.engine == "spark":  # the children inherit it
            os.environ.update(CHURN_ENGINE="spark", CHURN_SPARK_MASTER=args.spark_master)
        print(
            f"engine: {args.engine}" + (f" ({args.spark_master})" if args.engine == "spark" else "")
        )
        from churn_assets.infra import warehouse
        from churn_assets.settings import load_settings

        settings = load_settings()
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--phase", "generate", "--customers",
             str(args.customers), "--seed", str(args.seed)],
            check=True,
        )  # fmt: skip
        print(
            f"customers: {args.customers:,}; generated and written in "
            f"{time.perf_counter() - start:.1f} s (in a child process)"
        )
        if args.engine == "postgres":  # Spark's phases start their metastore service
            warehouse.start_embedded(settings.embedded_pg_dir)
        try:
            for phase in _PHASES:
                extra = ["--skip-backtest"] if args.skip_backtest else []
                command = [sys.executable, __file__, "--phase", phase, *extra]
                raw = home / ("first" if phase == "history" else "next")
                subprocess.run(command, check=True, env={**os.environ, "CHURN_RAW_DIR": str(raw)})
        finally:
            from churn_assets.tables.engines import stop_services

            stop_services(load_settings())  # the embedded Postgres, Spark's metastore service


def _write_feed(customers: int, seed: int) -> None:
    """The history to the month end before the last one (``first``) and to the last one
    (``next``), parquet, in CHURN_HOME."""
    from churn_assets.data.generator import GeneratorConfig, generate
    from churn_assets.data.scenarios import write_month
    from churn_assets.periods import Period, period_end, period_start
    from churn_assets.settings import load_settings

    home = load_settings().home
    data = generate(GeneratorConfig(n_customers=customers, seed=seed))
    end = data.config.end_date
    last = period_end(end, Period.MONTH)
    if last > end:  # the generated history stops inside its last month
        last = period_start(last, Period.MONTH) - timedelta(days=1)
    first = period_start(last, Period.MONTH) - timedelta(days=1)
    for name, month_end in (("first", first), ("next", last)):
        write_month(data, month_end, home / name, "parquet")
        print(f"  {name}: the history to {month_end.isoformat()}")


def _phase(phase: str, skip_backtest: bool) -> None:
    """One run of the whole graph (promotion and scoring included), in this (fresh) process."""
    from churn_assets.app.cli import _instance
    from churn_assets.definitions import defs
    from churn_assets.defs.partitions import periods_in_files, register_periods
    from churn_assets.defs.rebuild import periods_to_rebuild_for_files
    from churn_assets.lib.dbt import churn_dbt_project
    from churn_assets.lib.report import promotion_lines
    from churn_assets.lib.runs import period_range_tags, run_job
    from churn_assets.settings import load_settings

    settings = load_settings()
    project = churn_dbt_project()
    project.preparer.prepare(project)
    selection = None
    with _instance(settings) as instance:
        keys = periods_in_files(settings.raw_dir, settings.period) or []
        register_periods(instance, keys)
        if skip_backtest:
            job = defs().resolve_job_def("churn_pipeline")
            selection = {k for k in job.asset_layer.selected_asset_keys if k.path != ["backtest"]}
        total = time.perf_counter()
        if phase == "history":
            name, tags = f"history: all {len(keys)} periods", period_range_tags(keys)
        elif phase == "month":
            # What churn run does before its run: the files' digests against the last
            # load's, and the periods they can change.
            rebuild = periods_to_rebuild_for_files(instance, settings, keys)
            planned = time.perf_counter() - total
            print(f"month: digests and plan {planned:.1f} s: {len(rebuild)} of {len(keys)} "
                  f"periods, {rebuild[0]} .. {rebuild[-1]}")  # fmt: skip
            name = f"month: {len(rebuild)} periods (of {len(keys)})"
            tags = period_range_tags(rebuild)
        else:
            name, tags = "one period (the newest)", {"dagster/partition": keys[-1]}
        result = _run(run_job, instance, tags, selection)
        assert result.success, name
        steps = _step_seconds(instance, result.run_id)
        promoted = list(promotion_lines(result))
        wall = time.perf_counter() - total
        print(f"{name}: {wall:.1f} s wall (one run: pipeline, promotion, scoring)")
        for step, seconds in steps.items():
            print(f"  {step:<40} {seconds:7.1f} s")
        print(f"  {promoted}")
        own, children = _peak_gb()
        print(f"  peak RSS of this run's process: {own:.2f} GB, {children:.2f} GB "
              "(largest child)")  # fmt: skip
        print("  " + json.dumps({"phase": phase, "wall": round(wall, 1), "steps": steps}))


def _run(run_job, instance, tags, selection):  # type: ignore[no-untyped-def]
    from churn_assets.definitions import defs

    if selection is None:
        return run_job(defs(), instance, "churn_pipeline", tags=tags)

    job = defs().resolve_job_def("churn_pipeline")
    return job.execute_in_process(
        instance=instance,
        tags=tags,
        asset_selection=list(selection),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )


if __name__ == "__main__":
    main()
