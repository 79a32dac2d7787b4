"""Promotion against a real MLflow registry (its own SQLite store): the sensor that
requests a decision per new version, and the ``churn_champion`` asset that makes it.

Versions are registered from the demo model's real files (ONNX, holdout rows) with the
gate results a test needs; the sensor is evaluated and the asset materialised with a real
Dagster instance.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mlflow.artifacts
import pytest
from click.testing import Result
from dagster._core.storage.tags import PRIORITY_TAG
from mlflow.tracking import MlflowClient

from churn_assets.defs.promotion import sensors
from churn_assets.defs.promotion.assets import churn_champion
from churn_assets.defs.promotion.sensors import PROMOTION_PRIORITY
from churn_assets.defs.resources import ChurnPolicy, MlflowResource
from churn_assets.ml import tracking
from churn_assets.ml.artifacts import CARD_FILE, HOLDOUT_FILE, ONNX_FILE, REFERENCE_FILE
from churn_assets.ml.champion import TAG_DECISION
from churn_assets.ml.export import sha256_file
from churn_assets.settings import load_settings

pytestmark = pytest.mark.integration

PASSED = {"holdout ROC AUC": {"passed": True}, "ONNX parity": {"passed": True}}


@pytest.fixture
def demo_model_dir(demo: tuple[Result, Path]) -> Path:
    settings = load_settings()
    client = MlflowClient(settings.resolved_tracking_uri)
    run_id = client.get_model_version("churn-model", "1").tags["dagster_run_id"]
    return settings.models_dir / run_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MlflowResource]:
    yield MlflowResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )


def _register(
    mlflow: MlflowResource, model_dir: Path, gates: dict[str, dict[str, bool]], sha: str | None
) -> str:
    experiment_id = mlflow.experiment_id()
    run_id = tracking.log_training_run(
        mlflow.tracking_uri,
        experiment_id,
        "test",
        tracking.TrainingRunLog(
            params={},
            metrics={},
            tags={},
            artifacts=(model_dir / HOLDOUT_FILE, model_dir / REFERENCE_FILE),
        ),
    )
    source = tracking.log_onnx_artifact(mlflow.tracking_uri, run_id, model_dir / ONNX_FILE)
    tags = {
        tracking.TAG_GATES: json.dumps(gates),
        tracking.TAG_ONNX_SHA256: sha or sha256_file(model_dir / ONNX_FILE),
    }
    return tracking.register_version(mlflow.tracking_uri, source, run_id, tags, "test")


def _evaluate(mlflow: MlflowResource, cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"mlflow": mlflow, "policy": ChurnPolicy()}
        )
        sensor = sensors.defs().get_sensor_def(sensors.PROMOTION_SENSOR)
        return sensor(context)  # type: ignore[return-value]


@dataclass(frozen=True)
class Decided:
    """One decision the promotion run reported (a materialisation when promoted)."""

    version: str
    promoted: bool
    reason: str
    materialised: bool


def _decide(mlflow: MlflowResource, version: str = "") -> list[Decided]:
    """Materialise churn_champion in process, as the run the sensor requests would."""
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [churn_champion],
            instance=instance,
            resources={"mlflow": mlflow, "policy": ChurnPolicy()},
            run_config={"ops": {"churn_champion": {"config": {"version": version}}}},
        )
        assert result.success
        decided = []
        for event in result.all_events:
            data = event.event_specific_data
            materialization = getattr(data, "materialization", None)
            record = materialization or getattr(data, "asset_observation", None)
            if record is None:
                continue
            meta = {key: getattr(value, "value", value) for key, value in record.metadata.items()}
            decided.append(
                Decided(
                    str(meta["challenger_version"]),
                    bool(meta["promoted"]),
                    str(meta["reason"]),
                    materialization is not None,
                )
            )
        return decided


def test_sensor_requests_one_promotion_run_per_new_version(
    store: MlflowResource, demo_model_dir: Path
) -> None:
    _register(store, demo_model_dir, PASSED, None)
    _register(store, demo_model_dir, PASSED, None)
    first = _evaluate(store)
    assert isinstance(first, dg.SensorResult)
    keys = [r.run_key or "" for r in first.run_requests or []]
    assert [key.split("@")[0] for key in keys] == ["promote-v1", "promote-v2"]
    assert first.run_requests[0].run_config == {  # type: ignore[index]
        "ops": {"churn_champion": {"config": {"version": "1"}}}
    }
    # Dequeued before the automation's runs (priority 0), which serve whatever is champion.
    assert {r.tags[PRIORITY_TAG] for r in first.run_requests or []} == {str(PROMOTION_PRIORITY)}
    assert tracking.alias_version(store.tracking_uri, "champion") is None  # nothing decided
    again = _evaluate(store, first.cursor)
    assert isinstance(again, dg.SkipReason)
    assert "no undecided version of churn-model after v2" in (again.skip_message or "")


def test_a_sensor_tick_never_downloads_a_model(
    store: MlflowResource, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The decision (downloads, scoring, bootstrap) belongs in a run; a tick only lists.
    _register(store, demo_model_dir, PASSED, None)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a sensor tick downloaded an artifact")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", refuse)
    result = _evaluate(store)
    assert isinstance(result, dg.SensorResult)
    assert [(r.run_key or "").split("@")[0] for r in result.run_requests or []] == ["promote-v1"]


def test_first_gated_version_becomes_champion_and_is_decided_once(
    store: MlflowResource, demo_model_dir: Path
) -> None:
    _register(store, demo_model_dir, PASSED, None)
    (decided,) = _decide(store, "1")
    assert decided.promoted and decided.materialised  # the champion changed
    assert tracking.alias_version(store.tracking_uri, "champion") == "1"
    # decided once: a second run for the same version (a retry, the UI) decides nothing
    assert _decide(store, "1") == []
    assert _decide(store) == []


@pytest.mark.parametrize(
    ("gates", "sha", "reason"),
    [
        # failed its AUC gate: never promoted, whatever its AUC
        ({"holdout ROC AUC": {"passed": False}}, None, "failed gate(s): holdout ROC AUC"),
        # gates passed, but the file is not the one that passed them
        (PASSED, "0" * 64, "does not match the sha256 it was gated with"),
        # no gate results at all (e.g. registered by hand)
        ({}, None, "no gate results recorded"),
    ],
)
def test_a_version_that_did_not_pass_its_gates_is_never_promoted(
    store: MlflowResource,
    demo_model_dir: Path,
    gates: dict[str, dict[str, bool]],
    sha: str | None,
    reason: str,
) -> None:
    _register(store, demo_model_dir, gates, sha)
    (decided,) = _decide(store)
    assert not decided.promoted and not decided.materialised  # observed, not materialised
    assert reason in decided.reason
    assert tracking.alias_version(store.tracking_uri, "champion") is None
    version = MlflowClient(store.tracking_uri).get_model_version("churn-model", "1")
    assert version.tags[TAG_DECISION] == "kept"


def test_an_identical_challenger_does_not_replace_the_champion(
    store: MlflowResource, demo_model_dir: Path
) -> None:
    _register(store, demo_model_dir, PASSED, None)
    _decide(store)
    _register(store, demo_model_dir, PASSED, None)
    (decided,) = _decide(store, "2")
    assert not decided.promoted
    assert "required gain 0.010" in decided.reason
    assert tracking.alias_version(store.tracking_uri, "champion") == "1"
    assert tracking.alias_version(store.tracking_uri, "challenger") == "2"


def _onnx_files_of(mlflow: MlflowResource, version: str, artifacts: Path) -> list[Path]:
    run_id = MlflowClient(mlflow.tracking_uri).get_model_version("churn-model", version).run_id
    files = [path for path in artifacts.rglob("*.onnx") if run_id in path.parts]
    assert files, f"no ONNX file of v{version} under {artifacts}"
    return files


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        # bytes that are not a model: onnxruntime cannot load it, and the sha256 differs
        ("corrupt", "ONNX file does not match the sha256 it was gated with"),
        # the file is gone from the artifact store
        ("delete", "champion unusable: v1: "),
    ],
)
def test_an_unusable_champion_is_replaced_by_a_gated_challenger(
    store: MlflowResource, demo_model_dir: Path, tmp_path: Path, damage: str, problem: str
) -> None:
    # Regression (issue 10.4): a corrupted or deleted champion ONNX made every later
    # promotion crash (InvalidProtobuf / "Failed to download artifacts").
    _register(store, demo_model_dir, PASSED, None)
    _decide(store)
    assert tracking.alias_version(store.tracking_uri, "champion") == "1"
    for path in _onnx_files_of(store, "1", tmp_path / "artifacts"):
        if damage == "corrupt":
            path.write_bytes(b"not a model")
        else:
            path.unlink()
    _register(store, demo_model_dir, PASSED, None)

    (decided,) = _decide(store, "2")

    assert decided.promoted
    assert "champion unusable: v1" in decided.reason
    assert problem in decided.reason
    assert tracking.alias_version(store.tracking_uri, "champion") == "2"
    version = MlflowClient(store.tracking_uri).get_model_version("churn-model", "2")
    assert version.tags["promotion.champion_version"] == "1"
    assert version.tags[TAG_DECISION] == "promoted"

    # The rollout history: v1 from its promotion until v2's, v2 since then, and why.
    first, second = tracking.champion_history(store.tracking_uri)
    assert (first["version"], first["replaced"], second["version"], second["replaced"]) == (
        "1",
        None,
        "2",
        "1",
    )
    assert first["since"] is not None and first["since"] <= second["since"]
    assert first["until"] == second["since"] and second["until"] is None
    assert "champion unusable: v1" in second["reason"]
    # ... which the new champion's card ends with
    card = Path(
        mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path=CARD_FILE, dst_path=str(tmp_path / "card"),
            tracking_uri=store.tracking_uri,
        )
    ).read_text()  # fmt: skip
    section = card.split("## Rollout history", 1)[1]
    assert f"| v1 | {first['since']} | {second['since']} | none |" in section
    assert f"| v2 | {second['since']} | now | v1 | champion unusable: v1" in section


def test_unreachable_registry_makes_the_sensor_skip_with_a_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _evaluate(MlflowResource(tracking_uri=f"http://127.0.0.1:{port}"))
    assert isinstance(result, dg.SkipReason)
    assert (result.skip_message or "").startswith("registry unreachable, nothing requested")


def test_sensor_skips_before_anything_was_ever_registered(tmp_path: Path) -> None:
    # Regression guard: on a fresh CHURN_HOME the daemon ticks before any training; reading
    # the not-yet-created SQLite store must not create it or fail.
    uri = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    result = _evaluate(MlflowResource(tracking_uri=uri))
    assert isinstance(result, dg.SkipReason)
    assert "no model registered yet" in (result.skip_message or "")
    assert not (tmp_path / "none").exists()


def test_the_cursor_and_run_keys_are_per_registry(
    store: MlflowResource, demo_model_dir: Path
) -> None:
    # The same instance pointed at another MLflow store must not take that store's v1 for
    # a v1 it already decided (regression: a second store's first model was never decided).
    _register(store, demo_model_dir, PASSED, None)
    for cursor in (json.dumps({"sqlite:///elsewhere.db": 5}), json.dumps({"last_version": 5})):
        result = _evaluate(store, cursor)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.run_requests or []
        assert request.run_key and request.run_key.startswith("promote-v1@")
        assert json.loads(result.cursor or "{}")[store.tracking_uri] == 1
