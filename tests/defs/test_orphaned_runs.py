"""A run whose process was killed does not stay STARTED (issue 24, case 5).

Regression: after `kill -9` of `churn run`, its run stayed STARTED in the instance forever;
Dagster's run monitoring watches only runs the daemon launched.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from churn_assets.lib.orphaned_runs import (
    HOST_TAG,
    PID_TAG,
    STARTED_TAG,
    fail_orphaned_runs,
    launcher_tags,
)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: nobody has this pid now
    return child.pid


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    run = DagsterRun(
        job_name="churn_pipeline",
        run_id=make_new_run_id(),
        status=dg.DagsterRunStatus.STARTED,
        tags=tags,
    )
    instance.add_run(run)
    return run.run_id


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def test_a_started_run_whose_process_is_gone_is_marked_failed_saying_why(
    instance: dg.DagsterInstance,
) -> None:
    dead = _dead_pid()
    orphan = _started_run(instance, {HOST_TAG: socket.gethostname(), PID_TAG: str(dead)})

    lines = fail_orphaned_runs(instance)

    assert _status(instance, orphan) == dg.DagsterRunStatus.FAILURE
    assert lines == [
        f"run {orphan} (churn_pipeline) was left unfinished by pid {dead}, which is gone: "
        "marked failed"
    ]
    (failure,) = instance.all_logs(orphan, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure.dagster_event is not None
    why = failure.dagster_event.message or ""
    assert f"pid {dead} on {socket.gethostname()}" in why and "killed or crashed" in why
    assert fail_orphaned_runs(instance) == []  # once


def test_runs_of_a_live_process_or_launched_elsewhere_are_left_alone(
    instance: dg.DagsterInstance,
) -> None:
    dead = str(_dead_pid())
    alive = _started_run(instance, launcher_tags())  # this process: another churn run
    elsewhere = _started_run(instance, {HOST_TAG: "another-host", PID_TAG: dead})
    by_the_daemon = _started_run(instance, {})  # its own run monitoring decides

    assert fail_orphaned_runs(instance) == []

    for run_id in (alive, elsewhere, by_the_daemon):
        assert _status(instance, run_id) == dg.DagsterRunStatus.STARTED


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start times from /proc")
def test_a_reused_pid_does_not_keep_a_dead_run_started(instance: dg.DagsterInstance) -> None:
    # Same pid (this process's), but the process that ran it started at another time.
    tags = {**launcher_tags(), STARTED_TAG: "1"}
    orphan = _started_run(instance, tags)

    fail_orphaned_runs(instance)

    assert _status(instance, orphan) == dg.DagsterRunStatus.FAILURE


# A run executed in process, with the tags `churn run` gives its launches, killed with
# SIGKILL mid-step: what the start-up check finds after a real `kill -9`.
_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    from churn_assets.lib.orphaned_runs import launcher_tags

    @dg.op
    def long_step() -> None:
        print("running", flush=True)
        time.sleep(600)

    @dg.job
    def long_job() -> None:
        long_step()

    instance = dg.DagsterInstance.from_config(sys.argv[1])
    long_job.execute_in_process(instance=instance, tags=launcher_tags())
    """
)


def test_a_run_killed_mid_step_is_failed_by_the_next_start_up(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    )
    try:
        assert child.stdout is not None and child.stderr is not None
        while (line := child.stdout.readline()) and "running" not in line:
            pass
        assert line, f"the run did not start:\n{child.stderr.read()}"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # what the kill leaves
        assert run.tags[PID_TAG] == str(child.pid)

        fail_orphaned_runs(instance)

        assert _status(instance, run.run_id) == dg.DagsterRunStatus.FAILURE
