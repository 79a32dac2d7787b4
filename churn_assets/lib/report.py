"""What a finished run says to a person: why it failed, or what it built.

Everything here is read from the run's own events, never re-queried from the warehouse
afterwards: by the time a run is summarised another run may already be writing (it waited
for the write lock), and its numbers must not be reported under this run's id.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

_FAILURE_EVENTS = ("STEP_FAILURE", "RESOURCE_INIT_FAILURE", "RUN_FAILURE")

DISK_FULL = "No space left on device"
"""What the OS (ENOSPC) says when a disk is full, and Postgres and dbt quote it."""
LOW_DISK_BYTES = 64 * 2**20
"""Less free space than this under CHURN_HOME, after a failure, is taken as its cause: the
run's own storage (SQLite's "disk I/O error") may not say ENOSPC."""


def gate_failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per failed ERROR check (a gate): which, on which asset, the rule, what was seen."""
    return _failed_checks(result, dg.AssetCheckSeverity.ERROR, "gate")


def check_warnings(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per failed WARN check: nothing was stopped, but someone should look."""
    return _failed_checks(result, dg.AssetCheckSeverity.WARN, "warning: check")


def _failed_checks(
    result: dg.ExecuteInProcessResult, severity: dg.AssetCheckSeverity, label: str
) -> list[str]:
    lines = []
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed or evaluation.severity != severity:
            continue
        meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        detail = evaluation.description or meta.get("rule") or meta.get("failures") or ""
        value = meta.get("observed")
        shown = f"{value:.4g}" if isinstance(value, float) else value
        observed = f" (observed {shown})" if "observed" in meta else ""
        lines.append(
            f"{label} {evaluation.check_name} on {evaluation.asset_key.to_user_string()} "
            f"failed: {detail}{observed}"
        )
    return lines


def failure_message(result: dg.ExecuteInProcessResult, home: Path | None = None) -> str:
    """Why the run failed, ending with the root cause's own words (e.g. every contract
    violation), so it can be the last thing a command prints; a full disk (said, or seen
    under ``home``) ends it in plain words."""
    for event in result.all_events:
        if event.event_type_value not in _FAILURE_EVENTS:
            continue
        error = getattr(event.event_specific_data, "error", None)
        if error is None:
            continue
        where = f" at step {event.step_key}" if event.step_key else ""
        cause = root_cause(error)
        full = disk_full_line(cause, home)
        cause += f"\n{full}" if full else ""
        return f"run {result.run_id} failed{where}; the steps after it did not run:\n{cause}"
    return f"run {result.run_id} failed (see the run's event log)"


def disk_full_line(cause: str, home: Path | None) -> str | None:
    """One line saying the disk is full, when the cause says so (wherever it surfaced:
    Postgres, dbt, a file we wrote) or ``home`` has less than :data:`LOW_DISK_BYTES` free."""
    free = shutil.disk_usage(home).free if home is not None and home.exists() else None
    if DISK_FULL not in cause and (free is None or free >= LOW_DISK_BYTES):
        return None
    where = f" ({home} has {free / 2**20:.1f} MB free)" if free is not None else ""
    return (
        f"the disk is full{where}: free space where the warehouse keeps its data and under "
        "CHURN_HOME, then run again"
    )


def root_cause(error: SerializableErrorInfo) -> str:
    """The innermost error's message without its ``module.Class:`` prefix.

    Dagster wraps a step's exception ("Error occurred while executing op ...") and the
    user's exception is the last cause; its message is the one that says what to do.
    """
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    prefix, separator, rest = message.partition(": ")
    if separator and error.cls_name and prefix.endswith(error.cls_name):
        message = rest.strip()
    return message


def _materializations(*results: dg.ExecuteInProcessResult) -> dict[str, Mapping[str, Any]]:
    """The last materialisation metadata of each asset in the runs, as plain values."""
    found: dict[str, Mapping[str, Any]] = {}
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            found[materialization.asset_key.to_user_string()] = _plain(materialization.metadata)
    return found


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def promotion_lines(*results: dg.ExecuteInProcessResult) -> Iterator[str]:
    """One line per promotion decision the runs made (promoted or kept)."""
    for result in results:
        for event in result.all_events:
            data = event.event_specific_data
            record = getattr(data, "materialization", None) or getattr(
                data, "asset_observation", None
            )
            if record is None or record.asset_key != dg.AssetKey("churn_champion"):
                continue
            yield decision_line(record.metadata)


def decision_line(metadata: Mapping[str, Any]) -> str:
    """A promotion decision (``churn_champion``'s metadata) in one line."""
    meta = _plain(metadata)
    verdict = "promoted" if meta.get("promoted") else "kept"
    return f"promotion: v{meta.get('challenger_version')} {verdict}: {meta.get('reason')}"


def run_summary(*results: dg.ExecuteInProcessResult) -> Iterator[str]:
    """What these runs loaded and built, from their own materialisations (named by the
    first)."""
    built = _materializations(*results)
    yield f"run {results[0].run_id} succeeded"
    if "raw_customers" in built and "raw_orders" in built:
        customers = built["raw_customers"]["dagster/row_count"]
        orders = built["raw_orders"]["dagster/row_count"]
        yield f"  raw:       {customers:,} customers, {orders:,} orders"
    yield from period_summary(*results, indent="  ")
    dataset, model = built.get("training_dataset"), built.get("churn_model")
    if dataset:
        yield (
            f"  training:  {dataset['dagster/row_count']:,} rows (label rate "
            f"{dataset['label_rate']:.1%}); {dataset['periods']}"
        )
    if model and "roc_auc" in model:
        yield f"  AUC:       {auc_line(model)}"
    backtest = built.get("backtest")
    if backtest:
        yield f"  backtest:  {backtest['periods_evaluated']} period(s), mean AUC " + (
            f"{backtest['mean_auc']:.3f}" if isinstance(backtest["mean_auc"], float) else "n/a"
        )
    yield "  open the UI:   churn dev   (then http://127.0.0.1:3000)"


def auc_line(model: Mapping[str, Any]) -> str:
    """What ``churn_model``'s AUC measured, from its metadata: out of time on a named later
    period, or in time only (a history too short for an out-of-time holdout)."""
    if model.get("evaluation") == "out of time":
        return (
            f"{model['roc_auc']:.3f} out of time (holdout {model['holdout_as_of']}), "
            f"{model['in_time_auc']:.3f} in time"
        )
    return (
        f"{model['roc_auc']:.3f} in time only (a random holdout of the training period: the "
        "history is too short for an out-of-time holdout)"
    )


def period_summary(*results: dg.ExecuteInProcessResult, indent: str = "") -> Iterator[str]:
    """The periods these runs built: features per period, labelled periods."""
    built = _materializations(*results)
    features, snapshot = built.get("customer_features"), built.get("training_snapshot")
    if features and "periods_built" in features:
        yield (
            f"{indent}features:  {features['periods_built']} period(s), "
            f"{features['dagster/row_count']:,} customer rows"
        )
    if snapshot and "periods_built" in snapshot:
        unlabelled = snapshot.get("periods_without_closed_labels", "none")
        yield (
            f"{indent}labels:    {snapshot['dagster/row_count']:,} labelled rows; label window "
            f"still open for: {unlabelled}"
        )


def registered_version(*results: dg.ExecuteInProcessResult) -> str | None:
    """The registry version these runs created, or why none (None: not in the runs)."""
    registered = _materializations(*results).get("churn_model_version")
    if registered is None:
        return None
    if registered.get("registry") != "registered":
        return f"not registered: {registered.get('registry')}"
    return str(registered["version"])


def scores_summary(*results: dg.ExecuteInProcessResult) -> str | None:
    """How many customers these runs scored last, with which version; None if none did."""
    scores = _materializations(*results).get("churn_scores")
    if scores is None:
        return None
    return (
        f"{scores['dagster/row_count']:,} customers scored by champion v{scores['model_version']}"
    )
