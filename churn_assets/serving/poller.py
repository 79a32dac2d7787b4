"""One background loop for what the scorer follows: the champion alias and the feature table."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Poller:
    """Calls ``refresh`` every ``seconds`` in a daemon thread, from :meth:`start` until
    :meth:`stop`. ``refresh`` records its own failures; anything that still escapes is
    logged and the loop goes on (a poller that dies quietly would freeze what it follows)."""

    def __init__(self, refresh: Callable[[], object], seconds: float, name: str) -> None:
        if seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {seconds}")
        self.seconds = seconds
        self._refresh = refresh
        self._name = name
        self._lock = threading.Lock()  # guards _thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a no-op while it runs)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name=f"{self._name.replace(' ', '-')}-poller", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and wait for it (a refresh in progress finishes first)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("%s poller did not stop within %.0f s", self._name, timeout)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self._refresh()
            except Exception:  # refresh records its own errors; this only guards the thread
                log.exception("%s poll failed", self._name)
