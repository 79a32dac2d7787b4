"""A tracking URI with a password (issue 24, case 4) in the Dagster UI: the MLflow resource's
config, its run links (asset metadata) and the promotion sensor's cursor never show it."""

from __future__ import annotations

import dagster as dg
import pytest

from churn_assets.defs.promotion import sensors
from churn_assets.defs.resources import MlflowResource, mlflow_resource

URI = "http://alice:s3cr3t@mlflow.example:5000"


def test_a_tracking_uri_with_a_password_reaches_the_resource_as_an_env_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", URI)
    resource = mlflow_resource()
    shown = resource.get_resource_definition().config_schema.default_value
    assert shown["tracking_uri"] == {"env": "MLFLOW_TRACKING_URI"}  # what the UI shows
    with dg.build_resources({"mlflow": resource}) as built:
        assert built.mlflow.tracking_uri == URI  # what the client uses


def test_a_tracking_uri_without_a_password_is_shown_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    shown = mlflow_resource().get_resource_definition().config_schema.default_value
    assert shown["tracking_uri"] == "http://mlflow.example:5000"


def test_run_links_mask_the_password() -> None:
    resource = MlflowResource(tracking_uri=URI)
    assert resource.run_link("3", "abc") == (
        "http://alice:***@mlflow.example:5000/#/experiments/3/runs/abc"
    )


def test_the_promotion_cursor_names_the_registry_without_its_password() -> None:
    key = sensors._registry_key(MlflowResource(tracking_uri=URI))
    assert key == "http://alice:***@mlflow.example:5000"
    # a rotated password is the same registry (same cursor entry, same run keys)
    assert key == sensors._registry_key(MlflowResource(tracking_uri=URI.replace("s3cr3t", "n3w")))
