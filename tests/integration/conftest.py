"""Fixtures the scorer's integration tests share: the session demo's settings, rows,
champion holder and feature source, and a private registry (module scope: each module
that asks gets its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import Result
from mlflow.tracking import MlflowClient

from churn_assets.ml import tracking
from churn_assets.serving.features import WarehouseFeatureSource
from churn_assets.serving.model_store import ChampionHolder
from churn_assets.settings import Settings, load_settings
from churn_assets.tables.postgres.warehouse import PostgresWarehouse
from tests.integration.serving_support import Registry, build_registry


@pytest.fixture(scope="module")
def demo_settings(demo: tuple[Result, Path], churn_home: Path) -> Settings:
    result, _ = demo
    assert result.exit_code == 0, result.output
    # module scope runs before the autouse per-test env, so name CHURN_HOME explicitly
    return load_settings({"CHURN_HOME": str(churn_home)})


@pytest.fixture(scope="module")
def demo_model_dir(demo_settings: Settings) -> Path:
    """Version 1's training files (always the demo's own model)."""
    client = MlflowClient(demo_settings.resolved_tracking_uri)
    run_id = client.get_model_version(tracking.REGISTERED_MODEL_NAME, "1").tags["dagster_run_id"]
    return demo_settings.models_dir / run_id


@pytest.fixture(scope="module")
def rows(demo_settings: Settings, embedded_url: str) -> pd.DataFrame:
    return PostgresWarehouse(embedded_url).read_current_features()


@pytest.fixture(scope="module")
def holder(demo_settings: Settings) -> ChampionHolder:
    """The session champion, loaded from the demo's registry."""
    holder = ChampionHolder.from_mlflow(demo_settings.resolved_tracking_uri)
    assert holder.refresh(), holder.state().last_error
    return holder


@pytest.fixture(scope="module")
def source(embedded_url: str) -> Iterator[WarehouseFeatureSource]:
    source = WarehouseFeatureSource(embedded_url)
    yield source
    source.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Registry:
    return build_registry(tmp_path_factory.mktemp("serving_registry"), demo_model_dir)
