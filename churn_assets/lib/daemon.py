"""A real ``dagster-daemon`` on an instance, and the question "has it finished reacting?".

The monthly story (``churn demo --scenario drift``) runs under Dagster's own daemon: its
sensors, automation conditions and backfills decide every run. This module starts and
stops that daemon and answers when the platform is *at rest* after a delivery, by a
definite condition read from the instance, not by a quiet period:

    no run is queued or running, no backfill waits to submit one, and every sensor of the
    code location has finished a tick that *started after* that was first seen, and that
    tick requested nothing.

Every decider has then looked at the final state and decided nothing, so nothing more
will happen until new data arrives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.scheduler.instigation import (
    InstigatorStatus,
    InstigatorTick,
    InstigatorType,
    TickStatus,
)
from dagster._core.storage.dagster_run import FINISHED_STATUSES, NOT_FINISHED_STATUSES
from dagster._core.storage.tags import BACKFILL_ID_TAG, SENSOR_NAME_TAG

# `dagster-daemon` itself, with three loop intervals (constants in Dagster, not settings) set
# to the given seconds: the backfill daemon's (30 s), and the sensor and asset daemons' (5 s
# between looks at the sensors due). The story's months pass in seconds; each of its runs
# is asked for by one of those loops, and the automation turns a delivery's periods into a
# backfill that would otherwise wait up to 30 s to submit its run. A sensor's own
# ``minimum_interval_seconds`` still decides how often it ticks.
_DAEMON = """
import sys
import dagster._daemon.asset_daemon as asset_daemon
import dagster._daemon.controller as controller
import dagster._daemon.sensor as sensor
from dagster._daemon.cli import main

controller.DEFAULT_DAEMON_INTERVAL_SECONDS = {interval}
sensor.MIN_INTERVAL_LOOP_TIME = {interval}
asset_daemon.MIN_INTERVAL_LOOP_SECONDS = {interval}
sys.argv[0] = "dagster-daemon"
sys.exit(main())
"""


class DaemonError(RuntimeError):
    """The daemon died, or the platform was not at rest by the deadline."""


@dataclass
class Daemon:
    """A running ``dagster-daemon`` process and where its output goes."""

    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DaemonError(
                f"dagster-daemon exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextmanager
def running_daemon(
    dagster_home: Path,
    workspace: Path,
    env: Mapping[str, str],
    log: Path,
    loop_interval_seconds: int,
) -> Iterator[Daemon]:
    """Start ``dagster-daemon run -w workspace`` on the instance in ``dagster_home`` (created
    first: two processes creating its SQLite storage at once can leave two schema heads),
    and stop it (SIGTERM to its process group, SIGKILL after 30 s) on the way out."""
    with dg.DagsterInstance.from_config(str(dagster_home)):
        pass
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _DAEMON.format(interval=loop_interval_seconds),
             "run", "-w", str(workspace)],
            cwd=dagster_home,
            env={**os.environ, **env, "DAGSTER_HOME": str(dagster_home)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run processes stop with it
        )  # fmt: skip
    try:
        yield Daemon(process, log)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes], grace_seconds: float = 30) -> None:
    """SIGTERM the daemon's process group (the daemon, its code server, any run worker),
    and SIGKILL what is left of it after ``grace_seconds``; return once the group is gone."""
    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while _group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(process):
        _signal_group(process.pid, signal.SIGKILL)
        while _group_alive(process):
            time.sleep(0.2)


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    process.poll()  # reap the daemon itself once it exits, or it stays a zombie member
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


@dataclass
class Watch:
    """Follows the runs of an instance: reports each once it finishes, and tells when the
    platform is at rest (see the module docstring)."""

    instance: dg.DagsterInstance
    sensors: Sequence[str]
    reported: set[str] = field(default_factory=set)
    _quiet_since: float | None = None
    _runs_seen: int = -1

    def finished_runs(self) -> list[dg.DagsterRun]:
        """The runs that finished since the last call, oldest first."""
        runs = self.instance.get_runs(filters=dg.RunsFilter(statuses=list(FINISHED_STATUSES)))
        new = [run for run in reversed(runs) if run.run_id not in self.reported]
        self.reported.update(run.run_id for run in new)
        return new

    def at_rest(self) -> bool:
        """True once the condition of the module docstring holds."""
        runs = self.instance.get_runs_count()
        busy = bool(
            self.instance.get_runs(
                filters=dg.RunsFilter(statuses=list(NOT_FINISHED_STATUSES)), limit=1
            )
            or self.instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=1)
        )
        if busy or runs != self._runs_seen:
            self._runs_seen, self._quiet_since = runs, None if busy else time.time()
            return False
        if self._quiet_since is None:
            self._quiet_since = time.time()
            return False
        return all(_decided_nothing(tick) for tick in self._ticks_since(self._quiet_since))

    def _ticks_since(self, since: float) -> list[InstigatorTick | None]:
        """Per sensor, its first finished tick that started after ``since`` (None: none yet)."""
        states = {
            state.instigator_name: state
            for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if state.status in (InstigatorStatus.RUNNING, InstigatorStatus.DECLARED_IN_CODE)
        }
        ticks: list[InstigatorTick | None] = []
        for name in self.sensors:
            state = states.get(name)
            if state is None:  # not ticked yet by this daemon
                ticks.append(None)
                continue
            finished = [
                tick
                for tick in self.instance.get_ticks(
                    state.instigator_origin_id, state.selector_id, after=since
                )
                if tick.status != TickStatus.STARTED
            ]
            ticks.append(min(finished, key=lambda tick: tick.timestamp) if finished else None)
        return ticks


def _decided_nothing(tick: InstigatorTick | None) -> bool:
    return tick is not None and not tick.run_ids and not tick.requested_asset_materialization_count


def wait_for(
    condition: Callable[[], bool],
    daemon: Daemon,
    what: str,
    deadline_seconds: float,
    every: Callable[[], None] = lambda: None,
) -> None:
    """Poll ``condition`` (calling ``every`` between polls) until it holds; raise if the
    daemon dies, or past the deadline (a hang, not slowness: the deadline is generous)."""
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        every()
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise DaemonError(f"{what}: not after {deadline_seconds:.0f} s\n{daemon.log_tail()}")
        time.sleep(1)
    every()


def launched_by(run: dg.DagsterRun) -> str | None:
    """Which sensor (or automation sensor's backfill) asked for the run; None: a person."""
    if run.tags.get(SENSOR_NAME_TAG):
        return run.tags[SENSOR_NAME_TAG]
    if run.tags.get(BACKFILL_ID_TAG):
        return f"backfill {run.tags[BACKFILL_ID_TAG]}"
    return None
