"""The local metastore service's record (``churn_assets/infra/metastore.py``): a record
that no longer names a running service is not mistaken for one. Starting the service
itself needs a JVM: ``tests/spark/test_spark_cluster_demo.py`` starts, reuses and stops it."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from churn_assets.infra import metastore


def _record(directory: Path, pid: int, port: int) -> None:
    (directory / "service.json").write_text(json.dumps({"pid": pid, "port": port}))


def test_no_record_is_no_service(tmp_path: Path) -> None:
    assert metastore.running_url(tmp_path) is None
    assert not metastore.stop(tmp_path)


def test_a_recorded_pid_that_is_not_the_directorys_metastore_is_no_service(
    tmp_path: Path,
) -> None:
    # The service died and its pid went to another process (here: this test's), which
    # even listens on the recorded port: neither may be taken for the service, nor killed.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _record(tmp_path, os.getpid(), listener.getsockname()[1])
        assert metastore.running_url(tmp_path) is None
        assert not metastore.stop(tmp_path)
    assert not (tmp_path / "service.json").exists()  # the stale record went


def test_an_unreadable_record_is_no_service(tmp_path: Path) -> None:
    (tmp_path / "service.json").write_text("{not json")
    assert metastore.running_url(tmp_path) is None
