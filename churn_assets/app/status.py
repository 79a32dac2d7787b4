"""What ``churn status`` reports, as one JSON-able dict: the registry's newest version and
its champion, realized performance per scored period, and the online scorer's shadow
comparison. No click and no Dagster: the CLI prints it, anything else may call it.

Looking never creates anything: no MLflow store is made where none exists, and no embedded
Postgres (nor Spark metastore service) is started where nothing was ever loaded.
"""

from __future__ import annotations

from typing import Any

from churn_assets.infra.warehouse import WarehouseError
from churn_assets.settings import Settings
from churn_assets.tables.engines import never_created, open_warehouse
from churn_assets.urls import mask_url


def status_report(settings: Settings) -> dict[str, Any]:
    """The documented ``churn status --json`` object (see the command's help).

    Raises :class:`churn_assets.ml.tracking.RegistryUnavailable` when the tracking server
    does not answer; an unreachable warehouse only nulls ``realized`` and ``shadow``.
    """
    from churn_assets.ml import tracking

    return {
        "tracking_uri": mask_url(settings.resolved_tracking_uri),  # printed: password masked
        "model_name": tracking.REGISTERED_MODEL_NAME,
        "realized": realized(settings),
        "shadow": shadow(settings),
        **registered_models(settings),
        "champion_history": champion_history(settings),
    }


def registered_models(settings: Settings) -> dict[str, Any]:
    """The report's ``latest_model`` and ``champion`` alone (what a run's summary prints),
    without reading the warehouse. Raises as :func:`status_report` does."""
    from churn_assets.ml import tracking

    uri = settings.resolved_tracking_uri
    models: dict[str, Any] = {"latest_model": None, "champion": None}
    if tracking.local_store_missing(uri):
        return models  # nothing trained yet; do not create an empty store just to look
    tracking.check_reachable(uri)
    latest = tracking.latest_version(uri)
    if latest is not None:
        models["latest_model"] = tracking.describe_version(uri, latest)
    champion = tracking.alias_version(uri, tracking.CHAMPION)
    if champion is not None:
        models["champion"] = tracking.describe_version(uri, champion)
    return models


def champion_history(settings: Settings) -> list[dict[str, Any]]:
    """Every champion, oldest first, with when it began and ended and why it was promoted
    (:func:`churn_assets.ml.tracking.champion_history`); empty before any store exists."""
    from churn_assets.ml import tracking

    uri = settings.resolved_tracking_uri
    return [] if tracking.local_store_missing(uri) else tracking.champion_history(uri)


def realized(settings: Settings) -> list[dict[str, Any]] | None:
    """Realized performance per (version, period) from the warehouse; None if unreachable."""
    if never_created(settings):
        return []
    try:
        table = open_warehouse(settings).read_realized_performance()
    except WarehouseError:
        return None
    return [
        {
            "model_version": str(row["model_version"]),
            "as_of": row["as_of"].isoformat(),
            "rows": int(row["rows"]),
            "auc": _number(row["auc"]),
            "brier": _number(row["brier"]),
        }
        for row in table.to_dict("records")
    ]


def _number(value: Any) -> float | None:
    """A float for JSON: a missing value (an undefined AUC) is None, never NaN."""
    return None if value is None or value != value else float(value)


def shadow(settings: Settings) -> dict[str, Any] | None:
    """The shadow comparison from the online prediction log; None if unreachable. Postgres
    aggregates it per pair in one scan (0.8 s at a million rows, where reading every row
    into pandas took 3.7 s: benchmarks/RESULTS.md)."""
    from churn_assets.ml.shadow import describe, pairs_from_groups

    if never_created(settings):
        return {"rows": 0, "pairs": [], "summary": describe([])}
    try:
        groups = open_warehouse(settings).read_shadow_groups()
    except WarehouseError:
        return None
    pairs = pairs_from_groups(groups)
    return {
        "rows": sum(pair.rows for pair in pairs),
        "pairs": [pair.as_dict() for pair in pairs],
        "summary": describe(pairs),
    }


def describe_model(model: dict[str, Any] | None) -> str:
    """One line for a model of the report (``describe_version``'s dict), or "none"."""
    if model is None:
        return "none"
    metrics = model["metrics"]
    oracle = model["oracle_auc"]
    parts = [
        f"version {model['version']}",
        f"AUC {metrics['auc']:.3f}" if metrics["auc"] is not None else "AUC n/a",
        f"out of time on {model['holdout_as_of']}" if model.get("holdout_as_of") else "in time",
        f"oracle AUC {oracle:.3f}" if oracle is not None else "oracle n/a",
        f"PR AUC {metrics['pr_auc']:.3f}" if metrics["pr_auc"] is not None else "",
        f"Brier {metrics['brier']:.3f}" if metrics["brier"] is not None else "",
        f"ONNX parity {model['onnx_parity_max_abs_diff']:.1e}"
        if model["onnx_parity_max_abs_diff"] is not None
        else "",
        f"data as of {model['data_as_of']}",
        f"trained {model['trained_at']}",
    ]
    return ", ".join(part for part in parts if part)
