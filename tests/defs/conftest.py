"""Fixtures of the definition-level tests: sensors, checks and automation against a
temporary Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A temporary Dagster instance (in-memory run storage, a temporary directory), new for
    each test."""
    with dg.instance_for_test() as instance:
        yield instance
