"""The platform's own Hive metastore service, over the Derby database of a directory.

Why a service: an embedded Derby metastore admits one process at a time, and keeps admitting
only that one until its JVM exits (``docs/spark-notes.md``, measured). A Dagster run on Spark
is two processes at least: its Python steps hold a SparkSession in the run's process, and
each dbt step runs dbt (with a JVM of its own) in a subprocess. So when
``CHURN_SPARK_METASTORE`` is a directory, the platform runs one Hive metastore
(``org.apache.hadoop.hive.metastore.HiveMetaStore`` from pyspark's own jars) over that
directory's Derby database, and every session, Python's and dbt's, connects to it by thrift.
Only the service opens Derby.

Like the embedded Postgres (``infra/warehouse.py``): started on first use, one per directory
(a second ``start`` finds it and returns its URL), it outlives the command that started it,
so the next command and dbt reuse it; ``churn warehouse-stop`` stops it.

What the directory holds: ``metastore_db/`` (Derby), ``derby.log``, ``hive.log`` (the
service's log), ``service.out`` (the JVM's own output), ``service.json`` (pid and port of the
running service) and ``service.lock`` (held while one process starts or stops it, so two
commands starting at once start one service).

Limits: Hive 2.3's metastore has no bind-address setting, so the service listens on every
interface of the machine, on a port chosen free at start, without authentication; the
sessions reach it on 127.0.0.1. On a machine others can reach, keep that port behind a
firewall, or run a shared metastore and set ``CHURN_SPARK_METASTORE=thrift://host:port``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from churn_assets.infra.warehouse import WarehouseError

# Measured: 15 s on a quiet machine, ~30 s at a load average of 7-9 (docs/spark-notes.md).
START_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.5
_MAIN_CLASS = "org.apache.hadoop.hive.metastore.HiveMetaStore"
_SERVICE_FILE = "service.json"
_LOCK_FILE = "service.lock"
_OUT_FILE = "service.out"
_LOG_FILE = "hive.log"


@dataclass(frozen=True)
class Service:
    """A running metastore service: its JVM's pid and the port it listens on."""

    pid: int
    port: int

    @property
    def url(self) -> str:
        return f"thrift://127.0.0.1:{self.port}"


def start(
    directory: Path,
    warehouse_dir: str,
    java: str,
    jars: Path,
    timeout_seconds: float = START_TIMEOUT_SECONDS,
) -> str:
    """Start (or find running) the metastore service over the Derby database in ``directory``;
    returns its ``thrift://127.0.0.1:<port>`` URL.

    ``warehouse_dir`` is where the service puts a database created without a location (its
    ``default`` one): under ``CHURN_HOME`` rather than Hive's ``/user/hive/warehouse``.
    ``java`` runs ``jars`` (pyspark's: Hive 2.3 and Derby are among them). Waits until the
    service accepts connections; raises :class:`WarehouseError` with the end of its log when
    it exits first or does not listen within ``timeout_seconds``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with _held(directory):
        recorded = _recorded(directory)
        if recorded is not None:
            if _listening(recorded.port):
                return recorded.url
            _terminate(recorded.pid, STOP_TIMEOUT_SECONDS)  # alive but deaf: replaced
        port = _free_port(_last_port(directory))
        pid = _spawn(_command(directory, warehouse_dir, port, java, jars), directory)
        service = Service(pid, port)
        _wait_until_listening(service, directory, timeout_seconds)
        record = {"pid": pid, "port": port, "started": datetime.now(UTC).isoformat()}
        (directory / _SERVICE_FILE).write_text(json.dumps(record))
        return service.url


def running_url(directory: Path) -> str | None:
    """The URL of the service running over ``directory`` (None: none runs)."""
    service = _running(directory)
    return None if service is None else service.url


def stop(directory: Path, timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> bool:
    """Stop the service running over ``directory``, if any; returns whether one ran.

    SIGTERM first (the JVM runs its shutdown hooks; Derby recovers at the next start if it
    was mid-write), SIGKILL when it is still there after ``timeout_seconds``."""
    if not (directory / _SERVICE_FILE).exists():
        return False
    with _held(directory):
        service = _recorded(directory)
        if service is not None:
            _terminate(service.pid, timeout_seconds)
            # The port alone stays: the next start takes it again if it is free.
            (directory / _SERVICE_FILE).write_text(json.dumps({"port": service.port}))
        else:
            (directory / _SERVICE_FILE).unlink(missing_ok=True)
    return service is not None


def _running(directory: Path) -> Service | None:
    """The recorded service, if it runs and listens."""
    service = _recorded(directory)
    return service if service is not None and _listening(service.port) else None


def _recorded(directory: Path) -> Service | None:
    """The recorded service, if its JVM is still this directory's metastore."""
    try:
        record = json.loads((directory / _SERVICE_FILE).read_text())
        service = Service(int(record["pid"]), int(record["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return service if _is_service(service.pid, directory) else None


def _is_service(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is a live metastore JVM over ``directory`` (not a zombie, and not
    another process that reused the pid of one that is gone). Linux's ``/proc``."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    marker = f"-Dderby.system.home={directory}".encode()
    return state != "Z" and _MAIN_CLASS.encode() in command and marker in command


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _last_port(directory: Path) -> int | None:
    try:
        return int(json.loads((directory / _SERVICE_FILE).read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _free_port(preferred: int | None) -> int:
    """``preferred`` (the service's last port) if it is free, else any free port. The same
    port keeps the sessions' properties, hence dbt's parse state, the same across restarts.
    Free now: the service binds it seconds later, and another program could take it first
    (the start then fails, saying so in the log)."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise WarehouseError("no free port for the Hive metastore service")


def _command(directory: Path, warehouse_dir: str, port: int, java: str, jars: Path) -> list[str]:
    derby_url = f"jdbc:derby:;databaseName={directory / 'metastore_db'};create=true"
    return [
        java,
        # Without it the service dies at start: the asynchronous logger needs
        # com.lmax.disruptor, which is not among pyspark's jars.
        "-Dhive.async.log.enabled=false",
        f"-Dderby.system.home={directory}",  # derby.log here, not in the working directory
        f"-Dhive.log.dir={directory}",  # hive.log here, not in /tmp/<user>
        "-cp",
        str(jars / "*"),
        _MAIN_CLASS,
        "-p",
        str(port),
        "--hiveconf",
        f"javax.jdo.option.ConnectionURL={derby_url}",
        # What Spark sets for its own in-process metastore: create the schema on first use.
        "--hiveconf",
        "datanucleus.schema.autoCreateAll=true",
        "--hiveconf",
        "hive.metastore.schema.verification=false",
        "--hiveconf",
        f"hive.metastore.warehouse.dir={warehouse_dir}",
    ]


def _spawn(command: list[str], directory: Path) -> int:
    """Start ``command`` detached, in ``directory``: in a session of its own (a Ctrl-C of
    the command that started it does not reach it) and re-parented to init by the shell's
    ``&`` (nothing for this process to reap); returns its pid."""
    out = directory / _OUT_FILE
    script = 'cd "$1" && shift && exec "$@" </dev/null >>"$OUT" 2>&1 & echo $!'
    started = subprocess.run(
        ["/bin/sh", "-c", script, "sh", str(directory), *command],
        env={**os.environ, "OUT": str(out)},
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
        timeout=30,
    )
    return int(started.stdout.strip())


def _wait_until_listening(service: Service, directory: Path, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not _listening(service.port):
        if not _is_service(service.pid, directory):
            raise WarehouseError(
                f"the Hive metastore service over {directory} exited at start:\n"
                f"{_log_tail(directory)}"
            )
        if time.monotonic() >= deadline:
            _terminate(service.pid, STOP_TIMEOUT_SECONDS)
            raise WarehouseError(
                f"the Hive metastore service over {directory} did not listen on port "
                f"{service.port} within {timeout_seconds:g} s (stopped):\n{_log_tail(directory)}"
            )
        time.sleep(_POLL_SECONDS)


def _terminate(pid: int, timeout_seconds: float) -> None:
    """SIGTERM, then SIGKILL if ``pid`` still runs after ``timeout_seconds``; returns once
    it is gone (a zombie counts as gone: its parent, init, reaps it)."""
    for sig, wait in ((signal.SIGTERM, timeout_seconds), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _alive(pid):
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL_SECONDS)
        else:
            return
    raise WarehouseError(f"the Hive metastore service (pid {pid}) did not stop")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _log_tail(directory: Path, chars: int = 2000) -> str:
    """The end of the service's logs: its own (hive.log) and the JVM's output."""
    parts = []
    for name in (_LOG_FILE, _OUT_FILE):
        path = directory / name
        if path.exists():
            text = path.read_text(errors="replace").strip()
            if text:
                parts.append(f"--- {path}\n{text[-chars:]}")
    return "\n".join(parts) or "(no log written)"


@contextlib.contextmanager
def _held(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the directory's ``service.lock`` for the block: one process
    starts or stops the service at a time. A holder keeps it at most for its own start
    timeout, so waiting for it ends."""
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
