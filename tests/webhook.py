"""A webhook receiver on 127.0.0.1 for the alert tests (``receiver`` fixture, tests/conftest.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """A webhook on 127.0.0.1: records each JSON body (and ``Authorization`` header), answers
    from ``replies`` (then 200); a ``None`` reply never answers (the client times out).
    With ``required_auth`` set, a request without that header gets a 401 (and is not
    recorded), as a webhook behind basic auth answers."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    replies: list[int | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    authorizations: list[str | None] = field(default_factory=list)
    required_auth: str | None = None


@contextmanager
def serve_receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/json"
            state.authorizations.append(self.headers.get("Authorization"))
            if state.required_auth and self.headers.get("Authorization") != state.required_auth:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="alerts"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            state.requests.append(json.loads(body))
            reply = state.replies.pop(0) if state.replies else 200
            if reply is None:
                state.release.wait(10)  # hang until the test ends
                return
            self.send_response(reply)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/s3cret"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
