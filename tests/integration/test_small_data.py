"""Data that cannot train a useful model stops the run before training, saying why.

Regressions (issue 11): the label-rate bounds were a literal fitted to the demo (a 70%
retailer failed with no hint of a setting), and too little data failed late or not at all.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from churn_assets.app.cli import main
from churn_assets.data.dataset import RAW_SOURCE_ATTR
from churn_assets.data.generator import generate, write_raw_files
from churn_assets.defs.resources import ChurnPolicy, policy_resource
from churn_assets.defs.training.checks import training_data_quality
from churn_assets.infra import warehouse
from tests.conftest import PLUMBING_DATA
from tests.unit.test_quality_training_data import _valid_frame

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_fifty_customers_stop_before_training_with_the_counts(
    demo: tuple[Result, Path],
    churn_env: Path,
    fresh_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A database of its own, so the session's demo warehouse keeps its features; the
    # session's MLflow store (with the demo champion) is the one that must not change.
    assert demo[0].exit_code == 0, demo[0].output
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", fresh_database_url)
    # 13 months (PLUMBING_DATA's), not 24: the counts are the holdout period's, whatever
    # the number of periods before it (half of them for dbt to build).
    small = replace(PLUMBING_DATA, n_customers=50, seed=3)
    write_raw_files(generate(small), churn_env)
    before = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    assert before["champion"] is not None

    result = CliRunner().invoke(main, ["run"])

    assert result.exit_code != 0
    gate = next(ln for ln in result.output.splitlines() if ln.startswith("gate training_data"))
    assert "too little data to train:" in gate
    assert "in the holdout period" in gate  # counted where the model is judged
    assert "labelled customers (need 200, CHURN_MIN_LABELLED_CUSTOMERS)" in gate
    assert "churners (need 25, CHURN_MIN_CHURNERS)" in gate
    assert "non-churners (need 25, CHURN_MIN_NON_CHURNERS)" in gate
    # the suite's row-count failure says the same as the counts: not repeated in the line
    assert "expect_table_row_count_to_be_between" not in gate
    after = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    assert after == before  # nothing registered, the champion unchanged
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('scoring.churn_scores')")
        assert cur.fetchone() == (None,)  # no scores were written


def test_a_label_rate_bound_set_by_the_user_fails_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The variable reaches the gate through the deployment's policy resource, as in a run
    # (how a failed gate reaches `churn run`'s output: the fifty-customers test above).
    monkeypatch.setenv("CHURN_MAX_LABEL_RATE", "0.10")  # the demo's rate is 19.8%
    with dg.DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        result = dg.materialize(
            [_snapshot(0.198, "/data/demo"), training_data_quality],
            instance=instance,
            resources={"policy": policy_resource()},
            raise_on_error=False,
        )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    description = evaluation.description or ""
    assert ">= max 0.1" in description and "set CHURN_MAX_LABEL_RATE to move it" in description


def _snapshot(label_rate: float, source: str) -> dg.AssetsDefinition:
    """A stand-in for ``training_dataset``: a valid frame with ``label_rate``, from ``source``,
    with the metadata the real asset records (the check reads earlier rates from it)."""
    frame = _valid_frame()
    churned = round(label_rate * len(frame))
    frame["churned"] = [1] * churned + [0] * (len(frame) - churned)
    frame.attrs[RAW_SOURCE_ATTR] = source

    @dg.asset(name="training_dataset")
    def snapshot() -> dg.Output[pd.DataFrame]:
        return dg.Output(
            frame,
            metadata={"label_rate": dg.MetadataValue.float(label_rate), "raw_source": source},
        )

    return snapshot


def test_label_rate_change_is_measured_against_the_last_accepted_snapshot_of_the_source(
    tmp_path: Path,
) -> None:
    # An instance of its own: the check reads the history of earlier snapshots from it.
    with dg.DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:

        def check(label_rate: float, source: str) -> dg.AssetCheckEvaluation:
            result = dg.materialize(
                [_snapshot(label_rate, source), training_data_quality],
                instance=instance,
                resources={"policy": ChurnPolicy()},
                raise_on_error=False,
            )
            (evaluation,) = result.get_asset_check_evaluations()
            return evaluation

        first = check(0.2, "/data/a")
        assert first.passed
        assert str(first.metadata["previous_label_rate"].value).startswith("none")

        jump = check(0.7, "/data/a")  # 20% -> 70%: a broken label or feed
        assert not jump.passed
        assert jump.metadata["previous_label_rate"].value == pytest.approx(0.2)
        assert "set CHURN_MAX_LABEL_RATE_CHANGE to move it" in (jump.description or "")

        # The refused 70% snapshot is not the baseline: the fixed label compares with 20%.
        fixed = check(0.3, "/data/a")
        assert fixed.passed, fixed.description
        assert fixed.metadata["previous_label_rate"].value == pytest.approx(0.2)

        # Another raw source is a new history, whatever its rate.
        other = check(0.7, "/data/b")
        assert other.passed, other.description
        assert str(other.metadata["previous_label_rate"].value).startswith("none")
