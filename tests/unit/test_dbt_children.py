"""A killed run leaves no dbt behind (issue 24, case 5).

Regression: `kill -9` of `churn run` during dbt left the `dbt build` child re-parented to
PID 1, writing the warehouse for ~10 s with no lock held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from churn_assets.lib import child_processes
from churn_assets.settings import DBT_PROJECT_DIR

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's"
)

# A process that starts dbt the way a run step does: the real DbtCli resource and
# dagster-dbt's own Popen call, with a stand-in `dbt` that only sleeps. It prints the
# dbt pid, then waits to be killed.
_RUN_STEP = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from churn_assets.defs.resources import DbtCli

    resource = DbtCli(project_dir=sys.argv[1], dbt_executable=sys.argv[2])
    invocation = resource.cli(["build"], raise_on_error=False, target_path=Path(sys.argv[3]))
    print(invocation.process.pid, flush=True)
    time.sleep(600)
    """
)


def _gone(pid: int) -> bool:
    """The process no longer runs (a zombie that PID 1 has yet to reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


@linux_only
def test_a_run_killed_with_sigkill_takes_its_dbt_child_with_it(tmp_path: Path) -> None:
    fake_dbt = tmp_path / "dbt"
    fake_dbt.write_text("#!/bin/sh\nexec sleep 600\n")
    fake_dbt.chmod(0o755)
    step = subprocess.Popen(
        [sys.executable, "-c", _RUN_STEP, str(DBT_PROJECT_DIR), str(fake_dbt), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    )
    dbt_pid = None
    try:
        assert step.stdout is not None and step.stderr is not None
        line = step.stdout.readline()
        if not line:
            step.wait(timeout=30)
            pytest.fail(f"the run step did not start dbt:\n{step.stderr.read()}")
        dbt_pid = int(line)
        assert not _gone(dbt_pid), "the stand-in dbt should run until its parent dies"

        step.send_signal(signal.SIGKILL)  # no Python runs on the way out
        step.wait(timeout=30)

        deadline = time.monotonic() + 30
        while not _gone(dbt_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(dbt_pid), f"dbt (pid {dbt_pid}) outlived the run that started it"
    finally:
        if step.poll() is None:
            step.kill()
            step.wait()
        if dbt_pid is not None and not _gone(dbt_pid):
            os.kill(dbt_pid, signal.SIGKILL)


def test_without_the_signal_children_start_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    # macOS and Windows have no parent-death signal: Popen gets the caller's preexec_fn back.
    monkeypatch.setattr(sys, "platform", "darwin")
    assert child_processes.die_with_parent(None) is None
    mine = print
    assert child_processes.die_with_parent(mine) is mine
    done = child_processes.DiesWithParentPopen([sys.executable, "-c", "pass"])
    assert done.wait(timeout=30) == 0


@linux_only
def test_the_callers_own_preexec_still_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    def own() -> None:
        marker.touch()

    child = child_processes.DiesWithParentPopen([sys.executable, "-c", "pass"], preexec_fn=own)
    assert child.wait(timeout=30) == 0
    assert marker.exists()
