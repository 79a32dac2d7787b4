"""Training chain: validated dataset -> torch model -> ONNX export -> registered version.

Each asset body calls the pure libraries (``churn_assets.ml``, ``churn_assets.data``,
``churn_assets.tables``) and attaches metadata. The gates are blocking asset checks
(``checks.py``): a model that fails the AUC gate is never exported, and nothing that failed
a gate is ever registered.
"""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

from churn_assets import periods
from churn_assets.data.dataset import (
    DATA_THROUGH_ATTR,
    HOLDOUT_ATTR,
    RAW_LOAD_ATTR,
    RAW_SOURCE_ATTR,
    dataset_sha256,
)
from churn_assets.defs.automation import AFTER_A_NEW_MODEL, FIRST_TRAINING, GATED_EAGER
from churn_assets.defs.resources import (
    ChurnPolicy,
    LabelDefinition,
    MlflowResource,
    WarehouseResource,
)
from churn_assets.ml.artifacts import (
    CARD_FILE,
    HOLDOUT_FILE,
    ONNX_FILE,
    PLOTS,
    ExportedModel,
    TrainedModel,
)
from churn_assets.policy import env_name
from churn_assets.settings import load_settings

# torch, sklearn and mlflow (``churn_assets.ml.tracking``, ``ml.pipeline``) are
# imported in the asset bodies: every run process loads this module, and a run that does not
# train (ingest, dbt, scoring) should not pay seconds for them.
if TYPE_CHECKING:
    from churn_assets.ml.pipeline import TrainingOutcome

GROUP = "training"


@dg.asset(
    deps=[dg.AssetKey("training_snapshot")],
    group_name=GROUP,
    kinds={"pandas", "postgres"},
    automation_condition=FIRST_TRAINING,
)
def training_dataset(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    policy: ChurnPolicy,
    labels: LabelDefinition,
) -> dg.Output[pd.DataFrame]:
    """The training cohorts and the out-of-time holdout period, stacked from the dbt training
    snapshot as a typed DataFrame (one row per period and customer), with the raw load it was
    built from. The holdout is the newest labelled period (``labels.holdout_as_of`` pins another);
    the cohorts are the newest ``CHURN_TRAINING_PERIODS`` periods whose label windows closed
    by it, all with the ``labels`` resource's window (the one the dbt step labelled with).
    The Great Expectations check on it blocks training when the data is wrong."""
    # One state of the warehouse for every read: periods, rows and their load.
    with warehouse.client().consistent_reads() as reads:
        try:
            chosen = periods.choose_training_periods(
                reads.labelled_periods(labels.window_days),
                count=policy.policy().training_periods,
                window_days=labels.window_days,
                pinned=labels.pinned(),
            )
        except periods.PeriodError as exc:
            raise dg.Failure(description=str(exc)) from exc
        # Sampled in the database (a hash of the customer id, so the same customers in every
        # period): at a million customers the cohorts would not fit in memory whole.
        if chosen.holdout is None:
            frame, share = reads.read_training_snapshot(chosen.all), 1.0
        else:
            cohorts = reads.count_training_rows(chosen.training)
            share = min(1.0, policy.policy().max_training_rows / max(cohorts, 1))
            frame = pd.concat(
                [
                    reads.read_training_snapshot(chosen.training, customer_share=share),
                    reads.read_training_snapshot([chosen.holdout]),
                ],
                ignore_index=True,
            )
        load = reads.latest_load()
        data_through = reads.last_order_date()
    context.log.info(chosen.note)
    holdout = chosen.holdout.isoformat() if chosen.holdout else None
    if share < 1.0:
        context.log.info(
            f"training periods sampled to {share:.1%} of their customers "
            f"({env_name('max_training_rows')}); the holdout period is whole"
        )
    raw_load = _raw_load_tags(context, load)
    frame.attrs[RAW_LOAD_ATTR] = raw_load  # travels with the frame to churn_model's tags
    source = str(Path(load["orders_file"]).parent) if load else None
    frame.attrs[RAW_SOURCE_ATTR] = source
    frame.attrs[HOLDOUT_ATTR] = holdout
    frame.attrs[DATA_THROUGH_ATTR] = data_through.isoformat() if data_through else None
    label_rate = float(frame["churned"].mean()) if len(frame) else 0.0
    by_period = frame.groupby(frame["as_of"].astype(str))["churned"].agg(["size", "mean"])
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "as_of": ", ".join(by_period.index),
            "holdout_as_of": frame.attrs[HOLDOUT_ATTR] or "none (in-time holdout)",
            "training_periods": ", ".join(p.isoformat() for p in chosen.training),
            "periods": chosen.note,
            "data_through": frame.attrs[DATA_THROUGH_ATTR] or "unknown",
            "training_customer_share": dg.MetadataValue.float(share),
            "rows_by_period": dg.MetadataValue.md(
                by_period.rename(columns={"size": "rows", "mean": "label_rate"})
                .reset_index()
                .to_markdown(index=False)
            ),
            "label_rate": dg.MetadataValue.float(label_rate),
            "dataset_sha256": dataset_sha256(frame),
            **raw_load,
            "raw_source": source or "unknown (loaded before raw.loads existed)",
        },
    )


def _raw_load_tags(
    context: dg.AssetExecutionContext, load: dict[str, Any] | None
) -> dict[str, str]:
    """The raw load behind the dataset, as MLflow tags; refuses another run's data.

    The warehouse write lock already keeps runs apart; this is the check that it did: a
    run that loaded raw files itself must train on exactly that load.
    """
    from churn_assets.ml import tracking

    if load is None:
        return {}
    loaded_by = str(load["dagster_run_id"] or "")
    selection = context.run.asset_selection or set()
    if dg.AssetKey("raw_orders") in selection and loaded_by != context.run.run_id:
        raise dg.Failure(
            description=f"the raw tables now hold load #{load['load_id']} by run {loaded_by}, "
            f"not the files this run ({context.run.run_id}) loaded: refusing to train on "
            "another run's data. Re-run once the other run has finished."
        )
    return {
        tracking.TAG_RAW_LOAD_RUN_ID: loaded_by,
        tracking.TAG_RAW_CUSTOMERS_SHA256: str(load["customers_sha256"]),
        tracking.TAG_RAW_ORDERS_SHA256: str(load["orders_sha256"]),
    }


class TrainingConfig(dg.Config):
    """Run options for training.

    Attributes:
        seed: Seeds the holdout split, the validation split, initialisation and shuffling.
        holdout_fraction: Share of customers held out (stratified) for the metrics and gates.
        max_epochs: Upper bound; early stopping on the validation loss usually stops sooner.
    """

    seed: int = 42
    holdout_fraction: float = 0.2
    max_epochs: int = 300


@dg.asset(group_name=GROUP, kinds={"pytorch", "mlflow"}, automation_condition=GATED_EAGER)
def churn_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    training_dataset: pd.DataFrame,
    mlflow: MlflowResource,
    policy: ChurnPolicy,
    labels: LabelDefinition,
) -> dg.Output[TrainedModel]:
    """ChurnMLP trained on the validated dataset, with holdout metrics, the oracle AUC (when
    the generator's ground truth is available), the AUCs of a logistic-regression reference
    and a BG/NBD buy-till-you-die reference (P(no order in the label window)) on the same
    holdout, calibration, gains and lift per decile (``gains``; the top decile's share of
    churners as ``top_decile_gain``), plots and a model card. Logged to MLflow."""
    from churn_assets.ml.model_card import gains_markdown
    from churn_assets.ml.pipeline import train_and_evaluate

    settings = load_settings()
    model_dir = settings.models_dir / context.run.run_id
    outcome = train_and_evaluate(
        training_dataset,
        model_dir,
        seed=config.seed,
        holdout_fraction=config.holdout_fraction,
        max_epochs=config.max_epochs,
        ground_truth_dir=settings.raw_dir,
        policy=policy.policy(),
        window_days=labels.window_days,
        holdout_as_of=training_dataset.attrs.get(HOLDOUT_ATTR),
    )
    trained = TrainedModel(
        model_dir=str(model_dir),
        dagster_run_id=context.run.run_id,
        metrics=outcome.metrics,
        oracle_auc=outcome.oracle_auc,
        data_as_of=outcome.data_as_of,
        dataset_sha256=dataset_sha256(training_dataset),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        n_parameters=outcome.n_parameters,
        raw_load=dict(training_dataset.attrs.get(RAW_LOAD_ATTR, {})),
        holdout_as_of=training_dataset.attrs.get(HOLDOUT_ATTR),
        training_periods=tuple(
            sorted(
                {str(v) for v in training_dataset["as_of"]}
                - {training_dataset.attrs.get(HOLDOUT_ATTR)}
            )
        ),
        data_through=training_dataset.attrs.get(DATA_THROUGH_ATTR),
    )
    trained, link = _log_to_mlflow(context, mlflow, trained, outcome)
    metadata: dict[str, Any] = {
        **{name: dg.MetadataValue.float(value) for name, value in outcome.metrics.items()},
        "oracle_auc": dg.MetadataValue.float(outcome.oracle_auc)
        if outcome.oracle_auc is not None
        else "n/a (no ground truth)",
        "parameters": outcome.n_parameters,
        "best_epoch": outcome.best_epoch,
        "data_as_of": outcome.data_as_of,
        "holdout_as_of": trained.holdout_as_of or "none (in-time holdout only)",
        # What roc_auc measured, in words every summary reuses: never "out of time" for an
        # in-time figure (a history too short for a later, unseen period).
        "evaluation": "out of time" if trained.holdout_as_of else "in time",
        "training_periods": ", ".join(trained.training_periods),
        "in_time_auc": dg.MetadataValue.float(outcome.metrics["in_time_auc"]),
        "holdout_rows": int(outcome.metrics["n"]),
        "model_dir": dg.MetadataValue.path(str(model_dir)),
        "mlflow_run": link,
        "plots": dg.MetadataValue.md(_plots_markdown(model_dir)),
        "gains": dg.MetadataValue.md(gains_markdown(outcome.gains) if outcome.gains else "n/a"),
        "model_card": dg.MetadataValue.md((model_dir / CARD_FILE).read_text()),
    }
    # The network's evidence: how it compares with the linear reference on the same rows
    # (judged by the WARN check ``reference_model_check``).
    metadata["auc_minus_reference"] = dg.MetadataValue.float(
        outcome.metrics["roc_auc"] - outcome.metrics["reference_auc"]
    )
    if outcome.oracle_auc is not None:
        metadata["oracle_gap"] = dg.MetadataValue.float(
            outcome.oracle_auc - outcome.metrics["roc_auc"]
        )
    return dg.Output(trained, metadata=metadata)


def _log_to_mlflow(
    context: dg.AssetExecutionContext,
    mlflow: MlflowResource,
    trained: TrainedModel,
    outcome: "TrainingOutcome",
) -> tuple[TrainedModel, str]:
    """Log the run; when the tracking server is down, warn and carry on locally."""
    from dataclasses import replace

    from churn_assets.ml import tracking

    try:
        experiment_id = mlflow.experiment_id()
        run_id = tracking.log_training_run(
            mlflow.tracking_uri,
            experiment_id,
            run_name=f"churn-{trained.data_as_of}-{trained.dagster_run_id[:8]}",
            log=tracking.TrainingRunLog(
                params=outcome.params,
                metrics={k: v for k, v in outcome.metrics.items() if k not in ("n",)},
                tags={
                    tracking.TAG_DAGSTER_RUN_ID: trained.dagster_run_id,
                    tracking.TAG_DATA_AS_OF: trained.data_as_of,
                    tracking.TAG_DATASET_HASH: trained.dataset_sha256,
                    **trained.raw_load,
                    **_time_tags(trained),
                },
                artifacts=outcome.artifacts,
            ),
        )
    except tracking.RegistryUnavailable as exc:
        context.log.warning(f"MLflow skipped, the model stays local only: {exc}")
        return replace(trained, mlflow_skipped_reason=str(exc)), f"skipped: {exc}"
    context.log.info(f"MLflow run {run_id} in experiment {experiment_id}")
    return replace(trained, mlflow_run_id=run_id), mlflow.run_link(experiment_id, run_id)


def _time_tags(trained: TrainedModel) -> dict[str, str]:
    """The model's periods as MLflow tags (absent facts left out)."""
    from churn_assets.ml import tracking

    tags = {
        tracking.TAG_HOLDOUT_AS_OF: trained.holdout_as_of,
        tracking.TAG_TRAINING_PERIODS: ",".join(trained.training_periods),
        tracking.TAG_DATA_THROUGH: trained.data_through,
    }
    return {name: value for name, value in tags.items() if value}


def _plots_markdown(model_dir: Path) -> str:
    images = []
    for name in PLOTS:
        encoded = base64.b64encode((model_dir / name).read_bytes()).decode()
        images.append(f"![{name}](data:image/png;base64,{encoded})")
    return "\n\n".join(images)


@dg.asset(group_name=GROUP, kinds={"onnx"}, automation_condition=GATED_EAGER)
def churn_model_onnx(
    context: dg.AssetExecutionContext,
    churn_model: TrainedModel,
    mlflow: MlflowResource,
    warehouse: WarehouseResource,
) -> dg.Output[ExportedModel]:
    """The model exported to ONNX (dynamic batch axis, raw feature inputs), checked by
    ``onnx.checker`` and compared with torch on the holdout; runs only after the AUC gate.
    Logged to the registry only while the run still holds the warehouse write lock."""
    from churn_assets.ml import tracking
    from churn_assets.ml.export import export_onnx, parity_max_abs_diff, sha256_file
    from churn_assets.ml.features import to_model_inputs
    from churn_assets.ml.model import load_model

    model_dir = Path(churn_model.model_dir)
    onnx_path = model_dir / ONNX_FILE
    model = load_model(model_dir)
    export_onnx(model, onnx_path)
    holdout = pd.read_parquet(model_dir / HOLDOUT_FILE)
    parity = parity_max_abs_diff(model, onnx_path, to_model_inputs(holdout))
    sha256 = sha256_file(onnx_path)
    # Training took minutes: a warehouse that restarted meanwhile took the run's lock along.
    warehouse.ensure_write_lock("nothing exported to the registry, nothing registered")
    model_uri = None
    if churn_model.mlflow_run_id:
        model_uri = tracking.log_onnx_artifact(
            mlflow.tracking_uri, churn_model.mlflow_run_id, onnx_path
        )
    exported = ExportedModel(churn_model, str(onnx_path), sha256, parity, model_uri)
    context.log.info(f"ONNX parity vs torch on {len(holdout)} holdout rows: {parity:.2e}")
    return dg.Output(
        exported,
        metadata={
            "path": dg.MetadataValue.path(str(onnx_path)),
            "sha256": sha256,
            "size_bytes": onnx_path.stat().st_size,
            "parity_max_abs_diff": dg.MetadataValue.float(parity),
            "parity_rows": len(holdout),
            "mlflow_artifact": model_uri or "skipped (no MLflow run)",
        },
    )


@dg.asset(group_name=GROUP, kinds={"mlflow"}, automation_condition=GATED_EAGER)
def churn_model_version(
    context: dg.AssetExecutionContext,
    churn_model_onnx: ExportedModel,
    mlflow: MlflowResource,
    policy: ChurnPolicy,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """A version of the registered model ``churn-model`` in MLflow, created only for a model
    that passed the AUC and parity gates, tagged with its lineage and gate results, and only
    while the run still holds the warehouse write lock."""
    from churn_assets.ml import tracking
    from churn_assets.ml.gates import auc_gate, parity_gate

    trained = churn_model_onnx.trained
    rules = policy.policy()
    gates = [
        auc_gate(trained.metrics["roc_auc"], rules.min_auc),
        parity_gate(churn_model_onnx.parity_max_abs_diff, rules.parity_tolerance),
    ]
    # The blocking checks stop this asset in the run that trained the model; re-checking
    # here also covers a later run that selects this asset alone.
    failed = [gate for gate in gates if not gate.passed]
    if failed:
        raise dg.Failure(
            description="refusing to register a model that failed "
            + ", ".join(f"{g.name} ({g.observed} vs {g.comparison} {g.threshold})" for g in failed)
        )
    # The card the version carries: every gate as measured (parity included), the
    # reference model and calibration. Written locally even when the registry is skipped.
    from churn_assets.ml.pipeline import write_registered_card

    card_path = write_registered_card(
        Path(trained.model_dir), churn_model_onnx.parity_max_abs_diff, rules
    )
    card = {"model_card": dg.MetadataValue.md(card_path.read_text())}
    if not trained.mlflow_run_id or not churn_model_onnx.mlflow_model_uri:
        reason = trained.mlflow_skipped_reason or "no MLflow run"
        context.log.warning(f"registry step skipped: {reason}")
        return dg.MaterializeResult(metadata={"registry": f"skipped: {reason}", **card})
    try:
        tracking.check_reachable(mlflow.tracking_uri)
    except tracking.RegistryUnavailable as exc:
        context.log.warning(f"registry step skipped: {exc}")
        return dg.MaterializeResult(metadata={"registry": f"skipped: {exc}", **card})
    from mlflow.tracking import MlflowClient

    # The first registry write: never for a run that lost the warehouse (and its lock).
    warehouse.ensure_write_lock("nothing registered")
    # Same artifact path as the training-time card, which it replaces on the run.
    MlflowClient(mlflow.tracking_uri).log_artifact(trained.mlflow_run_id, str(card_path))
    card_uri = f"runs:/{trained.mlflow_run_id}/{CARD_FILE}"
    reference = trained.metrics.get("reference_auc")  # absent for models trained before it
    versus = "" if reference is None else f" (logistic-regression reference {reference:.4f})"
    tags = {
        tracking.TAG_DAGSTER_RUN_ID: context.run.run_id,
        tracking.TAG_DATA_AS_OF: trained.data_as_of,
        tracking.TAG_DATASET_HASH: trained.dataset_sha256,
        tracking.TAG_ONNX_SHA256: churn_model_onnx.onnx_sha256,
        tracking.TAG_PARITY: repr(churn_model_onnx.parity_max_abs_diff),
        tracking.TAG_TRAINED_AT: trained.trained_at,
        **trained.raw_load,
        **_time_tags(trained),
        tracking.TAG_GATES: tracking.gates_tag(
            {
                g.name: {"observed": g.observed, "threshold": g.threshold, "passed": g.passed}
                for g in gates
            }
        ),
    }
    if trained.oracle_auc is not None:
        tags[tracking.TAG_ORACLE_AUC] = repr(trained.oracle_auc)
    version = tracking.register_version(
        mlflow.tracking_uri,
        source=churn_model_onnx.mlflow_model_uri,
        run_id=trained.mlflow_run_id,
        tags=tags,
        description=f"Trained on data as of {trained.data_as_of}; "
        f"holdout ROC AUC {trained.metrics['roc_auc']:.4f}{versus}. "
        f"Model card (gates as measured, reference model, calibration): {card_uri}",
        name=mlflow.model_name,
    )
    context.log.info(f"registered {mlflow.model_name} version {version}")
    return dg.MaterializeResult(
        metadata={
            "registry": "registered",
            "model_name": mlflow.model_name,
            "version": version,
            "onnx_sha256": churn_model_onnx.onnx_sha256,
            "gates": dg.MetadataValue.json(json.loads(tags[tracking.TAG_GATES])),
            "model_card_uri": card_uri,
            **card,
        }
    )


@dg.asset(
    deps=[dg.AssetKey("training_snapshot")],
    group_name=GROUP,
    kinds={"pytorch", "mlflow"},
    automation_condition=AFTER_A_NEW_MODEL,
)
def backtest(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    churn_model: TrainedModel,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    policy: ChurnPolicy,
    labels: LabelDefinition,
) -> dg.MaterializeResult:
    """Would this model have worked before? For each of the newest CHURN_BACKTEST_PERIODS
    labelled periods, a model trained (same recipe) on the periods whose labels closed
    before it, evaluated on it: rows, label rate, AUC, Brier and the logistic-regression
    reference's AUC. Logged as a table and a plot to the model's MLflow run."""
    from churn_assets.ml import tracking
    from churn_assets.ml.backtest import as_json, backtest_frame, backtest_png, run_backtest

    rules = policy.policy()
    window_days = labels.window_days
    with warehouse.client().consistent_reads() as reads:
        try:
            labelled = reads.labelled_periods(window_days)
        except periods.PeriodError as exc:
            raise dg.Failure(description=str(exc)) from exc
        needed = periods.backtest_periods(
            labelled,
            evaluate=rules.backtest_periods,
            count=rules.training_periods,
            window_days=window_days,
        )
        # Each backtest model trains on up to CHURN_TRAINING_PERIODS periods: sample
        # customers so that a training set stays near CHURN_BACKTEST_MAX_TRAINING_ROWS (at
        # a million customers six full trainings would cost more than the model itself).
        per_period = reads.count_training_rows(needed) / max(len(needed), 1)
        share = min(
            1.0, rules.backtest_max_training_rows / max(per_period * rules.training_periods, 1)
        )
        snapshot = reads.read_training_snapshot(needed, customer_share=share)
    if share < 1.0:
        context.log.info(f"backtest on a {share:.1%} sample of customers")
    rows = run_backtest(
        snapshot,
        evaluate_periods=rules.backtest_periods,
        training_periods=rules.training_periods,
        window_days=window_days,
        seed=config.seed,
        max_epochs=config.max_epochs,
    )
    frame = backtest_frame(rows)
    png = backtest_png(rows)
    logged = "skipped (no MLflow run)"
    if churn_model.mlflow_run_id:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow.tracking_uri)
        client.log_text(
            churn_model.mlflow_run_id, json.dumps(as_json(rows), indent=2),
            tracking.BACKTEST_ARTIFACT,
        )  # fmt: skip
        client.log_table(churn_model.mlflow_run_id, frame, "backtest_table.json")
        plot = Path(churn_model.model_dir) / "backtest.png"
        plot.write_bytes(png)
        client.log_artifact(churn_model.mlflow_run_id, str(plot))
        logged = f"runs:/{churn_model.mlflow_run_id}/{tracking.BACKTEST_ARTIFACT}"
    evaluated = [row for row in rows if row.auc is not None]
    context.log.info(f"backtest over {len(evaluated)} period(s) logged to {logged}")
    encoded = base64.b64encode(png).decode()
    return dg.MaterializeResult(
        metadata={
            "periods_evaluated": len(evaluated),
            "customer_share": dg.MetadataValue.float(share),
            "mean_auc": dg.MetadataValue.float(
                float(sum(r.auc for r in evaluated if r.auc is not None) / len(evaluated))
            )
            if evaluated
            else "n/a",
            "table": dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=".4f")),
            "plot": dg.MetadataValue.md(f"![backtest](data:image/png;base64,{encoded})"),
            "mlflow": logged,
        }
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[training_dataset, churn_model, churn_model_onnx, churn_model_version, backtest]
    )
