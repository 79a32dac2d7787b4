"""Alerts reach a real HTTP receiver exactly once per failure, and a dead receiver never
fails a sensor tick. No warehouse: a temporary Dagster instance and tiny jobs."""

from __future__ import annotations

import logging
import socket
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData

from churn_assets.defs.alerts import sensors
from churn_assets.defs.alerts.sensors import (
    ALERTS_OFF,
    GATE_FAILURE_ALERT_SENSOR,
    RUN_FAILURE_ALERT_SENSOR,
    alert_run_failed_in_process,
    watched_checks,
)
from churn_assets.defs.monitoring.sensors import DRIFT_GATE
from churn_assets.infra import alerts
from churn_assets.settings import SettingsError, load_settings
from churn_assets.urls import basic_auth
from tests.webhook import Receiver

UI = "http://dagster.example:3000"
GX_CHECK = dg.AssetCheckKey(dg.AssetKey("training_dataset"), "training_data_quality")
GX_FAILURE = (
    "expect_column_mean_to_be_between on churned: observed 0.7 >= max 0.6; "
    "set CHURN_MAX_LABEL_RATE to move it"
)


@pytest.fixture(autouse=True)
def fast_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alerts off unless a test turns them on; short timeouts so a hang costs ~1 s."""
    monkeypatch.delenv("CHURN_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("CHURN_UI_URL", UI + "/")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(alerts, "TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(alerts, "RETRY_DELAY_SECONDS", 0.05)
    monkeypatch.setattr(sensors._RECEIVER, "down_until", 0.0)


@pytest.fixture
def alerts_on(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> Receiver:
    monkeypatch.setenv("CHURN_ALERT_WEBHOOK_URL", receiver.url)
    return receiver


@dg.op
def load_warehouse() -> None:
    raise ValueError("the warehouse is gone")


@dg.job
def nightly_job() -> None:
    load_warehouse()


@dg.asset
def tiny_dataset() -> int:
    return 1


@dg.asset_check(asset=tiny_dataset, blocking=True)
def tiny_dataset_quality() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="1 labelled customer (need 200)")


TINY = dg.Definitions(assets=[tiny_dataset], asset_checks=[tiny_dataset_quality])


def _tick(
    sensor_name: str,
    instance: dg.DagsterInstance,
    cursor: str | None,
    repository: dg.RepositoryDefinition | None = None,
) -> SensorExecutionData:
    """One evaluation as the daemon does it (cursor in, cursor out)."""
    sensor = sensors.defs().get_sensor_def(sensor_name)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, repository_def=repository
    ) as context:
        return sensor.evaluate_tick(context)


def _failed_run(instance: dg.DagsterInstance) -> str:
    result = nightly_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return result.run_id


def _report(
    instance: dg.DagsterInstance,
    key: dg.AssetCheckKey,
    *,
    passed: bool,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=passed,
            severity=severity,
            description=description,
            metadata=metadata or {},
        )
    )


# --- the run-failure sensor --------------------------------------------------------------


def test_a_failed_run_sends_exactly_one_message(
    instance: dg.DagsterInstance, alerts_on: Receiver
) -> None:
    start = _tick(RUN_FAILURE_ALERT_SENSOR, instance, None)  # the cursor starts at "now"
    run_id = _failed_run(instance)
    tick = _tick(RUN_FAILURE_ALERT_SENSOR, instance, start.cursor)
    (message,) = alerts_on.requests
    assert message == {
        "kind": "run_failure",
        "summary": f"Run {run_id[:8]} of nightly_job failed in load_warehouse: "
        "ValueError: the warehouse is gone",
        "asset": None,
        "check": None,
        "run_id": run_id,
        "job": "nightly_job",
        "url": f"{UI}/runs/{run_id}",
        "details": {
            "message": message["details"]["message"],
            "failed_steps": [
                {"step": "load_warehouse", "error": "ValueError: the warehouse is gone"}
            ],
        },
    }
    assert "nightly_job" in message["details"]["message"]
    assert tick.skip_message is None  # delivered: Dagster records a reaction on the run
    again = _tick(RUN_FAILURE_ALERT_SENSOR, instance, tick.cursor)
    assert len(alerts_on.requests) == 1  # the next tick sends nothing new
    assert again.cursor == tick.cursor


def test_a_run_failed_in_process_is_alerted_at_once_and_not_again_by_a_tick(
    instance: dg.DagsterInstance, alerts_on: Receiver
) -> None:
    """`churn run` without a daemon: the command sends the alert before it exits, and the
    sensor's own tick later (the daemon's, or the next command's) does not repeat it."""
    start = _tick(RUN_FAILURE_ALERT_SENSOR, instance, None)
    result = nightly_job.execute_in_process(instance=instance, raise_on_error=False)

    alert_run_failed_in_process(instance, result)

    (message,) = alerts_on.requests
    assert message["run_id"] == result.run_id
    assert message["summary"].endswith(
        "failed in load_warehouse: ValueError: the warehouse is gone"
    )
    _tick(RUN_FAILURE_ALERT_SENSOR, instance, start.cursor)
    assert len(alerts_on.requests) == 1


def test_a_run_failed_in_process_with_alerts_off_sends_nothing(
    instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    result = nightly_job.execute_in_process(instance=instance, raise_on_error=False)
    alert_run_failed_in_process(instance, result)
    assert receiver.requests == []


def test_a_receiver_answering_500_once_gets_the_retry(
    instance: dg.DagsterInstance, alerts_on: Receiver
) -> None:
    start = _tick(RUN_FAILURE_ALERT_SENSOR, instance, None)
    alerts_on.replies = [500]
    _failed_run(instance)
    tick = _tick(RUN_FAILURE_ALERT_SENSOR, instance, start.cursor)
    first, second = alerts_on.requests
    assert first == second and first["kind"] == "run_failure"
    assert tick.skip_message is None  # delivered on the retry


def test_a_receiver_that_never_answers_does_not_fail_the_tick(
    instance: dg.DagsterInstance, alerts_on: Receiver
) -> None:
    start = _tick(RUN_FAILURE_ALERT_SENSOR, instance, None)
    alerts_on.replies = [None, None]
    _failed_run(instance)
    tick = _tick(RUN_FAILURE_ALERT_SENSOR, instance, start.cursor)  # does not raise
    assert len(alerts_on.requests) == 2  # timed out, retried once, gave up
    assert len(tick.dagster_run_reactions or []) == 1  # handled: the cursor moved past it
    # Another failure while the receiver was just down: dropped without trying, so a burst
    # of failed runs cannot stack timeouts past the tick's limit.
    _failed_run(instance)
    later = _tick(RUN_FAILURE_ALERT_SENSOR, instance, tick.cursor)
    assert len(alerts_on.requests) == 2
    assert len(later.dagster_run_reactions or []) == 1


def test_with_alerts_off_the_run_sensor_skips_and_does_not_replay_later(
    instance: dg.DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = _tick(RUN_FAILURE_ALERT_SENSOR, instance, None)
    run_id = _failed_run(instance)
    off = _tick(RUN_FAILURE_ALERT_SENSOR, instance, start.cursor)
    assert off.skip_message == f"{ALERTS_OFF}; run {run_id} of nightly_job not alerted"
    monkeypatch.setenv("CHURN_ALERT_WEBHOOK_URL", receiver.url)
    _tick(RUN_FAILURE_ALERT_SENSOR, instance, off.cursor)
    assert receiver.requests == []


# --- the gate-failure sensor -------------------------------------------------------------


@pytest.fixture(scope="module")
def repository() -> dg.RepositoryDefinition:
    """The real code location: which checks are blocking comes from its check specs."""
    from churn_assets.definitions import defs

    return defs().get_repository_def()


def test_the_real_blocking_checks_and_the_loop_gates_are_watched(
    repository: dg.RepositoryDefinition,
) -> None:
    watched = watched_checks(repository)
    assert watched[GX_CHECK] is True
    assert watched[dg.AssetCheckKey(dg.AssetKey("churn_model"), "auc_gate_check")] is True
    assert watched[DRIFT_GATE] is False  # WARN, watched by name
    # a WARN check that gates nothing is not an alert
    assert dg.AssetCheckKey(dg.AssetKey("churn_model"), "reference_model_check") not in watched


def test_a_failed_gx_check_sends_one_alert_naming_the_asset_and_check(
    instance: dg.DagsterInstance, alerts_on: Receiver, repository: dg.RepositoryDefinition
) -> None:
    _report(instance, GX_CHECK, passed=False, description=GX_FAILURE, metadata={"failed": 1})
    tick = _tick(GATE_FAILURE_ALERT_SENSOR, instance, None, repository)
    (message,) = alerts_on.requests
    assert message == {
        "kind": "check_failure",
        "summary": f"Check training_data_quality on training_dataset failed (blocking): "
        f"{GX_FAILURE}",
        "asset": "training_dataset",
        "check": "training_data_quality",
        "run_id": None,  # reported outside a run
        "job": None,
        "url": f"{UI}/assets/training_dataset?view=checks",
        "details": {
            "severity": "ERROR",
            "blocking": True,
            "description": GX_FAILURE,
            "partition": None,
            "metadata": {"failed": 1},
        },
    }
    assert "sent 1 alert(s)" in (tick.skip_message or "")
    # next tick: nothing new; a second failure: exactly one more message
    again = _tick(GATE_FAILURE_ALERT_SENSOR, instance, tick.cursor, repository)
    assert len(alerts_on.requests) == 1
    _report(instance, GX_CHECK, passed=False, description=GX_FAILURE)
    _tick(GATE_FAILURE_ALERT_SENSOR, instance, again.cursor, repository)
    assert len(alerts_on.requests) == 2


def test_a_blocking_check_failing_in_a_run_links_to_that_run(
    instance: dg.DagsterInstance, alerts_on: Receiver
) -> None:
    repository = TINY.get_repository_def()
    start = _tick(GATE_FAILURE_ALERT_SENSOR, instance, None, repository)
    result = dg.materialize(
        [tiny_dataset, tiny_dataset_quality], instance=instance, raise_on_error=False
    )
    _tick(GATE_FAILURE_ALERT_SENSOR, instance, start.cursor, repository)
    (message,) = alerts_on.requests
    assert (message["asset"], message["check"]) == ("tiny_dataset", "tiny_dataset_quality")
    assert message["run_id"] == result.run_id
    assert message["job"] == result.dagster_run.job_name
    assert message["url"] == f"{UI}/runs/{result.run_id}"
    assert message["summary"].endswith("failed (blocking): 1 labelled customer (need 200)")


def test_the_drift_gate_alerts_with_its_values_and_passes_or_other_checks_do_not(
    instance: dg.DagsterInstance, alerts_on: Receiver
) -> None:
    start = _tick(GATE_FAILURE_ALERT_SENSOR, instance, None)
    _report(instance, DRIFT_GATE, passed=True, severity=dg.AssetCheckSeverity.WARN)
    unwatched = dg.AssetCheckKey(dg.AssetKey("churn_model"), "reference_model_check")
    _report(instance, unwatched, passed=False, severity=dg.AssetCheckSeverity.WARN)
    quiet = _tick(GATE_FAILURE_ALERT_SENSOR, instance, start.cursor)
    assert alerts_on.requests == []
    _report(
        instance,
        DRIFT_GATE,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"drift_share": 0.625, "threshold": 0.3, "report": dg.MetadataValue.md("# …")},
    )
    _tick(GATE_FAILURE_ALERT_SENSOR, instance, quiet.cursor)
    (message,) = alerts_on.requests
    assert message["summary"] == "Check drift_gate on feature_drift failed (WARN)"
    assert message["details"]["blocking"] is False
    assert message["details"]["metadata"] == {"drift_share": 0.625, "threshold": 0.3}


def test_the_first_tick_alerts_only_checks_failing_now(
    instance: dg.DagsterInstance, alerts_on: Receiver
) -> None:
    _report(instance, DRIFT_GATE, passed=False, severity=dg.AssetCheckSeverity.WARN)
    _report(instance, DRIFT_GATE, passed=True, severity=dg.AssetCheckSeverity.WARN)
    tick = _tick(GATE_FAILURE_ALERT_SENSOR, instance, None)
    assert alerts_on.requests == []  # failed, then passed: history, not an alert
    _tick(GATE_FAILURE_ALERT_SENSOR, instance, tick.cursor)
    assert alerts_on.requests == []


def test_with_a_dead_receiver_the_gate_sensor_drops_one_alert_and_defers_the_rest(
    instance: dg.DagsterInstance, alerts_on: Receiver, repository: dg.RepositoryDefinition
) -> None:
    start = _tick(GATE_FAILURE_ALERT_SENSOR, instance, None, repository)
    _report(instance, GX_CHECK, passed=False, description="first")
    _report(instance, DRIFT_GATE, passed=False, severity=dg.AssetCheckSeverity.WARN)
    alerts_on.replies = [None, None]  # the first message times out twice
    down = _tick(GATE_FAILURE_ALERT_SENSOR, instance, start.cursor, repository)
    assert "not delivered" in (down.skip_message or "")
    assert "1 left for the next tick" in (down.skip_message or "")
    _tick(GATE_FAILURE_ALERT_SENSOR, instance, down.cursor, repository)
    assert [m["check"] for m in alerts_on.requests] == [
        "training_data_quality",
        "training_data_quality",
        "drift_gate",
    ]


def test_with_alerts_off_the_gate_sensor_skips_and_does_not_replay_later(
    instance: dg.DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _report(instance, DRIFT_GATE, passed=False, severity=dg.AssetCheckSeverity.WARN)
    off = _tick(GATE_FAILURE_ALERT_SENSOR, instance, None)
    assert off.skip_message == f"{ALERTS_OFF}; 1 failed evaluation(s) not alerted"
    monkeypatch.setenv("CHURN_ALERT_WEBHOOK_URL", receiver.url)
    _tick(GATE_FAILURE_ALERT_SENSOR, instance, off.cursor)
    assert receiver.requests == []


# --- post_alert and the settings ---------------------------------------------------------


def test_a_4xx_is_not_retried_and_nothing_raises(receiver: Receiver) -> None:
    receiver.replies = [404]
    assert alerts.post_alert(receiver.url, {"summary": "x"}) is False
    assert len(receiver.requests) == 1
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert alerts.post_alert(f"http://127.0.0.1:{port}/", {"summary": "x"}) is False


def test_the_alert_settings_default_to_off_and_validate_the_scheme() -> None:
    settings = load_settings({})
    assert (settings.alert_webhook_url, settings.ui_url) == (None, "http://127.0.0.1:3000")
    on = load_settings(
        {"CHURN_ALERT_WEBHOOK_URL": "https://hooks.example/T0/abc", "CHURN_UI_URL": UI + "/"}
    )
    assert (on.alert_webhook_url, on.ui_url) == ("https://hooks.example/T0/abc", UI)
    for name in ("CHURN_ALERT_WEBHOOK_URL", "CHURN_UI_URL"):
        with pytest.raises(SettingsError, match=f"{name} must be an http:// or https:// URL"):
            load_settings({name: "ftp://hooks.example/abc"})


# --- credentials in the webhook URL (issue 24, case 3) -----------------------------------


def _with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


def test_a_webhook_url_with_credentials_is_sent_with_basic_auth(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Bug: urllib took "alice:s3cr3t..." for part of the host, so nothing was ever delivered.
    receiver.required_auth = basic_auth("alice", "s3cr3t@pw")
    url = _with_userinfo(receiver.url, "alice:s3cr3t%40pw")
    assert alerts.post_alert(url, {"summary": "x"}) is True
    assert receiver.requests == [{"summary": "x"}]
    assert receiver.authorizations == [receiver.required_auth]
    assert caplog.records == []


def test_a_refused_or_undeliverable_alert_logs_the_webhook_without_its_credentials(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.required_auth = basic_auth("alice", "right")
    port = receiver.url.split(":")[2].split("/")[0]
    with caplog.at_level(logging.WARNING, logger=alerts.__name__):
        # refused (401, not retried); then the URL (no port: urllib quoted the
        # password as the port); then a password whose "#" cuts the host short
        assert not alerts.post_alert(_with_userinfo(receiver.url, "alice:s3cr3tpw"), {})
        assert not alerts.post_alert("http://alice:s3cr3tpw@127.0.0.1:1/hooks/s3cret", {})
        assert not alerts.post_alert("http://alice:s3cr3tpw@127.0.0.1/hooks/s3cret", {})
        assert not alerts.post_alert(f"http://alice:pw#s3cr3tpw@127.0.0.1:{port}/x", {})
    assert len(receiver.authorizations) == 1  # a 401 is the receiver's answer: no retry
    logged = caplog.text
    assert f"not delivered to http://127.0.0.1:{port} after 1 attempt(s): HTTP 401" in logged
    for secret in ("s3cr3t", "'pw'", "hooks"):
        assert secret not in logged


def test_a_webhook_url_whose_host_a_password_cuts_short_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="has a port that is not a number") as caught:
        load_settings({"CHURN_ALERT_WEBHOOK_URL": "https://alice:pw#s3cr3t@hooks.example/x"})
    assert "s3cr3t" not in str(caught.value) and "pw" not in str(caught.value)
    on = load_settings({"CHURN_ALERT_WEBHOOK_URL": "https://alice:s3cr3t@hooks.example/x"})
    assert on.alert_webhook_url == "https://alice:s3cr3t@hooks.example/x"
