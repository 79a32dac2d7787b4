"""Connection guards below the ASGI app: a deadline for each request's headers, and room
for many open sockets.

uvicorn times out a kept-alive connection only while it sends nothing at all after a
response (``timeout_keep_alive``: any byte cancels that timer), and a new connection not at
all, whichever HTTP parser it uses. A client that connects and sends nothing, or a request
line and half its headers, so holds a file descriptor and the server's state for it until
it goes away. The protocols here arm a timer when a connection opens and whenever it waits
for its next request, cancel it when a request's headers are complete, and close the
connection, unanswered, when it fires. A slow *body* is not timed here: the app is
already reading it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import resource
from typing import ClassVar, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from churn_assets.limits import DEFAULT_HEADER_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

HttpParser = Literal["auto", "h11", "httptools"]


class _Deadline:
    """Closes a transport unless cancelled within ``seconds`` of the last :meth:`arm`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, transport: asyncio.BaseTransport) -> None:
        self.cancel()
        self._timer = self._loop.call_later(self._seconds, self._expire, transport)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        self._timer = None
        if not transport.is_closing():
            transport.close()


class _HeadersDue(asyncio.Protocol):
    """The deadline, for a uvicorn HTTP protocol listed after it among the bases: armed when
    a connection opens and whenever it waits for its next request; the parser-specific
    subclass cancels it once a request's headers are complete."""

    header_timeout: ClassVar[float] = DEFAULT_HEADER_TIMEOUT_SECONDS
    # Set by the uvicorn protocol this is mixed into.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    timeout_keep_alive_task: asyncio.TimerHandle | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._deadline = _Deadline(self.loop, self.header_timeout)
        self._deadline.arm(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]  # the uvicorn protocol's
        if self.timeout_keep_alive_task is not None:  # waiting for the next request
            self._deadline.arm(self.transport)


class H11HeaderTimeout(_HeadersDue, H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers were parsed
            self._deadline.cancel()


PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"h11": H11HeaderTimeout}

if importlib.util.find_spec("httptools") is not None:  # uvicorn's choice when installed
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeaderTimeout(_HeadersDue, HttpToolsProtocol):
        """uvicorn's httptools protocol with a deadline for each request's headers."""

        def on_headers_complete(self) -> None:
            self._deadline.cancel()
            super().on_headers_complete()

    PROTOCOLS["httptools"] = HttpToolsHeaderTimeout


def header_timeout_protocol(
    seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS, parser: HttpParser = "auto"
) -> type[asyncio.Protocol]:
    """The HTTP/1.1 protocol class to pass as uvicorn's ``http=``: ``parser`` ("auto" picks
    httptools when installed, else h11, as uvicorn does), closing a connection that has not
    sent a complete request line and headers ``seconds`` after it opened or after its last
    response."""
    if not 0 < seconds < math.inf:  # also refuses nan
        raise ValueError(f"header timeout must be a finite number of seconds > 0, got {seconds}")
    if parser == "auto":
        parser = "httptools" if "httptools" in PROTOCOLS else "h11"
    base = PROTOCOLS[parser]
    return type(base.__name__, (base,), {"header_timeout": float(seconds)})


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the limit.

    Every connection holds a file descriptor; a common soft limit of 1,024 is reached by
    ~1,000 held connections, and then uvicorn resets new ones (it does not crash, but
    serves no one) until some close. The hard limit is usually far higher.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. a hard limit above the kernel's nr_open
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    log.info("open-file limit raised from %d to %d", soft, hard)
    return hard
