"""Fixtures of the definition-level tests: sensors, checks and automation against a
temporary Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A new in-memory Dagster instance for each test. (On SQLite storage every reported
    event polled a file lock: ~90 ms each, 16 s of a 20 s automation test.)"""
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance
