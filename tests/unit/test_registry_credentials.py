"""A tracking URI with ``user:password@`` (issue 24, case 4): the reachability probe asks the
server with the credentials MLflow's client sends, and ``churn status`` never prints them.

Regression: the probe took ``alice:pw@127.0.0.1`` for the host, so `churn status` said a
live server was unreachable, printing the password twice on the way.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from churn_assets.app.cli import main
from churn_assets.ml import tracking
from churn_assets.serving.model_store import ChampionHolder

PASSWORD = "s3cr3t@pw"  # an "@" too: percent-encoded in the URI, as its owner must
ENCODED = "s3cr3t%40pw"


@dataclass
class Registry:
    """A tracking server on 127.0.0.1 that wants basic auth ``alice``/:data:`PASSWORD`:
    ``/health`` and an empty registry, 401 without the credentials."""

    port: int = 0
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def uri(self, password: str = ENCODED) -> str:
        return f"http://alice:{password}@127.0.0.1:{self.port}"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    state = Registry()
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            state.seen.append((path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != expected:
                self._reply(401, b"")
            elif path == "/health":
                self._reply(200, b"OK")
            elif path.endswith("/model-versions/search"):
                self._reply(200, b'{"model_versions": []}')
            else:  # e.g. the champion alias: not set
                body = {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not found"}
                self._reply(404, json.dumps(body).encode())

        def _reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    state.port = server.server_address[1]
    yield state
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_reachable_asks_the_server_with_the_uris_credentials(registry: Registry) -> None:
    tracking.check_reachable(registry.uri())
    auth = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert registry.seen == [("/health", auth)]
    # the MLflow client sends the same header for the same URI: the probe tests what it will do
    assert tracking.latest_version(registry.uri()) is None
    assert {header for _, header in registry.seen} == {auth}


def test_check_reachable_sends_mlflows_credential_variables_when_the_uri_has_none(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    tracking.check_reachable(f"http://127.0.0.1:{registry.port}")


def test_refused_credentials_are_named_without_showing_them(registry: Registry) -> None:
    with pytest.raises(tracking.RegistryUnavailable, match="refused the credentials") as caught:
        tracking.check_reachable(registry.uri("wrong-pw"))
    assert f"http://alice:***@127.0.0.1:{registry.port}" in str(caught.value)
    assert "wrong-pw" not in str(caught.value)


def test_an_unreachable_server_is_reported_with_the_uri_masked() -> None:
    uri = f"http://alice:{ENCODED}@127.0.0.1:{_closed_port()}"
    with pytest.raises(tracking.RegistryUnavailable, match="unreachable") as caught:
        tracking.check_reachable(uri)
    message = str(caught.value)
    assert message.startswith("MLflow tracking server http://alice:***@127.0.0.1:")
    assert "s3cr3t" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_churn_status_reads_a_registry_behind_basic_auth_and_prints_no_password(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHURN_HOME", str(tmp_path))  # nothing loaded: no warehouse needed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri())
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert f"registry: churn-model at http://alice:***@127.0.0.1:{registry.port}" in result.output
    assert "latest_model: none" in result.output
    as_json = CliRunner().invoke(main, ["status", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["tracking_uri"] == registry.uri("***")
    for output in (result.output, as_json.output):
        assert "s3cr3t" not in output


def test_churn_status_with_an_unreachable_registry_prints_no_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHURN_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{ENCODED}@127.0.0.1:{_closed_port()}")
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: MLflow tracking server http://alice:***@127.0.0.1:")
    assert "s3cr3t" not in result.output


def test_the_scorers_refresh_errors_mask_the_registry_uri() -> None:
    # MLflow's own errors quote the tracking URI whole; /health shows the holder's last error.
    uri = f"http://alice:{ENCODED}@mlflow.example"

    def resolve() -> str | None:
        raise RuntimeError(f"API request to {uri}/api/2.0/mlflow/x failed with exception boom")

    def fetch(version: str, workdir: Path) -> Path:
        raise AssertionError("not reached")

    holder = ChampionHolder(resolve, fetch, registry_url=uri)
    assert holder.refresh() is False
    error = holder.state().last_error
    assert error is not None
    assert error.message == (
        "RuntimeError: API request to http://alice:***@mlflow.example/api/2.0/mlflow/x "
        "failed with exception boom"
    )


def test_ending_a_training_run_does_not_let_mlflow_print_the_tracking_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow prints "View run ... at: <tracking URI>" when a run ends, a password in the
    URI included (seen in a `churn run` log), unless told not to by its own variable."""
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    seen: list[str | None] = []

    class Client:
        def set_terminated(self, run_id: str, status: str) -> None:
            seen.append(os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"))

    tracking._end_run_quietly(Client(), "r1", "FINISHED")  # type: ignore[arg-type]
    assert seen == ["true"]
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ  # restored
