"""The platform running itself, in this process: what ``churn run`` and ``churn demo`` use.

No order of jobs is written here. A tick evaluates the definitions' sensors (raw files,
promotion, retraining, alerts, freshness) and their automation conditions with Dagster's
own code (``SensorDefinition.evaluate_tick``, ``evaluate_automation_conditions``) and
executes what they request, in process, against the persistent instance; ticks repeat
until one requests nothing. Under ``churn dev`` the daemon evaluates the same definitions.

What differs from the daemon, and why:

- cursors are kept in the instance's key-value store under ``churn/in_process/<name>``
  (the daemon keeps its own per sensor), and a sensor's run key is honoured the same way:
  a request whose key already ran for that sensor is not run again;
- the automation sensor's requests are grouped into runs by hand: consecutive assets (in
  dependency order) that want the same periods share a run, and a range of periods is
  one run through the single-run backfill tags, as the daemon's backfill would make it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster_shared.serdes import deserialize_value, serialize_value

from churn_assets.defs.automation import AUTOMATION_SENSORS, automation_sensor
from churn_assets.lib.orphaned_runs import launcher_tags

_CURSOR_PREFIX = "churn/in_process/"
# INFO, not DEBUG: step and dbt progress without every engine event.
_QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# Single-run backfill: every period from start to end in one run.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
MAX_TICKS = 60


@dataclass(frozen=True)
class Launch:
    """One run a tick launched: who asked, for what, and how it ended."""

    requested_by: str
    description: str
    result: dg.ExecuteInProcessResult

    @property
    def success(self) -> bool:
        return self.result.success


def settle(
    instance: dg.DagsterInstance,
    log: Callable[[str], None] = print,
    max_ticks: int = MAX_TICKS,
    skip: frozenset[str] = frozenset(),
) -> list[Launch]:
    """Tick until a tick requests nothing; return every run launched, in order.

    The freshness check is evaluated once the rest is quiet (a check of "are the scores
    recent" asked half-way through a run of updates would report a state that lasts
    seconds), then one more round lets the alert sensors see its result.
    """
    from churn_assets.definitions import defs as load_defs

    defs = load_defs()
    prime(instance, defs)
    launched: list[Launch] = []
    for round_ in range(2):
        for _ in range(max_ticks):
            new = tick(instance, defs, log, skip)
            launched.extend(new)
            if not new:
                break
        else:
            log(f"stopped after {max_ticks} ticks that all launched runs: look for a loop")
            return launched
        if round_ == 0:
            for sensor in _sensors(defs, observers=True, skip=skip):
                launched.extend(_sensor_tick(instance, defs, sensor, log))
    return launched


def prime(instance: dg.DagsterInstance, defs: dg.Definitions | None = None) -> None:
    """Give the automation its first evaluation before anything runs.

    Dagster's first evaluation only records the state it finds (eager conditions do not
    fire on it, by design), so without this the updates of the first runs would be taken
    as the starting point instead of as news. Only state-based requests (build the seed
    while it is missing) can come out of a first evaluation, and they are asked again on
    the next one, so nothing is lost by not running them here.
    """
    if _cursor(instance, automation_sensor.name) is not None:
        return
    if defs is None:
        from churn_assets.definitions import defs as load_defs

        defs = load_defs()
    evaluation = _evaluate(defs, instance, None)
    _set_cursor(instance, automation_sensor.name, serialize_value(evaluation.cursor))


def tick(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    log: Callable[[str], None] = print,
    skip: frozenset[str] = frozenset(),
) -> list[Launch]:
    """One evaluation of every sensor but the freshness sensor (see :func:`settle`), then
    of the automation conditions."""
    # Sensors first: a version registered in this store is decided before anything is
    # scored with "the champion" the instance last saw (it may be another store's).
    launched: list[Launch] = []
    for sensor in _sensors(defs, observers=False, skip=skip):
        launched.extend(_sensor_tick(instance, defs, sensor, log))
    launched.extend(_automation_tick(instance, defs, log))
    return launched


def _sensors(
    defs: dg.Definitions, *, observers: bool, skip: frozenset[str] = frozenset()
) -> list[dg.SensorDefinition]:
    from churn_assets.defs.scoring.freshness import scores_freshness_sensor

    return [
        sensor
        for sensor in defs.sensors or ()
        if sensor.name not in {automation.name for automation in AUTOMATION_SENSORS} | skip
        and (sensor.name == scores_freshness_sensor.name) is observers
    ]


def _sensor_tick(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    sensor: dg.SensorDefinition,
    log: Callable[[str], None],
) -> list[Launch]:
    with dg.build_sensor_context(
        instance=instance,
        cursor=_cursor(instance, sensor.name),
        sensor_name=sensor.name,
        resources=dict(defs.resources or {}),
        definitions=defs,
        last_sensor_start_time=time.time(),
    ) as context:
        data = sensor.evaluate_tick(context)
    for event in data.asset_events:  # the daemon records a sensor's asset events itself
        instance.report_runless_asset_event(event)
    if data.cursor is not None:
        _set_cursor(instance, sensor.name, data.cursor)
    launched = []
    for request in data.run_requests or ():
        if request.run_key and _already_ran(instance, sensor.name, request.run_key):
            continue
        job_name = request.job_name or sensor.job_name
        assert job_name is not None, f"{sensor.name} requested a run without a job"
        log(f"{sensor.name}: {job_name} ({request.run_key or 'no run key'})")
        tags = {**request.tags, SENSOR_NAME_TAG: sensor.name, **launcher_tags()}
        if request.run_key:
            tags[RUN_KEY_TAG] = request.run_key
        job = defs.resolve_job_def(job_name)
        if request.asset_selection is not None or request.asset_check_keys is not None:
            # e.g. the freshness sensor asks for its checks alone, not the whole asset job
            job = job.get_subset(
                asset_selection=set(request.asset_selection or ()),
                asset_check_selection=set(request.asset_check_keys or ()),
            )
        result = job.execute_in_process(
            run_config=_with_quiet_logs(request.run_config),
            instance=instance,
            tags=tags,
            partition_key=request.partition_key,
            raise_on_error=False,
        )
        launched.append(Launch(sensor.name, job_name, result))
    return launched


def _automation_tick(
    instance: dg.DagsterInstance, defs: dg.Definitions, log: Callable[[str], None]
) -> list[Launch]:
    name = automation_sensor.name
    stored = _cursor(instance, name)
    cursor = deserialize_value(stored, AssetDaemonCursor) if stored else None
    evaluation = _evaluate(defs, instance, cursor)
    _set_cursor(instance, name, serialize_value(evaluation.cursor))
    graph = defs.resolve_asset_graph()
    wanted = {
        key: evaluation.get_requested_partitions(key)
        for key in graph.toposorted_asset_keys
        if evaluation.get_num_requested(key)
    }
    launched: list[Launch] = []
    for keys, partitions in _runs(graph.toposorted_asset_keys, wanted):
        names = ", ".join(key.to_user_string() for key in keys)
        scope = _describe(partitions)
        log(f"{name}: {names}{scope}")
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            run_config=_QUIET,
            instance=instance,
            asset_selection=list(keys),
            tags={SENSOR_NAME_TAG: name, **_partition_tags(partitions), **launcher_tags()},
            raise_on_error=False,
        )
        launched.append(Launch(name, names + scope, result))
        if not result.success:
            break  # what follows depends on it; the next tick re-evaluates the conditions
    return launched


def _evaluate(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: AssetDaemonCursor | None
) -> dg.EvaluateAutomationConditionsResult:
    with warnings.catch_warnings(), _periods_read_once(instance):
        warnings.simplefilter("ignore", dg.BetaWarning)  # its own selection uses a beta flag
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)


@contextmanager
def _periods_read_once(instance: dg.DagsterInstance) -> Iterator[None]:
    """Answer ``instance.get_dynamic_partitions`` from memory for the block.

    ``evaluate_automation_conditions`` builds its new cursor with the instance itself as the
    partitions store, uncached: every period subset of every condition node asks the event
    log for the period list again (5,310 queries, ~14 s of the ~16 s a `churn run` spent
    evaluating; benchmarks/RESULTS.md). Nothing adds or removes a period during an
    evaluation, so the first answer per name holds for all of it.
    """
    read = instance.get_dynamic_partitions
    answers: dict[str, Sequence[str]] = {}

    def read_once(partitions_def_name: str) -> Sequence[str]:
        if partitions_def_name not in answers:
            answers[partitions_def_name] = read(partitions_def_name)
        return answers[partitions_def_name]

    instance.get_dynamic_partitions = read_once  # type: ignore[method-assign]
    try:
        yield
    finally:
        del instance.get_dynamic_partitions  # the class's method again


def _runs(
    order: Iterable[dg.AssetKey], wanted: dict[dg.AssetKey, Any]
) -> list[tuple[list[dg.AssetKey], list[str]]]:
    """Consecutive requested assets (dependency order) that want the same periods share a
    run; an unpartitioned asset joins whichever run is current."""
    runs: list[tuple[list[dg.AssetKey], list[str]]] = []
    for key in order:
        if key not in wanted:
            continue
        periods = sorted(p for p in wanted[key] if p is not None)
        if runs and (not periods or not runs[-1][1] or runs[-1][1] == periods):
            runs[-1][0].append(key)
            if periods:
                runs[-1] = (runs[-1][0], periods)
        else:
            runs.append(([key], periods))
    return runs


def _partition_tags(periods: Sequence[str]) -> dict[str, str]:
    if not periods:
        return {}
    if len(periods) == 1:
        return {"dagster/partition": periods[0]}
    return period_range_tags(list(periods))


def _describe(periods: Sequence[str]) -> str:
    if not periods:
        return ""
    if len(periods) == 1:
        return f" [{periods[0]}]"
    return f" [{len(periods)} periods {periods[0]} .. {periods[-1]}]"


def period_range_tags(keys: list[str]) -> dict[str, str]:
    """Run tags that make one run build every period from ``keys[0]`` to ``keys[-1]``."""
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def run_job(
    instance: dg.DagsterInstance,
    job_name: str,
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
    partition_key: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Launch one job in process (a person's launch: ``churn run``'s load, ``churn backfill``).

    Every in-process launch here carries :func:`~churn_assets.lib.orphaned_runs.launcher_tags`,
    so a run this process leaves unfinished (killed) is marked failed by the next command."""
    from churn_assets.definitions import defs

    return (
        defs()
        .resolve_job_def(job_name)
        .execute_in_process(
            run_config=_with_quiet_logs(run_config),
            instance=instance,
            raise_on_error=False,
            tags={**(tags or {}), **launcher_tags()},
            partition_key=partition_key,
        )
    )


def _with_quiet_logs(run_config: Any) -> dict[str, Any]:
    config = dict(run_config or {}) if not isinstance(run_config, dg.RunConfig) else {}
    if isinstance(run_config, dg.RunConfig):
        config = run_config.to_config_dict()
    return {**_QUIET, **config}


def _already_ran(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> bool:
    runs = instance.get_runs(
        filters=RunsFilter(tags={SENSOR_NAME_TAG: sensor_name, RUN_KEY_TAG: run_key}), limit=1
    )
    return bool(runs)


def _cursor(instance: dg.DagsterInstance, name: str) -> str | None:
    key = _CURSOR_PREFIX + name
    return instance.run_storage.get_cursor_values({key}).get(key)


def _set_cursor(instance: dg.DagsterInstance, name: str, value: str) -> None:
    instance.run_storage.set_cursor_values({_CURSOR_PREFIX + name: value})
