"""`churn demo --scenario drift`: period 1 model -> drifted data -> drift gate -> retrain ->
promotion decision, in process, with the same jobs and sensors the daemon runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner, Result
from mlflow.tracking import MlflowClient

from churn_assets import warehouse
from churn_assets.cli import main
from churn_assets.ml.champion import TAG_DECISION
from churn_assets.settings import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Result, Path]]:
    """A separate CHURN_HOME (its own embedded Postgres and MLflow store)."""
    home = tmp_path_factory.mktemp("drift")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHURN_HOME", str(home))
        mp.delenv("CHURN_RAW_DIR", raising=False)
        mp.setenv("GX_ANALYTICS_ENABLED", "false")
        result = CliRunner().invoke(main, ["demo", "--scenario", "drift"], catch_exceptions=False)
        yield result, home
    warehouse.stop_embedded(home / "pg")


@pytest.fixture
def home(story: tuple[Result, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    result, home = story
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("CHURN_HOME", str(home))
    return home


def test_drift_story_detects_drift_and_retrains(story: tuple[Result, Path], home: Path) -> None:
    output = story[0].output
    assert "promotion: v1: no champion yet" in output  # the first gated model: champion
    assert "drift gate FAILED" in output
    assert "launched training_job" in output
    assert "v2: " in output  # the retrained challenger got a decision


def test_drift_story_moves_the_alias_exactly_as_decided(home: Path) -> None:
    settings = load_settings()
    client = MlflowClient(settings.resolved_tracking_uri)
    v1, v2 = (client.get_model_version("churn-model", v) for v in ("1", "2"))
    assert v1.tags[TAG_DECISION] == "promoted"
    champion = str(client.get_model_version_by_alias("churn-model", "champion").version)
    assert champion == ("2" if v2.tags[TAG_DECISION] == "promoted" else "1")
    assert str(client.get_model_version_by_alias("churn-model", "challenger").version) == "2"
    # the decision is on record with both models' figures on the same rows
    assert v2.tags["promotion.challenger_version"] == "2"
    assert v2.tags["promotion.champion_version"] == "1"
    assert float(v2.tags["promotion.n_rows"]) > 0
    status = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    assert status["champion"]["version"] == champion
    assert status["latest_model"]["version"] == "2"
    promotion = status["latest_model"]["promotion"]
    assert promotion["decision"] == v2.tags[TAG_DECISION]
    assert promotion["compared_with"] == "1" and promotion["reason"]


def test_drift_story_shows_the_champion_history_in_dagster(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey("churn_champion"), limit=10).records
    decided = sorted(r.asset_materialization.metadata["challenger_version"].value for r in records)  # type: ignore[union-attr]
    assert decided == ["1", "2"]
