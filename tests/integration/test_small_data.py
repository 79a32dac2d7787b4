"""Data that cannot train a useful model stops the run before training, saying why.

Regressions (issue 11): the label-rate bounds were a literal fitted to the demo (a 70%
retailer failed with no hint of a setting), and too little data failed late or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from churn_assets import warehouse
from churn_assets.cli import main
from churn_assets.data.generator import GeneratorConfig, generate, write_raw_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
    write_raw_files(generate(GeneratorConfig(n_customers=50, seed=3)), churn_env)
    before = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    assert before["champion"] is not None

    result = CliRunner().invoke(main, ["run"])

    assert result.exit_code != 0
    gate = next(ln for ln in result.output.splitlines() if ln.startswith("gate training_data"))
    assert "too little data to train:" in gate
    assert "labelled customers (need 200, CHURN_MIN_LABELLED_CUSTOMERS)" in gate
    assert "churners (need 25, CHURN_MIN_CHURNERS)" in gate
    after = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    assert after == before  # nothing registered, the champion unchanged
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('scoring.churn_scores')")
        assert cur.fetchone() == (None,)  # no scores were written


def test_a_label_rate_bound_set_by_the_user_fails_naming_its_variable(
    demo: tuple[Result, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    result_demo, raw_dir = demo
    assert result_demo.exit_code == 0, result_demo.output
    monkeypatch.setenv("CHURN_RAW_DIR", str(raw_dir))
    monkeypatch.setenv("CHURN_MAX_LABEL_RATE", "0.10")  # the demo's rate is 19.8%
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code != 0
    gate = next(ln for ln in result.output.splitlines() if ln.startswith("gate training_data"))
    assert ">= max 0.1" in gate and "set CHURN_MAX_LABEL_RATE to move it" in gate
