"""Drift monitoring: today's features against the champion's training reference."""

import base64
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from churn_assets.defs.automation import GATED_EAGER, with_its_asset
from churn_assets.defs.resources import ChurnPolicy, MlflowResource, WarehouseResource
from churn_assets.settings import load_settings

GROUP = "monitoring"


@dataclass(frozen=True)
class DriftSummary:
    """What the drift gate and the retraining sensor need from one drift measurement."""

    reference_version: str
    drift_share: float
    threshold: float
    drifted_features: tuple[str, ...]
    report_path: str

    @property
    def gate_passed(self) -> bool:
        from churn_assets.ml.drift import drift_gate_passes

        return drift_gate_passes(self.drift_share, self.threshold)


@dg.asset(
    deps=[dg.AssetKey("current_features"), dg.AssetKey("churn_champion")],
    group_name=GROUP,
    kinds={"pandas", "mlflow"},
    automation_condition=GATED_EAGER,
)
def feature_drift(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    policy: ChurnPolicy,
) -> dg.Output[DriftSummary]:
    """Per-feature PSI and KS (chi-square for the email class) between the current features
    (scoring as_of) and the champion's training rows, with overlaid histograms and a
    standalone HTML report. The drift gate fails when the share of drifted features
    reaches CHURN_DRIFT_SHARE_THRESHOLD."""
    # mlflow, scipy and matplotlib load here, not with the code location (every run process).
    from churn_assets.ml import tracking
    from churn_assets.ml.champion import CHAMPION, fetch_reference
    from churn_assets.ml.drift import DriftPolicy, compute_drift, histograms_png, html_report

    settings = load_settings()
    tracking.check_reachable(mlflow.tracking_uri)
    version = tracking.alias_version(mlflow.tracking_uri, CHAMPION, mlflow.model_name)
    if version is None:
        raise dg.Failure(
            description="no champion yet: drift is measured against the champion's training "
            "data, so train a model and let champion_promotion_sensor promote it first"
        )
    with tempfile.TemporaryDirectory(prefix="churn-drift-") as tmp:
        reference = fetch_reference(mlflow.tracking_uri, version, Path(tmp), mlflow.model_name)
    current = warehouse.client().read_current_features()
    report = compute_drift(reference, current, DriftPolicy.from_policy(policy.policy()))
    histograms = histograms_png(reference, current)
    reference_as_of = _dates(reference)
    current_as_of = _dates(current)
    html = html_report(
        report,
        histograms,
        title=f"Feature drift: current ({current_as_of}) "
        f"vs champion v{version} ({reference_as_of})",
        context={
            "champion version": version,
            "reference as_of": reference_as_of,
            "current as_of": current_as_of,
            "dagster run": context.run.run_id,
        },
    )
    out_dir = settings.home / "monitoring" / context.run.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "drift_report.html"
    report_path.write_text(html)
    drifted = tuple(f.feature for f in report.features if f.drifted)
    summary = DriftSummary(version, report.drift_share, report.threshold, drifted, str(report_path))
    encoded = base64.b64encode(histograms).decode()
    return dg.Output(
        summary,
        metadata={
            "drift_share": dg.MetadataValue.float(report.drift_share),
            "threshold": dg.MetadataValue.float(report.threshold),
            "drifted_features": ", ".join(drifted) or "none",
            "champion_version": version,
            "reference_as_of": reference_as_of,
            "current_as_of": current_as_of,
            "features": dg.MetadataValue.md(report.markdown_table()),
            "histograms": dg.MetadataValue.md(f"![histograms](data:image/png;base64,{encoded})"),
            "report": dg.MetadataValue.path(str(report_path)),
        },
    )


def _dates(frame: pd.DataFrame) -> str:
    return ", ".join(sorted({str(v) for v in frame["as_of"]})) if "as_of" in frame else "?"


@dg.asset_check(
    asset=feature_drift,
    automation_condition=with_its_asset(feature_drift.key),
)
def drift_gate(feature_drift: DriftSummary) -> dg.AssetCheckResult:
    """Fails when drift_share >= CHURN_DRIFT_SHARE_THRESHOLD; a failure triggers retraining
    (``retrain_on_drift_sensor``). A warning, not a blocker: scoring goes on meanwhile."""
    return dg.AssetCheckResult(
        passed=feature_drift.gate_passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "drift_share": dg.MetadataValue.float(feature_drift.drift_share),
            "threshold": dg.MetadataValue.float(feature_drift.threshold),
            "drifted_features": ", ".join(feature_drift.drifted_features) or "none",
            "champion_version": feature_drift.reference_version,
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[feature_drift], asset_checks=[drift_gate])
