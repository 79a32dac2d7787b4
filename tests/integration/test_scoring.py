"""Batch scores in Postgres and the analyst views on top of them, after `churn demo`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from dagster_dbt import DbtCliResource
from mlflow.tracking import MlflowClient
from psycopg2.extras import execute_values

from churn_assets.infra import warehouse
from churn_assets.lib.dbt import churn_dbt_project, environ
from churn_assets.ml.bands import RiskBands
from churn_assets.ml.export import OnnxScorer
from churn_assets.ml.features import to_model_inputs
from churn_assets.policy import Policy
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.settings import load_settings
from churn_assets.tables.online_predictions import COLUMNS
from churn_assets.tables.postgres import scores as scores_module
from churn_assets.tables.postgres.warehouse import PostgresWarehouse

pytestmark = pytest.mark.integration


@pytest.fixture
def url(demo: tuple[Result, Path], embedded_url: str) -> str:
    assert demo[0].exit_code == 0, demo[0].output
    return embedded_url


def _frame(url: str, query: str) -> pd.DataFrame:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        columns = [c.name for c in cur.description or ()]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def _champion_version() -> Any:
    client = MlflowClient(load_settings().resolved_tracking_uri)
    return client.get_model_version_by_alias("churn-model", "champion")


def test_every_current_customer_is_scored_with_lineage(url: str) -> None:
    scores = _frame(url, "select * from scoring.churn_scores order by customer_id")
    features = PostgresWarehouse(url).read_current_features()
    assert list(scores["customer_id"]) == list(features["customer_id"])
    champion = _champion_version()
    assert set(scores["model_version"]) == {str(champion.version)}
    assert set(scores["model_sha256"]) == {champion.tags["onnx_sha256"]}
    assert set(scores["model_name"]) == {"churn-model"}
    assert {str(d) for d in scores["feature_as_of"]} == {str(d) for d in features["as_of"]}
    assert scores["dagster_run_id"].nunique() == 1 and scores["scored_at"].nunique() == 1
    # the stored probability is what the champion's ONNX gives for those features
    run_id = champion.tags["dagster_run_id"]
    onnx = load_settings().models_dir / run_id / "model.onnx"
    expected = OnnxScorer(onnx).predict(to_model_inputs(features))
    np.testing.assert_allclose(scores["churn_probability"], expected, atol=1e-6)
    bands = RiskBands.from_policy(Policy())
    assert [bands.band(p) for p in scores["churn_probability"]] == list(scores["risk_band"])


def test_a_failure_mid_write_leaves_the_previous_scores(url: str) -> None:
    before = _frame(url, "select * from scoring.churn_scores order by customer_id")
    history = _frame(url, "select count(*) as n from scoring.churn_scores_history")["n"][0]
    replacement = before.assign(churn_probability=0.5, risk_band="medium", dagster_run_id="x")

    def fail_on_current(cur):  # type: ignore[no-untyped-def]
        # history is written and current truncated by now: the worst moment to fail
        raise ConnectionError("connection lost while writing scores")

    with (
        mock.patch.object(scores_module, "_insert_current", fail_on_current),
        pytest.raises(ConnectionError),
    ):
        PostgresWarehouse(url).write_scores(replacement)
    after = _frame(url, "select * from scoring.churn_scores order by customer_id")
    pd.testing.assert_frame_equal(after, before)
    assert _frame(url, "select count(*) as n from scoring.churn_scores_history")["n"][0] == history


def test_analyst_tables_cover_every_scored_customer(url: str, demo: tuple[Result, Path]) -> None:
    # Regression guard: as views they were dropped (CASCADE) whenever a later dbt build
    # rebuilt current_features, e.g. in a retraining run. Rebuild upstream, no rescoring:
    # the staging views and the newest period's marts and current_features (history_job),
    # not the analyst tables (churn_pipeline would rebuild them after, hiding a drop).
    import dagster as dg

    from churn_assets.definitions import defs
    from churn_assets.defs.partitions import periods_in_files, register_periods
    from churn_assets.lib.runs import run_job
    from churn_assets.settings import load_settings

    with dg.DagsterInstance.ephemeral() as instance:
        keys = periods_in_files(demo[1], load_settings().period) or []
        register_periods(instance, keys)
        assert run_job(defs(), instance, "history_job", partition_key=keys[-1]).success
    c360 = _frame(url, "select * from analytics.customer_360")
    scored = _frame(url, "select count(*) as n from scoring.churn_scores")["n"][0]
    assert len(c360) == scored
    assert c360["score_is_current"].all()
    segments = _frame(url, "select * from analytics.churn_risk_by_segment")
    assert segments["customers"].sum() == scored
    high = (c360["risk_band"] == "high").sum()
    assert segments["high_risk_customers"].sum() == high
    assert set(segments["email_domain_class"]) <= {"free", "business", "education", "unknown"}


def test_dbt_docs_generate_works_for_analysts(url: str, tmp_path: Path) -> None:
    project = churn_dbt_project()
    with environ(warehouse.parse_url(url).dbt_env()):
        invocation = DbtCliResource(project_dir=project).cli(
            ["docs", "generate"], target_path=tmp_path, raise_on_error=False
        )
        invocation.wait()
    assert invocation.is_successful()
    catalog = (project.project_dir / tmp_path / "catalog.json").read_text()
    assert "customer_360" in catalog and "churn_risk_by_segment" in catalog
    assert "retention_targets" in catalog


def test_retention_targets_rank_every_scored_customer_by_expected_value(url: str) -> None:
    targets = _frame(url, "select * from analytics.retention_targets order by contact_rank")
    scores = _frame(url, "select * from scoring.churn_scores order by customer_id")
    # one row per scored customer of the (one) scored period
    assert len(targets) == len(scores) > 0
    assert set(targets["customer_id"]) == set(scores["customer_id"])
    assert {str(d) for d in targets["as_of"]} == {str(d) for d in scores["feature_as_of"]}
    assert list(targets["contact_rank"]) == list(range(1, len(targets) + 1))
    # the order follows the expected value, highest first
    assert (np.diff(targets["expected_value_saved"].to_numpy()) <= 0).all()
    # p x (margin x revenue of the last 365 days) x save rate - contact cost, the policy's
    as_of = str(scores["feature_as_of"].iloc[0])
    features = _frame(
        url,
        "select customer_id, total_revenue_365d from marts.customer_features "
        f"where as_of = '{as_of}'",
    )
    joined = targets.merge(features, on="customer_id", validate="one_to_one")
    policy = Policy()
    value = policy.retention_margin * joined["total_revenue_365d"].astype(float)
    expected = (
        joined["churn_probability"] * value * policy.retention_save_rate
        - policy.retention_contact_cost
    )
    np.testing.assert_allclose(joined["expected_value_saved"], expected, rtol=1e-9)
    np.testing.assert_allclose(
        targets["cumulative_expected_value"], targets["expected_value_saved"].cumsum()
    )
    assert list(targets["worth_contacting"]) == list(targets["expected_value_saved"] > 0)


def test_the_champion_card_shows_the_gains_table(url: str) -> None:
    champion = _champion_version()
    client = MlflowClient(load_settings().resolved_tracking_uri)
    metrics = client.get_run(champion.run_id).data.metrics
    assert 0.1 < metrics["top_decile_gain"] <= 1.0  # better than contacting at random
    card = load_settings().models_dir / champion.tags["dagster_run_id"] / "model_card.md"
    text = card.read_text()
    assert "## Gains and lift" in text
    assert "| group | customers | churners | churn rate | mean predicted | gain | lift |" in text
    assert f"({metrics['top_decile_gain']:.1%})" in text
    print(next(line for line in text.splitlines() if line.startswith("**The top 10%")))


def test_online_predictions_realized_joins_logged_predictions_to_matured_labels(
    url: str, tmp_path: Path
) -> None:
    # The demo built the model although no scorer had written to this warehouse: the
    # analytics step creates the log's table first.
    built = _frame(url, "select to_regclass('analytics.online_predictions_realized') as t")
    assert built["t"][0] is not None
    labels = _frame(
        url,
        "select distinct on (churned) customer_id, as_of, churned from marts.churn_labels "
        "where as_of = (select max(as_of) from marts.churn_labels) order by churned, customer_id",
    )
    (churner,) = labels[labels["churned"] == 1].itertuples()
    (stayer,) = labels[labels["churned"] == 0].itertuples()
    newest = _frame(url, "select max(as_of) as as_of from marts.customer_features")["as_of"][0]
    assert newest > churner.as_of  # the newest period's label window is still open
    prefix = f"test-{uuid.uuid4().hex[:8]}-"

    def logged(name: str, customer: str | None, as_of: Any, shadow: bool) -> tuple[Any, ...]:
        return (
            prefix + name, "2026-02-01T12:00:00+00:00", customer, "0" * 64,
            str(as_of) if as_of is not None else None, "churn-model", "1", "a" * 64, 0.7,
            "high", 2.0, "champion", "2" if shadow else None, "b" * 64 if shadow else None,
            0.4 if shadow else None, "medium" if shadow else None, None,
        )  # fmt: skip

    rows = [
        logged("churner", churner.customer_id, churner.as_of, shadow=True),
        logged("stayer", stayer.customer_id, stayer.as_of, shadow=False),
        logged("open-window", stayer.customer_id, newest, shadow=False),  # not matured
        logged("by-features", None, None, shadow=False),  # sent features: no label
    ]
    try:
        with warehouse.connect(url) as conn, conn.cursor() as cur:
            insert = f"insert into {ONLINE_PREDICTIONS_TABLE} ({', '.join(COLUMNS)}) values %s"
            execute_values(cur, insert, rows)
        project = churn_dbt_project()
        with environ(warehouse.parse_url(url).dbt_env()):
            invocation = DbtCliResource(project_dir=project).cli(
                ["build", "--select", "online_predictions_realized"],
                target_path=tmp_path,
                raise_on_error=False,
            )
            invocation.wait()
        assert invocation.is_successful()  # the model and its tests
        built = _frame(
            url,
            "select * from analytics.online_predictions_realized "
            f"where request_id like '{prefix}%' order by request_id",
        )
    finally:
        with warehouse.connect(url) as conn, conn.cursor() as cur:
            cur.execute(
                f"delete from {ONLINE_PREDICTIONS_TABLE} where request_id like %s", (prefix + "%",)
            )
    assert list(built["request_id"]) == [prefix + "churner", prefix + "stayer"]
    assert list(built["customer_id"]) == [churner.customer_id, stayer.customer_id]
    assert list(built["churned"]) == [1, 0]
    assert list(built["as_of"]) == [churner.as_of, stayer.as_of]
    assert list(built["shadow_model_version"]) == ["2", None]
    assert built["shadow_probability"].iloc[0] == 0.4
    assert list(built.columns) == [
        "request_id", "batch_item", "scored_at", "customer_id", "as_of", "served_by",
        "model_version",
        "churn_probability", "risk_band", "shadow_model_version", "shadow_probability",
        "churned",
    ]  # fmt: skip
