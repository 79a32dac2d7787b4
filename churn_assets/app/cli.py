"""``churn``: generate data, run the asset graph, open the UI, reach the warehouse.

Heavy imports (Dagster, dbt, pandas) happen inside the commands that need them, so
``churn warehouse-url`` answers in well under a second.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from churn_assets.limits import DEFAULT_HEADER_TIMEOUT_SECONDS
from churn_assets.settings import (
    PROJECT_ROOT,
    Engine,
    RawSource,
    Settings,
    SettingsError,
    load_settings,
)

if TYPE_CHECKING:
    from dagster import DagsterInstance, ExecuteInProcessResult


def _settings() -> Settings:
    """The settings, and the policy checked with them: a bad value of either ends the
    command at once, in one line, before Dagster loads code that reads it."""
    from churn_assets.policy import PolicyError, load_policy

    try:
        load_policy()
        return load_settings()
    except (SettingsError, PolicyError) as exc:
        raise click.ClickException(str(exc)) from exc


class _OneLineErrors(click.Group):
    """Known environment problems end as one ``Error:`` line saying what to do, not a
    traceback. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from churn_assets.infra.warehouse import WarehouseError

        try:
            return super().invoke(ctx)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            raise click.ClickException(
                f"cannot write or read{where}: {exc.strerror or exc}. CHURN_HOME must be a "
                "writable directory (set CHURN_HOME to one, e.g. CHURN_HOME=$PWD/.churn)."
            ) from exc
        except WarehouseError as exc:
            raise click.ClickException(str(exc)) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # already what the command means to say
        except Exception as exc:
            # A full disk surfaces anywhere, e.g. as SQLite's "disk I/O error" from Dagster's
            # own storage under CHURN_HOME: one line naming it, not a traceback from there.
            from churn_assets.lib.report import disk_full_line

            full = disk_full_line(str(exc), load_settings().home)
            if full is None:
                raise
            first = next(iter(str(exc).strip().splitlines()), type(exc).__name__)
            raise click.ClickException(f"{first}\n{full}") from exc


@click.group(cls=_OneLineErrors)
def main() -> None:
    """Churn prediction on Dagster: dbt features -> gated model -> ONNX -> champion."""
    # MLflow's per-download progress bars would interleave with the run logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@main.command()
@click.option("--customers", "n_customers", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=42, show_default=True, type=int)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory [default: CHURN_RAW_DIR, or <CHURN_HOME>/raw].",
)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True
)
@click.option(
    "--end-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Last day of the generated history [default: 2025-12-29].",
)
@click.option(
    "--profile",
    "profile_name",
    type=click.Choice(["subscription", "retail"]),
    default="subscription",
    show_default=True,
    help="subscription: regular buyers, 20% churn; retail: most customers order once, ~75% "
    "churn in 90 days.",
)
def generate(
    n_customers: int,
    seed: int,
    out_dir: Path | None,
    fmt: str,
    end_date: datetime | None,
    profile_name: str,
) -> None:
    """Write synthetic customers, orders and ground truth per the raw-data contract."""
    from churn_assets.data.generator import PROFILES, generate, write_raw_files

    target = out_dir or _settings().raw_dir
    config = dataclasses.replace(PROFILES[profile_name], n_customers=n_customers, seed=seed)
    if end_date is not None:
        config = dataclasses.replace(config, end_date=end_date.date())
    data = generate(config)
    paths = write_raw_files(data, target, fmt=fmt)  # type: ignore[arg-type]
    churn_rate = data.ground_truth["churned"].mean()
    click.echo(
        f"wrote {len(data.customers):,} customers and {len(data.orders):,} orders to {target} "
        f"(training as_of {config.as_of}, churn rate {churn_rate:.1%})"
    )
    for path in paths:
        click.echo(f"  {path}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON object.")
def profile(as_json: bool) -> None:
    """Check CHURN_RAW_DIR against the contract and describe it before the first run:
    volumes, dates, repeat buyers, a suggested label window and the label rate it gives.

    JSON keys: customers, orders, first_order_at, last_order_at, repeat_customer_share,
    median_days_between_orders, suggested_window_days, window_reasoning, suggested_as_of,
    labelled_customers_at_suggested_as_of, label_rate_at_suggested_as_of, warnings.
    """
    import json

    from churn_assets.data.contract import RawDataContractError, read_raw_tables
    from churn_assets.data.profile import profile_raw_tables
    from churn_assets.policy import PolicyError, load_policy

    settings = _settings()
    try:
        tables = read_raw_tables(settings.raw_dir)
        report = profile_raw_tables(tables, load_policy())
    except (RawDataContractError, PolicyError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    rate = report.label_rate_at_suggested_as_of
    repeat = report.repeat_customer_share
    click.echo(f"raw data in {settings.raw_dir}: contract OK")
    click.echo(f"  customers:      {report.customers:,}")
    click.echo(f"  orders:         {report.orders:,}")
    click.echo(f"  orders from:    {report.first_order_at} to {report.last_order_at}")
    click.echo(
        "  repeat buyers:  " + (f"{repeat:.1%} ordered more than once" if repeat else "none")
    )
    gap = report.median_days_between_orders
    click.echo(
        "  median gap:     "
        + (f"{gap} days between orders" if gap is not None else "n/a (nobody ordered twice)")
    )
    click.echo(f"  label window:   {report.suggested_window_days} days suggested")
    click.echo(f"                  ({report.window_reasoning})")
    click.echo(
        f"  training as_of: {report.suggested_as_of}: "
        f"{report.labelled_customers_at_suggested_as_of:,} labelled customers"
        + (f", label rate {rate:.1%}" if rate is not None else "")
    )
    click.echo(
        f"  to use it:      CHURN_WINDOW_DAYS={report.suggested_window_days} churn run"
        f"   (now: {settings.window_days})"
    )
    click.echo(f"  periods:        {_periods_line(report, settings)}")
    for warning in report.warnings:
        click.echo(f"  warning: {warning}")


def _periods_line(report: Any, settings: Settings) -> str:
    """What the partitions will be: the data's whole periods, the labelled ones with the
    suggested window, and the out-of-time holdout the first run will use."""
    from churn_assets import periods
    from churn_assets.policy import load_policy

    if report.first_order_at is None:
        return "none (no orders)"
    first, last = (
        date.fromisoformat(report.first_order_at),
        date.fromisoformat(report.last_order_at),
    )
    ends = periods.period_ends(first, last, settings.period)
    if not ends:
        return f"none: the orders do not cover one whole {settings.period} (CHURN_PERIOD)"
    window = report.suggested_window_days
    labelled = periods.labelled_periods(ends, last, window)
    line = (
        f"{len(ends)} {settings.period}s, {ends[0]} .. {ends[-1]}; {len(labelled)} labelled "
        f"with a {window}-day window"
    )
    if not labelled:
        return line
    chosen = periods.choose_training_periods(
        labelled, count=load_policy().training_periods, window_days=window
    )
    return f"{line}; {chosen.note}"


@main.command()
def run() -> None:
    """Materialise the whole graph of the raw data in one run: load, the features and labels
    of the periods the files can change (every period the first time), training and its
    gates, the registered version, the promotion decision, the newest period's scores, the
    drift monitor, realized performance, analyst tables."""
    settings = _settings()
    _run_whole_graph(settings)


@main.command()
@click.option(
    "--from", "start", type=click.DateTime(formats=["%Y-%m-%d"]), help="First period end."
)
@click.option("--to", "end", type=click.DateTime(formats=["%Y-%m-%d"]), help="Last period end.")
def backfill(start: datetime | None, end: datetime | None) -> None:
    """Rebuild the features, labels and training snapshots of every period (or those from
    --from to --to) from the loaded raw tables: one run, one dbt invocation."""
    from churn_assets.definitions import defs
    from churn_assets.defs.partitions import registered_periods
    from churn_assets.lib.report import period_summary
    from churn_assets.lib.runs import period_range_tags, run_job

    settings = _settings()
    _warm_up(settings)
    with _instance(settings) as instance:
        keys = [
            key
            for key in registered_periods(instance)
            if (start is None or key >= start.date().isoformat())
            and (end is None or key <= end.date().isoformat())
        ]
        if not keys:
            raise click.ClickException(
                "no period to build: load raw data first (churn run), or widen --from/--to"
                if registered_periods(instance)
                else "no periods registered yet: load raw data first with churn run"
            )
        click.echo(f"backfill: {len(keys)} period(s) {keys[0]} .. {keys[-1]} in one run")
        result = run_job(defs(), instance, "history_job", tags=period_range_tags(keys))
        _report(result, settings, instance)
        for line in period_summary(result):
            click.echo(f"  {line}")


@main.command()
@click.option(
    "--scenario",
    type=click.Choice(["baseline", "drift"]),
    default="baseline",
    show_default=True,
    help="drift: a monthly feed (under <CHURN_HOME>/scenario, not CHURN_RAW_DIR) whose "
    "customers change how they churn; the platform loads each month, notices, retrains and "
    "promotes by itself.",
)
@click.option(
    "--deliver",
    "deliveries",
    multiple=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="drift only: the month ends the feed delivers (repeat the option), each file with "
    "all history to its date; default every month end of the story. A shorter story that "
    "still retrains, promotes and judges matured scores: --deliver 2025-12-31 --deliver "
    "2026-03-31.",
)
def demo(scenario: str, deliveries: tuple[datetime, ...]) -> None:
    """Generate data if CHURN_RAW_DIR holds none, then run the whole graph and summarise."""
    settings = _settings()
    if deliveries and scenario != "drift":
        raise click.UsageError("--deliver applies to --scenario drift only")
    if scenario == "drift":
        from churn_assets.data.scenarios import story_deliveries

        try:  # checked before anything starts
            months = story_deliveries([d.date() for d in deliveries])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--deliver") from exc
        _drift_story(settings, months)
        return
    from churn_assets.data.contract import has_raw_files

    if not has_raw_files(settings.raw_dir):
        click.echo(f"no raw files in {settings.raw_dir}: generating the reference demo data")
        click.get_current_context().invoke(generate)
    else:
        click.echo(f"using the raw files in {settings.raw_dir}")
    _run_whole_graph(settings)


def _drift_story(settings: Settings, deliveries: list[date]) -> None:
    """The monthly feed story under a real ``dagster-daemon`` on CHURN_HOME's instance; its
    files go to <CHURN_HOME>/scenario/feed, not CHURN_RAW_DIR."""
    from dagster import DagsterRunStatus

    from churn_assets.app.status import describe_model
    from churn_assets.app.story import SENSOR_INTERVAL_SECONDS, monthly_story
    from churn_assets.definitions import defs
    from churn_assets.lib.daemon import running_daemon
    from churn_assets.policy import env_name

    feed = settings.home / "scenario" / "feed"
    dagster_home = _ensure_dagster_home(settings)
    _warm_up(settings)
    # The daemon's code reads these; months pass in seconds here, so no retraining cooldown
    # and sensors that look every few seconds.
    daemon_env = {
        "CHURN_HOME": str(settings.home),
        "CHURN_RAW_DIR": str(feed),
        env_name("retrain_cooldown_seconds"): "0",
        "CHURN_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_SECONDS),
    }
    sensors = [sensor.name for sensor in defs().sensors or ()]
    log = settings.home / "scenario" / "daemon.log"
    click.echo(f"starting dagster-daemon on {dagster_home} (its log: {log})")
    with (
        running_daemon(
            dagster_home,
            PROJECT_ROOT / "workspace.yaml",
            daemon_env,
            log,
            loop_interval_seconds=1,  # the loops look every second; sensors tick every 2 s
        ) as daemon,
        _instance(settings) as instance,
    ):
        story = monthly_story(instance, daemon, sensors, feed, click.echo, deliveries)
    click.echo(f"dagster-daemon (pid {daemon.process.pid}) stopped")
    status = _status(settings)
    by_hand = f"{len(story.by_hand)} launched by hand" if story.by_hand else "none launched by hand"
    click.echo(f"\n{len(story.months)} deliveries, {len(story.runs)} runs, {by_hand}")
    for line in story.promotions:
        click.echo(line)
    click.echo(f"latest:   {describe_model(status['latest_model'])}")
    click.echo(f"champion: {describe_model(status['champion'])}")
    realized = status.get("realized") or []
    click.echo(f"realized: {len(realized)} (version, period) pair(s) judged on matured labels")
    failed = [run for run in story.runs if run.status != DagsterRunStatus.SUCCESS]
    if failed:
        names = ", ".join(f"{run.job_name} {run.run_id[:8]}" for run in failed)
        raise click.ClickException(f"{len(failed)} run(s) did not succeed: {names}")


def _run_whole_graph(settings: Settings) -> None:
    """A person's run: ``churn_pipeline`` over the periods of the files that loading them
    can change (all of them the first time), one run, then its summary."""
    from churn_assets import periods
    from churn_assets.definitions import defs
    from churn_assets.defs.partitions import register_periods
    from churn_assets.defs.rebuild import periods_to_rebuild_for_files
    from churn_assets.lib.runs import period_range_tags, run_job

    # What the files' dates allow is known before anything starts: a delivery that covers
    # no whole period, or a window that labels none, stops here in one line, with the
    # warehouse untouched (the ingest step refuses the first again, for runs from the UI).
    span, where = _order_span(settings)
    if span is not None:
        try:
            periods.trainable_periods(*span, settings.period, settings.window_days, settings.as_of)
        except periods.PeriodError as exc:
            raise click.ClickException(f"{where}: {exc}") from exc
    _warm_up(settings)
    definitions = defs()
    with _instance(settings) as instance:
        if span is None:
            # Unreadable files: the ingest step names every contract violation.
            _raise_if_failed(run_job(definitions, instance, "ingest_job"), instance)
            raise click.ClickException(f"the orders in {where} have no order dates")
        keys = [periods.as_key(end) for end in periods.period_ends(*span, settings.period)]
        register_periods(instance, keys)
        # The periods loading these files can change (the rule the run's own load records).
        # From tables: every period (no per-period digests of tables yet, as in the load).
        from_tables = settings.raw_source is RawSource.TABLES
        rebuild = keys if from_tables else periods_to_rebuild_for_files(instance, settings, keys)
        result = run_job(definitions, instance, "churn_pipeline", tags=period_range_tags(rebuild))
        _raise_if_failed(result, instance)
    _summarise(result, settings)


def _order_span(settings: Settings) -> tuple[tuple[date, date] | None, str]:
    """The first and last order date of the raw data and where it is: the orders file, or
    with ``CHURN_RAW_SOURCE=tables`` the source tables, checked against the contract in the
    warehouse (``None`` when they break it: the ingest step then names every violation)."""
    from churn_assets.defs.partitions import order_span_in_files
    from churn_assets.tables.engines import open_warehouse
    from churn_assets.tables.source import SourceTables

    if settings.raw_source is not RawSource.TABLES:
        return order_span_in_files(settings.raw_dir), str(settings.raw_dir)
    try:
        source = SourceTables(*settings.source_tables())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    check = open_warehouse(settings).check_source(source)
    first, last = check.first_order_on, check.last_order_on
    span = (first, last) if first is not None and last is not None else None
    return span, source.orders


def _summarise(result: ExecuteInProcessResult, settings: Settings) -> None:
    from churn_assets.app.status import describe_model
    from churn_assets.lib import report

    for line in report.run_summary(result):
        click.echo(line)
    if settings.engine is not Engine.SPARK:  # Spark's tables have no psql
        click.echo(
            '  query in SQL:  psql "$(churn warehouse-url)"'
            " -c 'select * from marts.training_snapshot limit 5'"
        )
    for line in report.check_warnings(result):
        click.echo(f"  {line}")
    version = report.registered_version(result)
    if version is not None:
        click.echo(f"  model:     {_describe_registered(settings, version)}")
    for line in report.promotion_lines(result):
        click.echo(f"  {line}")
    champion = _status(settings, models_only=True)["champion"]
    click.echo(f"  champion:  {describe_model(champion)}")
    scores = report.scores_summary(result)
    if scores is not None:
        click.echo(f"  scores:    {scores}")
        if settings.engine is Engine.SPARK:
            click.echo("  analysts:  analytics.churn_risk_by_segment in the Spark catalog")
        else:
            click.echo(
                '  analysts:  psql "$(churn warehouse-url)" -c '
                "'select * from analytics.churn_risk_by_segment'"
            )
    click.echo("  status:    churn status --json")


@main.command()
@click.option("--port", default=3000, show_default=True, type=int)
def dev(port: int) -> None:
    """Open the Dagster UI (webserver + daemon) with the same settings as `churn run`."""
    settings = _settings()
    dagster_home = _ensure_dagster_home(settings)
    _warm_up(settings)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "CHURN_HOME": str(settings.home)}
    dagster = shutil.which("dagster") or "dagster"
    args = [dagster, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-p", str(port)]
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={dagster_home})")
    # Run from DAGSTER_HOME: started in the repo root, dagster would warn that the root's
    # dagster.yaml (the template copied above) is not the one in use.
    os.chdir(dagster_home)
    os.execvpe(args[0], args, env)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON object.")
def status(as_json: bool) -> None:
    """Show the latest registered model and the champion (from the MLflow registry).

    JSON: {"tracking_uri" (password masked), "model_name", "latest_model", "champion",
    "champion_history", "realized", "shadow"}; each model
    is null or {"version", "metrics": {"auc" (out of time), "in_time_auc", "pr_auc", "brier",
    "log_loss", "f1", "threshold", "reference_auc", "btyd_auc", "top_decile_gain", "ece"},
    "holdout_as_of",
    "training_periods", "data_through", "backtest": null or [{"as_of", "rows", "label_rate",
    "auc", "brier", "reference_auc"}], "oracle_auc", "onnx_parity_max_abs_diff",
    "onnx_sha256", "data_as_of", "trained_at", "dagster_run_id", "mlflow_run_id", "gates",
    "promotion": null or {"decision", "reason", "compared_with"}}. "realized" lists
    {"model_version", "as_of", "rows", "auc", "brier"} per scored period whose labels matured
    (null when the warehouse cannot be reached). "shadow" is the online scorer's shadow
    comparison, computed now from its prediction log (the rows of the last
    CHURN_PREDICTION_LOG_RETENTION_DAYS days, aggregated by Postgres): {"rows" (shadow
    results in all),
    "pairs": [{"champion_version", "challenger_version", "rows", "band_agreement",
    "mean_abs_diff", "rank_correlation", "first_scored_at", "last_scored_at"}] (newest pair
    last), "summary" (the newest pair in words)} (null when the warehouse cannot be reached).
    "champion_history" lists every champion, oldest first: {"version", "since", "until"
    (null: champion now), "replaced" (the version it replaced, or null), "reason"}.
    """
    import json

    from churn_assets.app.status import describe_model

    report = _status(_settings())
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"registry: {report['model_name']} at {report['tracking_uri']}")
    for label in ("latest_model", "champion"):
        click.echo(f"{label}: {describe_model(report[label])}")
    for reign in report["champion_history"]:
        until = reign["until"] or "now"
        click.echo(f"  v{reign['version']} champion {reign['since']} .. {until}: {reign['reason']}")
    shadow = report["shadow"]
    click.echo(f"shadow: {shadow['summary'] if shadow else 'warehouse unreachable'}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--api-key-env",
    default="CHURN_API_KEY",
    show_default=True,
    help="Environment variable holding the API key; unset means no key is required.",
)
@click.option("--poll-seconds", default=5.0, show_default=True, type=float)
@click.option(
    "--wait-for-champion",
    is_flag=True,
    help="Start even when nothing is promoted yet (/health answers 503 until then).",
)
@click.option(
    "--header-timeout",
    default=DEFAULT_HEADER_TIMEOUT_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Close a connection that has not sent a complete request line and headers this "
    "long after it opened or after its last response (an idle or half-sent connection "
    "would hold a socket for good; uvicorn's own keep-alive timeout, 5 s, only covers "
    "silence after a response).",
)
def serve(
    host: str,
    port: int,
    api_key_env: str,
    poll_seconds: float,
    wait_for_champion: bool,
    header_timeout: float,
) -> None:
    """Serve the champion over HTTP (POST /predict, /predict/batch, GET /health, /model);
    follows the MLflow `champion` alias, and answers requests by id from an in-memory copy
    of marts.current_features that follows the table, both without a restart."""
    from churn_assets.serving.server import ServingError
    from churn_assets.serving.server import serve as run_server

    try:
        run_server(
            host=host,
            port=port,
            api_key=os.environ.get(api_key_env) or None,
            poll_seconds=poll_seconds,
            wait_for_champion=wait_for_champion,
            header_timeout=header_timeout,
        )
    except ServingError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def stack() -> None:
    """The production topology natively: Postgres, MLflow server, code server, webserver,
    daemon and scorer as separate processes (what docker/compose.yaml runs)."""


@stack.command("up")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory [default: <CHURN_HOME>/stack].",
)
@click.option("--no-scorer", is_flag=True, help="Start the scorer later (needs a champion).")
def stack_up(root: Path | None, no_scorer: bool) -> None:
    """Start every process and wait until each is healthy; print where they listen."""
    from churn_assets.infra import stack as churn_stack

    target = root or _settings().home / "stack"
    try:
        started = churn_stack.up(target, scorer=not no_scorer)
    except churn_stack.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"webserver  {started.webserver_url}")
    click.echo(f"mlflow     {started.mlflow_url}")
    click.echo(f"scorer     {started.scorer_url}" + (" (not started)" if no_scorer else ""))
    click.echo(f"warehouse  {started.warehouse_url}")
    click.echo(f"logs       {target / 'logs'}   stop with: churn stack down")


@stack.command("down")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path))
def stack_down(root: Path | None) -> None:
    """Stop every stack process and its Postgres server (state stays on disk)."""
    from churn_assets.infra import stack as churn_stack

    stopped = churn_stack.down(root or _settings().home / "stack")
    click.echo("stopped: " + (", ".join(stopped) or "nothing was running"))


@main.command("warehouse-url")
def warehouse_url() -> None:
    """Print the warehouse URI (starts the embedded server if needed); psql accepts it."""
    click.echo(_warehouse_url(_settings()))


@main.command("warehouse-env")
def warehouse_env() -> None:
    """Print `export CHURN_PG_*=...` lines (on Spark `CHURN_SPARK_*`, starting the metastore
    service) for dbt by hand: eval "$(churn warehouse-env)"."""
    import shlex

    from churn_assets.infra import spark
    from churn_assets.infra.warehouse import parse_url

    settings = _settings()
    if settings.engine is Engine.SPARK:
        variables = spark.dbt_env(settings)
    else:
        variables = parse_url(_warehouse_url(settings)).dbt_env()
    for name, value in variables.items():
        click.echo(f"export {name}={shlex.quote(value)}")


@main.command("warehouse-stop")
def warehouse_stop() -> None:
    """Stop the embedded Postgres server and the Spark engine's local metastore service,
    whichever runs (their data stays under CHURN_HOME)."""
    from churn_assets.tables.engines import stop_services

    settings = _settings()
    stopped = stop_services(settings)
    for service in stopped:
        click.echo(f"stopped {service}")
    if not stopped:
        click.echo("not running")


@main.command()
def psql() -> None:
    """Open psql on the warehouse."""
    url = _warehouse_url(_settings())
    os.execvp("psql", ["psql", url])


def _status(settings: Settings, *, models_only: bool = False) -> dict[str, Any]:
    """The status report (see `churn status`), or only its two models for a run's summary:
    that needs no warehouse query (the shadow comparison reads the whole prediction log)."""
    from churn_assets.app.status import registered_models, status_report
    from churn_assets.ml.tracking import RegistryUnavailable

    try:
        return registered_models(settings) if models_only else status_report(settings)
    except RegistryUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


def _warehouse_url(settings: Settings) -> str:
    from churn_assets.infra.warehouse import WarehouseError, url_for

    if settings.engine is Engine.SPARK:
        raise click.ClickException(
            "CHURN_ENGINE=spark: the warehouse is a Hive catalog of Parquet tables, not a "
            "Postgres server (no URL, no psql); `churn warehouse-env` prints its dbt variables"
        )
    try:
        return url_for(settings)
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from exc


def _ensure_dagster_home(settings: Settings) -> Path:
    """``<CHURN_HOME>/dagster`` holding the repo's dagster.yaml, so runs outlive the process."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _warm_up(settings: Settings) -> None:
    """Start the warehouse (on Spark: the metastore service) and parse the dbt project
    before Dagster loads the code."""
    from churn_assets.lib.dbt import churn_dbt_project
    from churn_assets.tables.engines import start_services

    start_services(settings)  # a WarehouseError ends the command in one line

    project = churn_dbt_project()
    project.preparer.prepare(project)  # re-parse: the SQL may have changed since last time


def _instance(settings: Settings) -> DagsterInstance:
    """The persistent instance the commands launch runs in, after marking failed the runs a
    killed `churn` left STARTED (no daemon watches in-process runs; lib/orphaned_runs.py)."""
    from dagster import DagsterInstance

    from churn_assets.lib.orphaned_runs import fail_orphaned_runs

    instance = DagsterInstance.from_config(str(_ensure_dagster_home(settings)))
    for line in fail_orphaned_runs(instance):
        click.echo(line, err=True)
    return instance


def _report(result: ExecuteInProcessResult, settings: Settings, instance: DagsterInstance) -> None:
    """This run's own outcome: its failed gates and root cause as the last lines, or what
    it loaded, built and registered (from its events, not from the shared warehouse)."""
    _raise_if_failed(result, instance)
    _summarise(result, settings)


def _raise_if_failed(
    result: ExecuteInProcessResult, instance: DagsterInstance | None = None
) -> None:
    """The failed run's gates and root cause as the command's last lines, after its alert
    (when ``instance`` is given: a run launched in this process, which no sensor tick may
    see before the command exits)."""
    from churn_assets.lib import report

    if not result.success:
        if instance is not None:
            from churn_assets.defs.alerts.sensors import alert_run_failed_in_process

            alert_run_failed_in_process(instance, result)
        for line in report.gate_failures(result):
            click.echo(line, err=True)
        raise click.ClickException(report.failure_message(result, load_settings().home))


def _describe_registered(settings: Settings, version: str) -> str:
    if version.startswith("not registered"):
        return version
    from churn_assets.app.status import describe_model
    from churn_assets.ml import tracking

    return describe_model(tracking.describe_version(settings.resolved_tracking_uri, version))


if __name__ == "__main__":
    sys.exit(main())
