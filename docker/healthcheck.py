"""The image's HEALTHCHECK: probes whichever role this container runs.

One image serves every role, chosen by the command; PID 1 is tini and its arguments are
that command, so the role is read from /proc/1/cmdline:

    dagster api grpc ... -p PORT      -> `dagster api grpc-health-check -p PORT`
    dagster-webserver ... -p PORT     -> GET /server_info
    dagster-daemon run                -> `dagster-daemon liveness-check` (heartbeats in Postgres)
    churn serve ... --port PORT       -> GET /health
    mlflow server ... --port PORT     -> GET /health
    anything else (churn run, ...)    -> healthy: a one-off command has nothing to probe

Exit 0 = healthy, 1 = unhealthy (Docker's contract). docker/compose.yaml declares the
same probes per service explicitly; this file covers `docker run` and other runtimes.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path


def _command() -> list[str]:
    raw = Path("/proc/1/cmdline").read_bytes()
    args = [part.decode() for part in raw.split(b"\0") if part]
    if args and Path(args[0]).name == "tini":
        args = args[1:]
        if args and args[0] == "--":
            args = args[1:]
    return args


def _option(args: list[str], names: tuple[str, ...], default: str) -> str:
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                return args[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return default


def _http_ok(port: str, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def _runs_ok(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=25, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def healthy(args: list[str]) -> bool:
    names = [Path(arg).name for arg in args[:3]]
    if names[:3] == ["dagster", "api", "grpc"]:
        port = _option(args, ("-p", "--port"), "4000")
        return _runs_ok("dagster", "api", "grpc-health-check", "-p", port)
    if names[:1] == ["dagster-webserver"]:
        return _http_ok(_option(args, ("-p", "--port"), "3000"), "/server_info")
    if names[:2] == ["dagster-daemon", "run"]:
        return _runs_ok("dagster-daemon", "liveness-check")
    if names[:2] == ["churn", "serve"]:
        return _http_ok(_option(args, ("--port",), "8000"), "/health")
    if names[:2] == ["mlflow", "server"]:
        return _http_ok(_option(args, ("-p", "--port"), "5000"), "/health")
    return True


if __name__ == "__main__":
    sys.exit(0 if healthy(_command()) else 1)
