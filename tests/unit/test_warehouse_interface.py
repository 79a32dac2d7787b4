"""The warehouse interface and its implementations agree, operation by operation, so a
second engine (Spark) fills the same contract: what mypy checks where an implementation is
returned as a ``Warehouse``, said once as a test any implementation can be added to."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from churn_assets.settings import load_settings
from churn_assets.tables.engines import open_warehouse
from churn_assets.tables.postgres.online_predictions import PostgresPredictionLogWriter
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from churn_assets.tables.spark.warehouse import SparkWarehouse
from churn_assets.tables.warehouse import PredictionLogWriter, Warehouse


def _operations(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if callable(member) and not name.startswith("_")
    }


@pytest.mark.parametrize(
    ("protocol", "implementation"),
    [
        (Warehouse, PostgresWarehouse),
        (Warehouse, SparkWarehouse),  # no log writer: the log stays on Postgres
        (PredictionLogWriter, PostgresPredictionLogWriter),
    ],
)
def test_an_implementation_has_every_operation_with_the_interfaces_parameters(
    protocol: type, implementation: type
) -> None:
    operations = _operations(protocol)
    assert len(operations) >= 3  # guards the walk itself
    for name, signature in operations.items():
        assert hasattr(implementation, name), f"{implementation.__name__} lacks {name}"
        implemented = inspect.signature(getattr(implementation, name))
        assert list(implemented.parameters) == list(signature.parameters), name
        defaults = [p.default is inspect.Parameter.empty for p in signature.parameters.values()]
        assert [
            p.default is inspect.Parameter.empty for p in implemented.parameters.values()
        ] == defaults, f"{name}: optional parameters differ"


def test_the_engine_setting_chooses_the_implementation_without_starting_spark(
    tmp_path: Path,
) -> None:
    settings = load_settings({"CHURN_HOME": str(tmp_path), "CHURN_ENGINE": "spark"})
    chosen = open_warehouse(settings)
    assert isinstance(chosen, SparkWarehouse)
    assert not (tmp_path / "spark").exists()  # no session, no metastore: nothing started
