"""The Spark engine's write lock: an exclusive ``flock`` on a file beside the metastore.

Spark has no advisory lock of its own. Until one lock holds for both engines (issue 26
item 5: Dagster's run queue, or a lock in the Dagster instance), the platform's writers on
Spark exclude each other with a file lock:

- **Where:** ``write.lock`` in the metastore directory (the catalog the writers share,
  through the local metastore service), or under ``$CHURN_HOME/spark`` when the metastore
  is a shared ``thrift://`` service.
- **Released with its process:** the kernel drops a ``flock`` when its file is closed, so a
  crashed run leaves no stale lock (as Postgres drops an advisory lock with its session).
  The file itself stays; its content (holder and since when) is only a label.
- **Per open file, not per process:** a second ``write_lock`` in the same process waits
  like any other writer (``flock``, not ``fcntl``'s POSIX locks, which a process shares).
- **Limits:** one machine. Processes on other machines (a cluster's driver elsewhere, a
  second ``CHURN_HOME`` on a shared metastore) do not see it, and ``flock`` on a network
  file system is not reliable. It guards the platform's own writers, not dbt or a
  person writing the same tables with another tool (neither does Postgres's lock).
- **Lost:** only if the file is deleted or replaced while held, which :meth:`still_held`
  notices (the open file is no longer the one at the path).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from churn_assets.infra import spark
from churn_assets.infra.warehouse import LockHolder, WarehouseLockLost, wait_for_lock
from churn_assets.settings import Settings

LOCK_FILE = "write.lock"


def lock_path(settings: Settings) -> Path:
    """The lock file of the catalog these settings name."""
    if spark.uses_local_metastore(settings):
        return Path(settings.spark_metastore) / LOCK_FILE
    return settings.home / "spark" / LOCK_FILE


@dataclass(frozen=True, eq=False)
class HeldFileLock:
    """The write lock as its holder sees it (a :class:`~churn_assets.tables.warehouse.HeldLock`)."""

    path: Path
    fd: int

    def still_held(self) -> bool:
        """Whether the locked file is still open and still the file at :attr:`path`."""
        try:
            held, current = os.fstat(self.fd), os.stat(self.path)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)

    def ensure_held(self, consequence: str) -> None:
        """Raise :class:`WarehouseLockLost` unless :meth:`still_held`."""
        if not self.still_held():
            raise WarehouseLockLost(
                f"lost the Spark warehouse's write lock ({self.path} was removed or "
                f"replaced): {consequence}"
            )


def _read_holder(fd: int) -> LockHolder:
    try:
        label = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        label = {}
    return LockHolder(
        str(label.get("name") or "an unnamed writer"), str(label.get("since") or "unknown")
    )


def lock_holder(path: Path) -> LockHolder | None:
    """Who holds the lock at ``path`` now (None: nobody)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def write_lock(
    path: Path,
    holder: str,
    timeout_seconds: float,
    on_wait: Callable[[LockHolder | None], None] = lambda _: None,
) -> Iterator[HeldFileLock]:
    """Hold the lock at ``path`` for the block; waits up to ``timeout_seconds`` (0: not at
    all), calling ``on_wait`` once with the holder, then raises :class:`WarehouseBusy`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:

        def take() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        wait_for_lock(
            take,
            lambda: _read_holder(fd),
            f"the Spark warehouse (lock {path})",
            timeout_seconds,
            on_wait,
        )
        since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"name": holder, "since": since}).encode(), 0)
        try:
            yield HeldFileLock(path, fd)
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
