"""The month-by-month story (``churn demo --scenario drift``): a monthly feed whose customers
change how they churn, and a platform that copes by itself.

Each month the feed's files are replaced by the next month's (history up to that month
end). Nothing is launched by hand: the raw-files sensor notices the new content, and the
sensors and automation conditions do the rest (:func:`churn_assets.lib.automation.settle`)
— load, features, drift monitor, scores, realized performance once labels mature, a
retrain when the realized-performance check or the drift gate fails, a promotion decision
in a run, and a re-score of the current period when the champion changes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg

from churn_assets.defs.monitoring.sensors import DRIFT_GATE, REALIZED_CHECK
from churn_assets.lib.automation import Launch, settle


@dataclass
class StoryLog:
    """What happened, month by month, for the summary."""

    months: list[date] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    promotions: list[str] = field(default_factory=list)


def deliver(files: list[Path], raw_dir: Path) -> None:
    """Move a month's files into the feed directory one by one with an atomic rename, so a
    sensor never fingerprints a half-written file."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        os.replace(path, raw_dir / path.name)


def monthly_story(
    instance: dg.DagsterInstance,
    raw_dir: Path,
    log: Callable[[str], None],
    deliveries: Sequence[date] = (),
) -> StoryLog:
    """Deliver the story's feed into ``raw_dir`` and let the platform settle after each
    file; ``CHURN_RAW_DIR`` must point at ``raw_dir``. ``deliveries`` (month ends) are the
    files the feed brings, each with all history to its date: every month by default, or
    fewer for a shorter story (the months between are then one delivery)."""
    from churn_assets.data.generator import generate
    from churn_assets.data.scenarios import MONTHLY_STORY, story_deliveries, write_month
    from churn_assets.lib import report

    month_ends = story_deliveries(deliveries)

    data = generate(MONTHLY_STORY)
    raw_dir.mkdir(parents=True, exist_ok=True)
    story = StoryLog()
    drift = MONTHLY_STORY.drift
    shift = f", behaviour shifts from {drift.starts_at}" if drift else ""
    log(f"a feed of {MONTHLY_STORY.n_customers:,} customers{shift}")
    for month_end in month_ends:
        log(f"\n== the feed delivers the orders to {month_end}")
        with tempfile.TemporaryDirectory(dir=raw_dir.parent) as staging:
            deliver(write_month(data, month_end, Path(staging)), raw_dir)
        launches = settle(instance, log=lambda line: log(f"  -> {line}"))
        story.months.append(month_end)
        story.launches.extend(launches)
        for launch in launches:
            for line in _check_lines(launch.result):
                log(f"     {line}")
            for line in report.promotion_lines(launch.result):
                log(f"     {line}")
                story.promotions.append(f"{month_end}: {line}")
            if not launch.success:
                log(f"     failed: {report.failure_message(launch.result)}")
    return story


def _check_lines(result: dg.ExecuteInProcessResult) -> list[str]:
    """The drift gate and the realized-performance check, as a person reads them."""
    lines = []
    for evaluation in result.get_asset_check_evaluations():
        key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
        if key not in (DRIFT_GATE, REALIZED_CHECK):
            continue
        verdict = "passed" if evaluation.passed else "FAILED"
        detail = evaluation.description or ""
        lines.append(f"{evaluation.check_name} {verdict}{': ' + detail if detail else ''}")
    return lines
