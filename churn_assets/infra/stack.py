"""The production topology, natively: separate processes, as docker/compose.yaml runs them.

One Postgres server holds three databases (``warehouse``, ``dagster``, ``mlflow``); then
``mlflow server`` (Postgres backend, local artifact root), ``dagster api grpc`` (the code
server), ``dagster-webserver`` and ``dagster-daemon`` (both talk to the code server over
gRPC, instance from ``docker/dagster.yaml``), and the scorer (``churn serve``). The commands
and environment variables are the ones the compose file uses; only hosts differ (loopback
and a unix socket instead of service names).

No Dagster import here: this module only starts and stops processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from churn_assets.infra import warehouse
from churn_assets.settings import PROJECT_ROOT

DATABASES = ("warehouse", "dagster", "mlflow")
STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """A stack process did not come up; the message carries the tail of its log."""


@dataclass(frozen=True)
class Stack:
    """Where everything listens, and the processes to stop."""

    root: Path
    warehouse_url: str
    mlflow_url: str
    webserver_url: str
    scorer_url: str
    grpc_port: int
    pids: dict[str, int]

    def env(self) -> dict[str, str]:
        """The environment a client (or a test) uses to reach this stack."""
        return _environment(self.root, self.warehouse_url, self.mlflow_url)


def up(root: Path, *, sensor_interval_seconds: int = 30, scorer: bool = True) -> Stack:
    """Start every process under ``root`` and wait until each answers its health check.

    ``scorer=False`` leaves the scorer for :func:`start_scorer`: it serves the champion, so
    on an empty registry it has nothing to load until a model has been promoted.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    admin_url = warehouse.start_embedded(root / "pg")
    params = warehouse.parse_url(admin_url)
    for name in DATABASES:
        warehouse.ensure_database(admin_url, name)
    warehouse_url = f"postgresql://{params.user}@/warehouse?host={params.host}"
    ports = {name: _free_port() for name in ("mlflow", "grpc", "webserver", "scorer")}
    mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"
    dagster_home = root / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    # The production instance config, with two local differences: the container's paths
    # point at this root, and storage takes one URL because the embedded server listens on
    # a unix socket only, which dagster-postgres' host/port fields cannot express.
    instance = yaml.safe_load(
        (PROJECT_ROOT / "docker" / "dagster.yaml")
        .read_text()
        .replace("/opt/dagster/home", str(dagster_home))
    )
    instance["storage"]["postgres"] = {"postgres_url": {"env": "DAGSTER_POSTGRES_URL"}}
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
    (dagster_home / "workspace.yaml").write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {ports['grpc']}\n      location_name: churn_assets\n"
    )
    env = {
        **_environment(root, warehouse_url, mlflow_url),
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_POSTGRES_USER": params.user,
        "DAGSTER_POSTGRES_PASSWORD": params.password,
        "DAGSTER_POSTGRES_HOST": params.host,
        "DAGSTER_POSTGRES_PORT": str(params.port),
        "DAGSTER_POSTGRES_DB": "dagster",
        "DAGSTER_POSTGRES_URL": f"postgresql+psycopg2://{params.user}@/dagster?host={params.host}",
        "CHURN_SENSOR_INTERVAL_SECONDS": str(sensor_interval_seconds),
        # MLflow 3's server would start three job consumers (huey, ~250 MB each) for its
        # GenAI jobs; the registry and tracking the platform uses need none of them.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    bin_dir = Path(sys.executable).parent
    mlflow_backend = f"postgresql+psycopg2://{params.user}@/mlflow?host={params.host}"
    commands = {
        "mlflow": [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            mlflow_backend,
            "--artifacts-destination",
            str(root / "mlartifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["mlflow"]),
            "--workers",
            "1",
        ],
        "code": [
            str(bin_dir / "dagster"),
            "api",
            "grpc",
            "-m",
            "churn_assets.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(ports["grpc"]),
        ],
        "webserver": [
            str(bin_dir / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(ports["webserver"]),
            "-w",
            str(dagster_home / "workspace.yaml"),
        ],
        "daemon": [
            str(bin_dir / "dagster-daemon"),
            "run",
            "-w",
            str(dagster_home / "workspace.yaml"),
        ],
        "scorer": [
            str(bin_dir / "churn"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["scorer"]),
            "--poll-seconds",
            "2",
            "--wait-for-champion",
        ],
    }
    pids: dict[str, int] = {}
    (root / "commands.json").write_text(json.dumps({"scorer": commands["scorer"], "env": env}))
    stack = Stack(
        root,
        warehouse_url,
        mlflow_url,
        f"http://127.0.0.1:{ports['webserver']}",
        f"http://127.0.0.1:{ports['scorer']}",
        ports["grpc"],
        pids,
    )
    try:
        # Neither needs the other to start: the code server loads the code (~15 s) while
        # MLflow creates its tables.
        pids["mlflow"] = _spawn("mlflow", commands["mlflow"], env, root)
        pids["code"] = _spawn("code", commands["code"], env, root)
        _wait_http(f"{mlflow_url}/health", root / "logs" / "mlflow.log", 120)
        _wait_grpc(ports["grpc"], env, root / "logs" / "code.log", 120)
        pids["webserver"] = _spawn("webserver", commands["webserver"], env, root)
        pids["daemon"] = _spawn("daemon", commands["daemon"], env, root)
        _wait_http(f"{stack.webserver_url}/server_info", root / "logs" / "webserver.log", 120)
        if scorer:
            _start(stack, commands["scorer"], env)
    except BaseException:
        down(root, pids)
        raise
    (root / STATE_FILE).write_text(json.dumps({"pids": pids}))
    return stack


def start_scorer(stack: Stack) -> str:
    """Start the scorer of a running stack (same command and environment as ``up``)."""
    saved = json.loads((stack.root / "commands.json").read_text())
    _start(stack, saved["scorer"], saved["env"])
    (stack.root / STATE_FILE).write_text(json.dumps({"pids": stack.pids}))
    return stack.scorer_url


def _start(stack: Stack, command: list[str], env: dict[str, str]) -> None:
    stack.pids["scorer"] = _spawn("scorer", command, env, stack.root)
    _wait_http(f"{stack.scorer_url}/health", stack.root / "logs" / "scorer.log", 120)


def down(root: Path, pids: dict[str, int] | None = None) -> list[str]:
    """Stop every stack process (newest first) and the Postgres server; returns their names."""
    if pids is None:
        state = root / STATE_FILE
        pids = json.loads(state.read_text())["pids"] if state.exists() else {}
    stopped = []
    for name, pid in reversed(list(pids.items())):
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(name)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 20
    for pid in pids.values():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    if warehouse.stop_embedded(root / "pg"):
        stopped.append("postgres")
    (root / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _environment(root: Path, warehouse_url: str, mlflow_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CHURN_HOME": str(root / "churn_home"),
        "CHURN_WAREHOUSE_URL": warehouse_url,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def _spawn(name: str, command: list[str], env: dict[str, str], root: Path) -> int:
    log = (root / "logs" / f"{name}.log").open("ab")
    process = subprocess.Popen(
        command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return process.pid


def _wait_http(url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise StackError(f"{url} did not answer within {timeout:.0f} s:\n{_tail(log)}")


def _wait_grpc(port: int, env: dict[str, str], log: Path, timeout: float) -> None:
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    deadline = time.monotonic() + timeout
    # The server listens only once the code is loaded (~15 s): until then a cheap connect,
    # not a health-check process (it imports dagster, ~2 s of CPU each) every second.
    while time.monotonic() < deadline and not _listening(port):
        time.sleep(0.2)
    while time.monotonic() < deadline:
        check = subprocess.run(
            [dagster, "api", "grpc-health-check", "-p", str(port)],
            env=env,
            capture_output=True,
            check=False,
        )
        if check.returncode == 0:
            return
        time.sleep(1)
    raise StackError(
        f"code server on port {port} not healthy within {timeout:.0f} s:\n{_tail(log)}"
    )


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    # Stopped by the process that started it (`up` then `down` in one process, as in the
    # tests), a process stays a zombie until reaped, and signal 0 still finds a zombie:
    # `down` then waited its whole 20 s for processes long gone. Reap our own children first.
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child (`churn stack down` from another shell): init reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
