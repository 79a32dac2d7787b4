"""Runs whose process died: a killed ``churn run`` does not leave its run ``STARTED`` forever.

``churn`` executes runs in its own process (``execute_in_process``). Killed with SIGKILL, or
by the OOM killer, it records nothing on its way out, and Dagster's run monitoring (which
would mark the run failed) watches only runs the daemon launched. So every in-process
launch is tagged with who ran it (host, pid, and the process's start time, which tells a
reused pid), and each ``churn`` command that launches runs first marks failed, saying why,
the runs of this instance that such a process left unfinished (issue 24, case 5).

A run whose process is alive is left alone (another ``churn run`` beside this one), and so
is one launched elsewhere: on another host, or by the daemon (no such tags: its own run
monitoring decides).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import RunsFilter

HOST_TAG = "churn/launcher_host"
PID_TAG = "churn/launcher_pid"
# The process's start time as the kernel counts it (Linux); absent elsewhere.
STARTED_TAG = "churn/launcher_started"
_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def launcher_tags() -> dict[str, str]:
    """The tags of a run this process executes in process: who to ask whether it still runs."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    started = _start_time(pid)
    if started is not None:
        tags[STARTED_TAG] = started
    return tags


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every unfinished run of ``instance`` that a process on this host launched
    in process and that process is gone; return one line per run marked."""
    host = socket.gethostname()
    marked = []
    for run in instance.get_runs(filters=RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: host})):
        if _alive(run.tags):
            continue
        pid = run.tags.get(PID_TAG, "?")
        instance.report_run_failed(
            run,
            f"marked failed by churn: the process that ran it in process (pid {pid} on {host}) "
            "ended without finishing it (killed or crashed)",
        )
        marked.append(
            f"run {run.run_id} ({run.job_name}) was left unfinished by pid {pid}, "
            "which is gone: marked failed"
        )
    return marked


def _alive(tags: Mapping[str, str]) -> bool:
    """Whether the process the tags name still runs (a pid that cannot be read: assume so)."""
    try:
        pid = int(tags[PID_TAG])
    except (KeyError, ValueError):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if _zombie(pid):
        return False
    started = tags.get(STARTED_TAG)
    now = _start_time(pid)
    return started is None or now is None or now == started


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces and parentheses of its own.
    return stat[stat.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None  # field 22


def _zombie(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] == "Z"
