"""Alerts: a failed run, or a failed gate, becomes one JSON message to the webhook.

Two sensors, on by default, both silent (a skip saying so) while ``CHURN_ALERT_WEBHOOK_URL``
is unset. They still move their cursors then, so switching alerts on later does not replay
history. The message format is in :mod:`churn_assets.infra.alerts`. A receiver that is down costs
a tick at most two timeouts and never fails it: :func:`churn_assets.infra.alerts.post_alert` does
not raise.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from churn_assets.defs.monitoring.sensors import DRIFT_GATE, REALIZED_CHECK
from churn_assets.infra.alerts import AlertMessage, asset_checks_url, post_alert, run_url
from churn_assets.settings import load_settings

RUN_FAILURE_ALERT_SENSOR = "run_failure_alert_sensor"
GATE_FAILURE_ALERT_SENSOR = "gate_failure_alert_sensor"
ALERTS_OFF = "alerts are off: CHURN_ALERT_WEBHOOK_URL is not set"

ALERT_SENT_TAG = "churn/alert_sent"
"""Set on a run once its failure alert was delivered: a run ``churn run`` alerted in process
is not alerted again by a later tick (the daemon's, or the next ``churn run``'s)."""

# Watched besides every blocking check: the two gates of the retraining loop. They are WARN
# checks (scoring goes on when they fail), so the "blocking" rule alone would miss them.
LOOP_GATES = (DRIFT_GATE, REALIZED_CHECK)

WINDOW = 10
"""Newest failed executions read per watched check each tick. A check failing more often
than this between two ticks (30 s) would lose the oldest of those alerts."""

_FAILED = {AssetCheckExecutionRecordStatus.FAILED}


@dataclass
class _ReceiverState:
    """What the run sensor remembers between runs (and ticks) of this code server."""

    down_until: float = 0.0
    """``time.monotonic()`` before which run alerts are dropped without trying."""


PAUSE_SECONDS = 60.0
"""After an undelivered run alert, the next ones are dropped without trying for this long.
Dagster handles up to 5 failed runs per tick, and 5 x two timeouts would overrun the
sensor's 60 s tick timeout: a timed-out tick fails and keeps its old cursor, so it would
repeat itself."""

_RECEIVER = _ReceiverState()


# --- failed runs -------------------------------------------------------------------------


def build_run_failure_alert_sensor(interval_seconds: int) -> dg.SensorDefinition:
    """The run failure sensor, looking every ``interval_seconds``."""
    return dg.run_failure_sensor(
        name=RUN_FAILURE_ALERT_SENSOR,
        # Every run of the instance, also those `churn run` executes in process (they have
        # no code location, so a sensor watching only its own location would not see them).
        monitor_all_code_locations=True,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="POSTs one run_failure message per failed run to CHURN_ALERT_WEBHOOK_URL "
        "(job, run id, failed steps and their errors, a UI link); skips while it is unset.",
    )(alert_run_failure)


def alert_run_failure(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    """The run failure sensor's work for one failed run."""
    # Dagster's run-status machinery owns the cursor and moves it past this run whatever is
    # returned. A skip ends the tick after this run (fine while alerts are off); a handled
    # run returns None, and the next failed runs are handled in the same tick. A tick may
    # not mix the two, so an undelivered alert returns None as well.
    run = context.dagster_run
    settings = load_settings()
    if settings.alert_webhook_url is None:
        return dg.SkipReason(f"{ALERTS_OFF}; run {run.run_id} of {run.job_name} not alerted")
    # The sensor's tick reads each run's record afresh, tags added after it ended included.
    if ALERT_SENT_TAG in run.tags:
        context.log.info(f"run {run.run_id} was alerted when it failed (in process)")
        return None
    message = run_failure_message(context, settings.ui_url)
    now = time.monotonic()
    if now < _RECEIVER.down_until:
        context.log.warning(
            f"alert dropped, the receiver failed < {PAUSE_SECONDS:.0f} s ago: {message['summary']}"
        )
    elif post_alert(settings.alert_webhook_url, message):
        context.instance.add_run_tags(run.run_id, {ALERT_SENT_TAG: "true"})
        context.log.info(f"alert sent: {message['summary']}")
    else:
        _RECEIVER.down_until = now + PAUSE_SECONDS
        context.log.warning(f"alert not delivered: {message['summary']}")
    return None


def alert_run_failed_in_process(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult
) -> None:
    """Send now what the run failure sensor sends for a failed run, for a run that
    ``churn run`` executed in process: without a daemon nobody ticks the sensor, and the
    command is about to exit. The sensor's own function is called, so the message, the
    "alerts are off" skip and the delivery rules stay one definition; a delivered alert tags
    the run (:data:`ALERT_SENT_TAG`), so the sensor's own tick later skips it."""
    if result.success:
        return
    context = dg.build_run_status_sensor_context(
        sensor_name=RUN_FAILURE_ALERT_SENSOR,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    alert_run_failure(context)


def run_failure_message(context: dg.RunFailureSensorContext, ui_url: str) -> AlertMessage:
    """The ``run_failure`` message: the job, Dagster's failure message, each failed step."""
    run = context.dagster_run
    failed_steps = [
        {"step": event.step_key, "error": _error_line(event)}
        for event in context.get_step_failure_events()
    ]
    steps = ", ".join(str(step["step"]) for step in failed_steps)
    reason = next((s["error"] for s in failed_steps if s["error"]), None)
    reason = reason or context.failure_event.message
    summary = f"Run {run.run_id[:8]} of {run.job_name} failed"
    summary += f" in {steps}" if steps else ""
    summary += f": {_one_line(reason)}" if reason else ""
    return AlertMessage(
        kind="run_failure",
        summary=summary,
        asset=None,
        check=None,
        run_id=run.run_id,
        job=run.job_name,
        url=run_url(ui_url, run.run_id),
        details={"message": context.failure_event.message, "failed_steps": failed_steps},
    )


def _error_line(event: dg.DagsterEvent) -> str | None:
    """The innermost cause's first line: the user's exception, not Dagster's wrapper."""
    error = event.step_failure_data.error if event.is_step_failure else None
    while error is not None and error.cause is not None:
        error = error.cause
    return _one_line(error.message) if error is not None else None


# --- failed gates ------------------------------------------------------------------------


def build_gate_failure_alert_sensor(interval_seconds: int) -> dg.SensorDefinition:
    """The gate failure sensor, looking every ``interval_seconds``."""
    return dg.sensor(
        name=GATE_FAILURE_ALERT_SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="POSTs one check_failure message per new failed evaluation of a blocking "
        "check (the GX suite, the AUC and parity gates, dbt tests of severity error), the "
        "drift gate or realized_performance_check to CHURN_ALERT_WEBHOOK_URL; skips while it "
        "is unset.",
    )(gate_failure_tick)


def gate_failure_tick(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """One tick of the gate failure sensor: :func:`gate_alerts` with the settings of now."""
    settings = load_settings()
    return gate_alerts(
        context.instance,
        context.cursor,
        watched_checks(context.repository_def),
        settings.alert_webhook_url,
        settings.ui_url,
    )


def watched_checks(repository: dg.RepositoryDefinition | None) -> dict[dg.AssetCheckKey, bool]:
    """Each watched check and whether it is blocking.

    Blocking-ness is read from the check specs of the code location's asset graph rather
    than listed here, so a new blocking check (or a dbt test whose severity becomes error)
    is watched without touching this file. Without a repository (a bare test context) only
    the loop gates are known.
    """
    watched = dict.fromkeys(LOOP_GATES, False)
    if repository is not None:
        graph = repository.asset_graph
        for key in graph.asset_check_keys:
            if graph.get_check_spec(key).blocking:
                watched[key] = True
    return watched


def gate_alerts(
    instance: dg.DagsterInstance,
    cursor: str | None,
    watched: Mapping[dg.AssetCheckKey, bool],
    webhook_url: str | None,
    ui_url: str,
) -> dg.SensorResult:
    """One alert per failed evaluation of a watched check not seen before.

    The cursor is the set of failed execution ids in each check's window of the newest
    :data:`WINDOW`, not a high-water mark: an execution's id is given when its run *plans*
    the check, so a long run's check can fail after a later-planned one was already alerted.
    A failed execution never changes id or status, so a window entry seen once stays seen,
    and ids leave the cursor only when they leave the window. The first tick (no cursor)
    alerts only checks whose latest evaluation failed: those are failing now, older
    failures are history.
    """
    storage = instance.event_log_storage
    failed: list[AssetCheckExecutionRecord] = []
    for key in sorted(watched, key=lambda k: k.to_user_string()):
        failed.extend(storage.get_asset_check_execution_history(key, limit=WINDOW, status=_FAILED))
    if cursor:
        seen = set(json.loads(cursor).get("seen", []))
        new = [record for record in failed if record.id not in seen]
    else:
        latest = storage.get_latest_asset_check_execution_by_key(list(watched))
        failing_now = {r.id for r in latest.values() if r.status in _FAILED}
        new = [record for record in failed if record.id in failing_now]
    new.sort(key=lambda record: record.id)
    window = {record.id for record in failed}

    if webhook_url is None:
        unsent = f"; {len(new)} failed evaluation(s) not alerted" if new else ""
        return dg.SensorResult(skip_reason=ALERTS_OFF + unsent, cursor=_cursor(window))
    if not new:
        return dg.SensorResult(
            skip_reason=f"no new failed evaluation of the {len(watched)} watched checks",
            cursor=_cursor(window),
        )
    sent: list[str] = []
    for position, record in enumerate(new):
        message = check_failure_message(instance, record, watched.get(record.key, False), ui_url)
        if post_alert(webhook_url, message):
            sent.append(message["summary"])
            continue
        # The receiver is down: this alert is dropped (post_alert logged it). The rest are
        # left out of the cursor and tried next tick, so a tick spends at most one
        # message's timeouts on a dead receiver.
        later = new[position + 1 :]
        return dg.SensorResult(
            skip_reason=f"sent {len(sent)} alert(s); not delivered: {message['summary']}"
            + (f"; {len(later)} left for the next tick" if later else ""),
            cursor=_cursor(window - {r.id for r in later}),
        )
    return dg.SensorResult(
        skip_reason=f"sent {len(sent)} alert(s): " + " | ".join(sent), cursor=_cursor(window)
    )


def check_failure_message(
    instance: dg.DagsterInstance, record: AssetCheckExecutionRecord, blocking: bool, ui_url: str
) -> AlertMessage:
    """The ``check_failure`` message for one failed execution."""
    evaluation = record.evaluation
    asset = record.key.asset_key.to_user_string()
    check = record.key.name
    severity = evaluation.severity.value if evaluation is not None else "ERROR"
    description = evaluation.description if evaluation is not None else None
    run = instance.get_run_by_id(record.run_id) if record.run_id else None
    partition = f" [{record.partition}]" if record.partition else ""
    summary = f"Check {check} on {asset}{partition} failed ({'blocking' if blocking else severity})"
    summary += f": {_one_line(description)}" if description else ""
    return AlertMessage(
        kind="check_failure",
        summary=summary,
        asset=asset,
        check=check,
        run_id=record.run_id or None,
        job=run.job_name if run is not None else None,
        url=(
            run_url(ui_url, record.run_id)
            if record.run_id
            else asset_checks_url(ui_url, list(record.key.asset_key.path))
        ),
        details={
            "severity": severity,
            "blocking": blocking,
            "description": description,
            "partition": record.partition,
            "metadata": _scalars(evaluation.metadata) if evaluation is not None else {},
        },
    )


_PLAIN = (dg.FloatMetadataValue, dg.IntMetadataValue, dg.BoolMetadataValue, dg.TextMetadataValue)


def _scalars(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, Any]:
    """The plain values (numbers, booleans, text): tables, markdown and plots stay in the UI."""
    plain: dict[str, Any] = {}
    for name, entry in metadata.items():
        value = entry.value if isinstance(entry, _PLAIN) else None
        if isinstance(value, float) and not math.isfinite(value):
            continue  # NaN is not JSON
        if value is not None:
            plain[name] = _one_line(value) if isinstance(value, str) else value
    return plain


def _one_line(text: str | None, limit: int = 300) -> str:
    lines = (text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cursor(ids: Iterable[int]) -> str:
    return json.dumps({"seen": sorted(ids)})


@dg.definitions
def defs() -> dg.Definitions:
    # The interval is read when the code loads: Dagster needs it to define the sensors.
    interval = load_settings().sensor_interval_seconds
    return dg.Definitions(
        sensors=[
            build_run_failure_alert_sensor(interval),
            build_gate_failure_alert_sensor(interval),
        ]
    )
