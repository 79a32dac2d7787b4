"""The month-by-month story (``churn demo --scenario drift``): a monthly feed whose customers
change how they churn, and a platform that copes by itself, under a real ``dagster-daemon``.

Each month the feed's files are replaced by the next month's (history up to that month
end). Nothing is launched by hand: the daemon's raw-files sensor notices the new content,
and its sensors and automation conditions do the rest — load, features, drift monitor,
scores, realized performance once labels mature, a retrain when the realized-performance
check or the drift gate fails, a promotion decision in a run, and a re-score of the current
period when the champion changes. Each run is printed as it finishes, with who asked for
it; the next month is delivered once the platform is at rest
(:class:`churn_assets.lib.daemon.Watch`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg

from churn_assets.defs.ingest.sensors import loaded_fingerprint
from churn_assets.defs.monitoring.sensors import DRIFT_GATE, REALIZED_CHECK
from churn_assets.lib.daemon import Daemon, Watch, launched_by, wait_for
from churn_assets.lib.report import decision_line
from churn_assets.lib.runs import RANGE_END_TAG, RANGE_START_TAG

# The daemon's sensors look every few seconds (and its backfill loop as often): a month of
# the story is a minute of wall time, not a month.
SENSOR_INTERVAL_SECONDS = 2
# Generous: it catches a hang, not slowness (a month takes 1-3 minutes on two cores).
MONTH_DEADLINE_SECONDS = 1800
CHAMPION = dg.AssetKey("churn_champion")


@dataclass
class StoryLog:
    """What happened, month by month, for the summary."""

    months: list[date] = field(default_factory=list)
    runs: list[dg.DagsterRun] = field(default_factory=list)
    promotions: list[str] = field(default_factory=list)

    @property
    def by_hand(self) -> list[dg.DagsterRun]:
        """Runs no sensor, automation condition or backfill asked for (none, if all went well)."""
        return [run for run in self.runs if launched_by(run) is None]


def deliver(files: list[Path], raw_dir: Path) -> None:
    """Move a month's files into the feed directory one by one with an atomic rename, so a
    sensor never fingerprints a half-written file."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        os.replace(path, raw_dir / path.name)


def monthly_story(
    instance: dg.DagsterInstance,
    daemon: Daemon,
    sensors: Sequence[str],
    raw_dir: Path,
    log: Callable[[str], None],
    deliveries: Sequence[date] = (),
) -> StoryLog:
    """Deliver the story's feed into ``raw_dir`` (the daemon's ``CHURN_RAW_DIR``) and wait,
    after each file, for the load of it and then for the platform to come to rest. ``deliveries``
    (month ends) are the files the feed brings, each with all history to its date: every
    month by default, or fewer for a shorter story (the months between are then one
    delivery). ``sensors`` are the code location's sensor names (all of them decide)."""
    from churn_assets.data.contract import file_sha256
    from churn_assets.data.generator import generate
    from churn_assets.data.scenarios import MONTHLY_STORY, story_deliveries, write_month

    month_ends = story_deliveries(deliveries)
    data = generate(MONTHLY_STORY)
    raw_dir.mkdir(parents=True, exist_ok=True)
    story = StoryLog()
    watch = Watch(instance, sensors)
    watch.finished_runs()  # what ran before the story is not the story's
    drift = MONTHLY_STORY.drift
    shift = f", behaviour shifts from {drift.starts_at}" if drift else ""
    log(f"a feed of {MONTHLY_STORY.n_customers:,} customers{shift}; dagster-daemon decides")

    def report_runs() -> None:
        for run in watch.finished_runs():
            story.runs.append(run)
            for line in _run_lines(instance, run):
                log(line)
            for line in _decisions(instance, run):
                log(f"     {line}")
                story.promotions.append(f"{story.months[-1]}: {line}")

    for month_end in month_ends:
        log(f"\n== the feed delivers the orders to {month_end}")
        story.months.append(month_end)
        with tempfile.TemporaryDirectory(dir=raw_dir.parent) as staging:
            deliver(write_month(data, month_end, Path(staging)), raw_dir)
        orders_sha = file_sha256(next(raw_dir.glob("orders.*")))
        wait_for(
            lambda: loaded_fingerprint(instance)[0].get("orders") == orders_sha,  # noqa: B023
            daemon,
            f"the load of the files to {month_end}",
            MONTH_DEADLINE_SECONDS,
            every=report_runs,
        )
        wait_for(
            watch.at_rest,
            daemon,
            f"the platform to come to rest after {month_end}",
            MONTH_DEADLINE_SECONDS,
            every=report_runs,
        )
    return story


def _run_lines(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The run as a person reads it: who asked, what it built, how it ended; then the drift
    gate and the realized-performance check if it evaluated them."""
    what = run.job_name
    if what.startswith("__ASSET_JOB") and run.asset_selection:
        what = ", ".join(sorted(key.to_user_string() for key in run.asset_selection))
    scope = run.tags.get("dagster/partition") or (
        f"{run.tags[RANGE_START_TAG]} .. {run.tags[RANGE_END_TAG]}"
        if RANGE_START_TAG in run.tags
        else ""
    )
    ended = "" if run.status == dg.DagsterRunStatus.SUCCESS else f"  {run.status.value}"
    lines = [f"  -> {launched_by(run) or 'by hand'}: {what}{f' [{scope}]' if scope else ''}{ended}"]
    checks = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    for event in checks:
        evaluation = event.dagster_event.asset_check_evaluation_data  # type: ignore[union-attr]
        if evaluation.asset_check_key not in (DRIFT_GATE, REALIZED_CHECK):
            continue
        verdict = "passed" if evaluation.passed else "FAILED"
        detail = f": {evaluation.description}" if evaluation.description else ""
        lines.append(f"     {evaluation.check_name} {verdict}{detail}")
    return lines


def _decisions(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The promotion decisions the run made (promoted or kept), one line each."""
    lines = []
    for event in instance.all_logs(run.run_id):
        record = event.asset_materialization or event.asset_observation
        if record is None or record.asset_key != CHAMPION:
            continue
        lines.append(decision_line(record.metadata))
    return lines
