"""MLflow tracking and registry, as plain functions (no Dagster).

Every function takes the tracking URI explicitly and uses an ``MlflowClient`` bound to it,
never MLflow's process-global "active run", so two assets in one process cannot log into
each other's runs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from churn_assets import schema
from churn_assets.urls import mask_secrets, mask_url

REGISTERED_MODEL_NAME = schema.REGISTERED_MODEL_NAME
EXPERIMENT_NAME = schema.EXPERIMENT_NAME
ONNX_ARTIFACT_DIR = "onnx"

# Version tags: what `churn status` and the promotion sensor read back.
TAG_DAGSTER_RUN_ID = "dagster_run_id"
TAG_DATA_AS_OF = "data_as_of"
TAG_DATASET_HASH = "dataset_sha256"
TAG_ONNX_SHA256 = "onnx_sha256"
TAG_PARITY = "onnx_parity_max_abs_diff"
TAG_ORACLE_AUC = "oracle_auc"
TAG_TRAINED_AT = "trained_at"
TAG_GATES = "gates"
# Time: which period the model was judged on out of time, which it trained on, and the
# newest order date it knew (its scores of a period count as realized only from then on).
TAG_HOLDOUT_AS_OF = "holdout_as_of"
TAG_TRAINING_PERIODS = "training_periods"
TAG_DATA_THROUGH = "data_through"
# The backtest's table, logged to the model's MLflow run by the ``backtest`` asset.
BACKTEST_ARTIFACT = "backtest.json"
# Registry aliases and promotion tags: named in schema.py, re-exported for registry callers.
CHAMPION = schema.CHAMPION_ALIAS
CHALLENGER = schema.CHALLENGER_ALIAS
PROMOTION_TAG_PREFIX = schema.PROMOTION_TAG_PREFIX
TAG_DECISION = schema.TAG_PROMOTION_DECISION
# When the decision was applied (UTC, ISO 8601): a promoted version's start as champion.
TAG_DECIDED_AT = f"{PROMOTION_TAG_PREFIX}decided_at"
# Two of the decision's own tags (PromotionDecision.as_tags: the prefix and a field name).
TAG_PROMOTION_REASON = f"{PROMOTION_TAG_PREFIX}reason"
TAG_PROMOTION_COMPARED_WITH = f"{PROMOTION_TAG_PREFIX}champion_version"
# The raw load (``raw.loads``) the training data was built from: run and file hashes.
TAG_RAW_LOAD_RUN_ID = "raw_load_dagster_run_id"
TAG_RAW_CUSTOMERS_SHA256 = "raw_customers_sha256"
TAG_RAW_ORDERS_SHA256 = "raw_orders_sha256"
RAW_LOAD_TAGS = (TAG_RAW_LOAD_RUN_ID, TAG_RAW_CUSTOMERS_SHA256, TAG_RAW_ORDERS_SHA256)


class RegistryUnavailable(RuntimeError):
    """The tracking server cannot be reached; callers skip registry steps and say so."""


def is_remote(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def local_store_missing(tracking_uri: str) -> bool:
    """A local SQLite store that nothing has written yet (reading it would create it)."""
    if not tracking_uri.startswith("sqlite:///"):
        return False
    return not Path(tracking_uri.removeprefix("sqlite:///")).exists()


def _check_local_store(tracking_uri: str) -> None:
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    if not path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            db.execute("pragma schema_version").fetchone()
    except sqlite3.Error as exc:
        raise RegistryUnavailable(
            f"the MLflow store {path} is not a readable SQLite database ({exc}): restore it "
            "from a backup, or move it aside to start an empty registry"
        ) from exc


def check_reachable(tracking_uri: str, timeout_seconds: float = 3.0) -> None:
    """Raise :class:`RegistryUnavailable` when a tracking server does not answer quickly.

    MLflow's own client retries a dead server for minutes; this probe fails in seconds.
    It asks ``/health`` through MLflow's own HTTP call, so it sends what every client call
    will: credentials from ``user:password@`` in the URI (requests turns them into basic
    auth, before ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``), else those variables or
    ``~/.mlflow/credentials``, else ``MLFLOW_TRACKING_TOKEN``; and the TLS settings.
    Its errors show the URI masked (:func:`churn_assets.urls.mask_url`).

    A local SQLite store is reachable when it is missing (it is created on first use) or
    a readable SQLite database; a corrupt file is reported here, in one line, instead of
    as a SQLAlchemy traceback from deep inside MLflow.
    """
    if not is_remote(tracking_uri):
        _check_local_store(tracking_uri)
        return
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    shown = mask_url(tracking_uri)
    try:
        response = http_request(
            get_default_host_creds(tracking_uri),
            "/health",
            "GET",
            max_retries=0,
            backoff_factor=0,
            timeout=timeout_seconds,
            raise_on_status=False,
        )
    except MlflowException as exc:  # refused, timed out, a bad URL
        # MLflow's text repeats the URI, password included: say what requests said, masked,
        # and chain nothing (Dagster would show the unmasked cause after our message).
        reason = str(exc.__context__ or exc.message)
        raise RegistryUnavailable(
            f"MLflow tracking server {shown} unreachable: {mask_secrets(reason, tracking_uri)}"
        ) from None
    if response.status_code in (401, 403):
        raise RegistryUnavailable(
            f"MLflow tracking server {shown} refused the credentials (HTTP "
            f"{response.status_code} on /health): check the user:password in "
            "MLFLOW_TRACKING_URI, or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
        )
    if response.status_code != 200:
        raise RegistryUnavailable(
            f"MLflow tracking server {shown} unreachable: /health answered HTTP "
            f"{response.status_code}"
        )


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, created on first use with an explicit artifact root.

    Without ``artifact_location`` a SQLite store would put artifacts in ``./mlruns``
    relative to whatever directory the process happens to run in.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location))


@dataclass(frozen=True)
class TrainingRunLog:
    """What one training run sends to MLflow."""

    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    artifacts: tuple[Path, ...]


def log_training_run(
    tracking_uri: str,
    experiment_id: str,
    run_name: str,
    log: TrainingRunLog,
) -> str:
    """Create a finished MLflow run with params, metrics, tags and artifacts; return its id."""
    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(log.tags))
    run_id = str(run.info.run_id)
    try:
        for key, value in log.params.items():
            client.log_param(run_id, key, value)
        for key, metric in log.metrics.items():
            client.log_metric(run_id, key, float(metric))
        for path in log.artifacts:
            client.log_artifact(run_id, str(path))
    except Exception:
        _end_run_quietly(client, run_id, "FAILED")
        raise
    _end_run_quietly(client, run_id, "FINISHED")
    return run_id


_SUPPRESS_URL = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def _end_run_quietly(client: MlflowClient, run_id: str, status: str) -> None:
    """End the run without MLflow's "View run ... at: <tracking URI>" line on stdout: it
    prints the URI as given, a password in it included. The run's link is in the asset's
    metadata, masked (``MlflowResource.run_link``)."""
    previous = os.environ.get(_SUPPRESS_URL)
    os.environ[_SUPPRESS_URL] = "true"
    try:
        client.set_terminated(run_id, status=status)
    finally:
        if previous is None:
            os.environ.pop(_SUPPRESS_URL, None)
        else:
            os.environ[_SUPPRESS_URL] = previous


def log_onnx_artifact(tracking_uri: str, run_id: str, onnx_path: Path) -> str:
    """Attach the ONNX file to the training run; return the artifact URI to register."""
    client = MlflowClient(tracking_uri)
    client.log_artifact(run_id, str(onnx_path), artifact_path=ONNX_ARTIFACT_DIR)
    return f"runs:/{run_id}/{ONNX_ARTIFACT_DIR}/{onnx_path.name}"


def register_version(
    tracking_uri: str,
    source: str,
    run_id: str,
    tags: Mapping[str, str],
    description: str,
    name: str = REGISTERED_MODEL_NAME,
) -> str:
    """Register ``source`` as a new version of ``name`` with all its tags in one call.

    Tags go in ``create_model_version`` itself, so a version never exists without them
    (no half-written version for the promotion sensor to trip over).
    """
    client = MlflowClient(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Churn probability model (ONNX), gated by AUC and parity."
        )
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags=dict(tags), description=description
    )
    return str(version.version)


def gates_tag(gates: Mapping[str, Mapping[str, Any]]) -> str:
    return json.dumps(gates, sort_keys=True)


def describe_version(
    tracking_uri: str, version: str, name: str = REGISTERED_MODEL_NAME
) -> dict[str, Any]:
    """One version as `churn status` shows it: metrics from its run, facts from its tags."""
    client = MlflowClient(tracking_uri)
    model_version = client.get_model_version(name, version)
    tags = dict(model_version.tags)
    metrics: dict[str, float] = {}
    if model_version.run_id:
        metrics = dict(client.get_run(model_version.run_id).data.metrics)
    return {
        "version": str(model_version.version),
        "metrics": {
            "auc": metrics.get("roc_auc"),
            "pr_auc": metrics.get("pr_auc"),
            "brier": metrics.get("brier"),
            "log_loss": metrics.get("log_loss"),
            "f1": metrics.get("f1"),
            "threshold": metrics.get("threshold"),
            # The logistic-regression and BG/NBD buy-till-you-die references on the same
            # holdout, and the calibration error; None for versions trained before they
            # were measured.
            "reference_auc": metrics.get("reference_auc"),
            "btyd_auc": metrics.get("btyd_auc"),
            # The share of the holdout's churners among its 10% highest scores.
            "top_decile_gain": metrics.get("top_decile_gain"),
            "ece": metrics.get("ece"),
            # The random in-time holdout, beside the out-of-time ``auc``.
            "in_time_auc": metrics.get("in_time_auc"),
        },
        "holdout_as_of": tags.get(TAG_HOLDOUT_AS_OF),
        "training_periods": tags[TAG_TRAINING_PERIODS].split(",")
        if tags.get(TAG_TRAINING_PERIODS)
        else [],
        "data_through": tags.get(TAG_DATA_THROUGH),
        "backtest": read_backtest(tracking_uri, model_version.run_id),
        "oracle_auc": _float_or_none(tags.get(TAG_ORACLE_AUC)),
        "onnx_parity_max_abs_diff": _float_or_none(tags.get(TAG_PARITY)),
        "onnx_sha256": tags.get(TAG_ONNX_SHA256),
        "data_as_of": tags.get(TAG_DATA_AS_OF),
        "trained_at": tags.get(TAG_TRAINED_AT),
        "dagster_run_id": tags.get(TAG_DAGSTER_RUN_ID),
        "raw_data": {tag: tags.get(tag) for tag in RAW_LOAD_TAGS},
        "mlflow_run_id": model_version.run_id,
        "gates": json.loads(tags[TAG_GATES]) if TAG_GATES in tags else None,
        "promotion": {
            "decision": tags.get(TAG_DECISION),
            "reason": tags.get(TAG_PROMOTION_REASON),
            "compared_with": tags.get(TAG_PROMOTION_COMPARED_WITH),
        }
        if TAG_DECISION in tags
        else None,
    }


def read_backtest(tracking_uri: str, run_id: str | None) -> list[dict[str, Any]] | None:
    """The backtest logged to a model's run (``[{as_of, rows, auc, reference_auc, ...}]``),
    or None when none was run for it."""
    if not run_id:
        return None
    import tempfile

    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="churn-backtest-") as tmp:
        try:
            path = download_artifacts(
                run_id=run_id, artifact_path=BACKTEST_ARTIFACT, dst_path=tmp,
                tracking_uri=tracking_uri,
            )  # fmt: skip
        except (MlflowException, OSError):
            return None
        rows: list[dict[str, Any]] = json.loads(Path(path).read_text())
    return rows


def latest_version(tracking_uri: str, name: str = REGISTERED_MODEL_NAME) -> str | None:
    """The highest version number of ``name``, or None when nothing is registered."""
    client = MlflowClient(tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    numbers = [int(v.version) for v in versions]
    return str(max(numbers)) if numbers else None


def alias_version(tracking_uri: str, alias: str, name: str = REGISTERED_MODEL_NAME) -> str | None:
    """The version an alias points at, or None."""
    client = MlflowClient(tracking_uri)
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_history(tracking_uri: str, name: str = REGISTERED_MODEL_NAME) -> list[dict[str, Any]]:
    """Which version was champion from when to when, and why it became one: the rollout
    history, oldest first (``churn status --json``'s ``champion_history``, the card)."""
    client = MlflowClient(tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    return history_from_tags({str(v.version): dict(v.tags) for v in versions})


def history_from_tags(tags_by_version: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """The rollout history from each version's promotion tags: every promoted version, in
    the order the promotions were applied; each one's reign ends when the next begins (the
    last one's ``until`` is None: champion now, unless the alias was moved by hand).

    The registry is the record, not the Dagster instance: a decision made on another
    deployment of the same registry counts too. Versions promoted before the time was
    recorded have ``since`` None and keep their version order."""
    promoted = [
        (version, tags)
        for version, tags in tags_by_version.items()
        if tags.get(TAG_DECISION) == "promoted"
    ]
    # ISO 8601 UTC strings sort as times; a missing time sorts first (older releases).
    promoted.sort(key=lambda item: (item[1].get(TAG_DECIDED_AT) or "", int(item[0])))
    history = [
        {
            "version": version,
            "since": tags.get(TAG_DECIDED_AT),
            "until": None,
            "replaced": _none_if_missing(tags.get(TAG_PROMOTION_COMPARED_WITH)),
            "reason": tags.get(TAG_PROMOTION_REASON),
        }
        for version, tags in promoted
    ]
    for reign, successor in itertools.pairwise(history):
        reign["until"] = successor["since"]
    return history


def _none_if_missing(value: str | None) -> str | None:
    return None if value in (None, "none") else value


def count_runs(tracking_uri: str, experiment_name: str = EXPERIMENT_NAME) -> int:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    return len(runs)


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value else None
