"""The shadow comparison on a real Postgres: rows logged as the scorer logs them (champion
and canary rows), read back as champion and challenger, compared in process and by
`churn status`. Each test gets an empty database of its own (no demo needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pytest
from click.testing import CliRunner
from psycopg2.extras import execute_values

from churn_assets.app.cli import main
from churn_assets.defs.resources import ExternalPostgresWarehouse
from churn_assets.defs.serving.assets import shadow_comparison
from churn_assets.infra import warehouse
from churn_assets.ml.shadow import NO_SHADOW_YET, compare_shadow, pairs_from_groups
from churn_assets.schema import ONLINE_PREDICTIONS_TABLE
from churn_assets.tables.online_predictions import COLUMNS
from churn_assets.tables.postgres.warehouse import PostgresWarehouse

pytestmark = pytest.mark.integration


def _logged(
    request_id: str,
    minute: int | datetime,
    served_by: str,
    answered: tuple[str, float, str],
    shadow: tuple[str, float, str] | None,
) -> tuple[Any, ...]:
    """One log row in column order: (version, probability, band) of the model that answered
    and of the shadow model."""
    version, probability, band = answered
    shadow_version, shadow_probability, shadow_band = shadow or (None, None, None)
    at = minute if isinstance(minute, datetime) else datetime(2026, 2, 1, 12, minute, tzinfo=UTC)
    return (
        request_id,
        at,
        f"C{request_id}",
        "0" * 64,
        "2026-01-31",
        "churn-model",
        version,
        "a" * 64,
        probability,
        band,
        3.0,
        served_by,
        shadow_version,
        None if shadow is None else "b" * 64,
        shadow_probability,
        shadow_band,
        None,  # batch_item: a POST /predict
    )


# Champion v1 and challenger v2 on four requests: two answered by the champion (the
# challenger's result is the shadow), two canary requests answered by the challenger (the
# champion's result is the shadow). As champion / challenger that is
#   champion    0.1  0.4  0.4  0.8     bands  low     medium  medium  high
#   challenger  0.2  0.2  0.5  0.9            low     low     medium  high
# (tests/unit/test_shadow.py works these out: bands agree on 3/4, mean |difference| 0.125,
# Spearman 5/6). Before them, champion v1 against an earlier challenger v3 on one request;
# after them, a request with no second model (not a shadow result).
ROWS = [
    _logged("r0", 0, "champion", ("1", 0.3, "medium"), ("3", 0.7, "high")),
    _logged("r1", 1, "champion", ("1", 0.1, "low"), ("2", 0.2, "low")),
    _logged("r2", 2, "champion", ("1", 0.4, "medium"), ("2", 0.2, "low")),
    _logged("r3", 3, "canary", ("2", 0.5, "medium"), ("1", 0.4, "medium")),
    _logged("r4", 4, "canary", ("2", 0.9, "high"), ("1", 0.8, "high")),
    _logged("r5", 5, "champion", ("1", 0.6, "high"), None),
]


@pytest.fixture
def logged_url(fresh_database_url: str) -> str:
    PostgresWarehouse(fresh_database_url).create_prediction_log()
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        execute_values(
            cur, f"insert into {ONLINE_PREDICTIONS_TABLE} ({', '.join(COLUMNS)}) values %s", ROWS
        )
    return fresh_database_url


def _materialise(url: str) -> dict[str, Any]:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [shadow_comparison],
            instance=instance,
            resources={"warehouse": ExternalPostgresWarehouse(connection_url=url)},
        )
        assert result.success
        (materialisation,) = result.asset_materializations_for_node("shadow_comparison")
        return {key: value.value for key, value in materialisation.metadata.items()}


def test_shadow_comparison_orients_canary_rows_and_reports_the_newest_pair(
    logged_url: str,
) -> None:
    metadata = _materialise(logged_url)
    assert metadata["rows"] == 5  # r0..r4: r5 had no second model
    assert (metadata["champion_version"], metadata["challenger_version"]) == ("1", "2")
    assert metadata["band_agreement"] == 0.75
    assert metadata["mean_abs_diff"] == pytest.approx(0.125)
    assert metadata["rank_correlation"] == pytest.approx(5 / 6)
    pairs = [record.data for record in metadata["pairs"].records]
    assert [(p["champion_version"], p["challenger_version"], p["rows"]) for p in pairs] == [
        ("1", "3", 1),  # its only request came first
        ("1", "2", 4),
    ]
    assert pairs[0]["rank_correlation"] is None  # one request: no ranking
    assert pairs[1]["first_scored_at"] == "2026-02-01T12:01:00+00:00"
    assert pairs[1]["last_scored_at"] == "2026-02-01T12:04:00+00:00"
    assert metadata["summary"].startswith("challenger v2 against champion v1 on 4 request(s)")


def test_no_log_table_is_a_successful_materialisation_that_says_why(
    fresh_database_url: str,
) -> None:
    metadata = _materialise(fresh_database_url)
    assert metadata["rows"] == 0
    assert metadata["summary"] == NO_SHADOW_YET
    assert metadata["pairs"].records == []
    assert "band_agreement" not in metadata
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (ONLINE_PREDICTIONS_TABLE,))
        assert cur.fetchone()[0] is None  # reading the log creates nothing


def test_status_reports_the_shadow_pairs_from_the_log(
    logged_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", logged_url)
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    shadow = json.loads(result.output)["shadow"]
    assert shadow["rows"] == 5
    newest = shadow["pairs"][-1]
    assert (newest["champion_version"], newest["challenger_version"]) == ("1", "2")
    assert newest["rows"] == 4 and newest["band_agreement"] == 0.75
    assert newest["mean_abs_diff"] == pytest.approx(0.125)
    assert newest["rank_correlation"] == pytest.approx(5 / 6)
    text = CliRunner().invoke(main, ["status"]).output
    assert "shadow: challenger v2 against champion v1 on 4 request(s)" in text


def test_status_shadow_is_null_when_the_warehouse_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["shadow"] is None


def _band(probability: float) -> str:
    return "high" if probability >= 0.6 else "medium" if probability >= 0.3 else "low"


def _many_rows(seed: int = 7) -> list[tuple[Any, ...]]:
    """Three hundred requests over three (champion, challenger) pairs, champion and canary
    rows mixed, probabilities on a coarse grid (ties on both sides), plus a pair with one
    request, a pair whose challenger gave everyone the same probability, and requests
    without a second model."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    for i in range(300):
        at = start + timedelta(seconds=int(rng.integers(0, 86_400 * 30)), microseconds=i)
        pair = ("4", "5") if i < 150 else ("5", "10")
        champion_p = round(float(rng.random()), 1)
        challenger_p = round(min(1.0, max(0.0, champion_p + float(rng.normal(0, 0.2)))), 2)
        if i % 3 == 0:  # a canary row: the challenger answered, the champion shadowed
            answered = (pair[1], challenger_p, _band(challenger_p))
            shadow: tuple[str, float, str] | None = (pair[0], champion_p, _band(champion_p))
            served_by = "canary"
        else:
            answered = (pair[0], champion_p, _band(champion_p))
            shadow = (pair[1], challenger_p, _band(challenger_p))
            served_by = "champion"
        if i % 10 == 9:
            shadow = None  # no second model for this one
        rows.append(_logged(f"m{i}", at, served_by, answered, shadow))
    rows.append(_logged("single", start, "champion", ("2", 0.4, "medium"), ("3", 0.7, "high")))
    for i in range(5):  # challenger v7 answers 0.5 whatever the champion says
        at = start + timedelta(days=40, minutes=i)
        rows.append(
            _logged(f"flat{i}", at, "champion", ("6", i / 10, _band(i / 10)), ("7", 0.5, "medium"))
        )
    return rows


def test_the_pairs_aggregated_by_postgres_equal_the_pairs_of_the_row_by_row_frame(
    fresh_database_url: str,
) -> None:
    """What `churn status` and the asset now read (one aggregating query) against what they
    read before (every row into pandas), on the same log."""
    log = PostgresWarehouse(fresh_database_url)
    log.create_prediction_log()
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        insert = f"insert into {ONLINE_PREDICTIONS_TABLE} ({', '.join(COLUMNS)}) values %s"
        execute_values(cur, insert, _many_rows())
    before = compare_shadow(log.read_shadow_results())
    after = pairs_from_groups(log.read_shadow_groups())
    assert [(p.champion_version, p.challenger_version) for p in after] == [
        ("2", "3"),
        ("4", "5"),
        ("5", "10"),
        ("6", "7"),
    ]
    assert [(p.champion_version, p.challenger_version) for p in before] == [
        (p.champion_version, p.challenger_version) for p in after
    ]
    for old, new in zip(before, after, strict=True):
        assert new.rows == old.rows
        assert new.band_agreement == old.band_agreement
        assert new.mean_abs_diff == pytest.approx(old.mean_abs_diff, rel=1e-12)
        if old.rank_correlation is None:
            assert new.rank_correlation is None
        else:
            assert new.rank_correlation == pytest.approx(old.rank_correlation, rel=1e-12)
        assert (new.first_scored_at, new.last_scored_at) == (
            old.first_scored_at,
            old.last_scored_at,
        )
        assert new.as_dict().keys() == old.as_dict().keys()
        assert new.as_dict()["last_scored_at"] == old.as_dict()["last_scored_at"]
    # The cases the data was made for: a lone request and a constant side have no ranking.
    assert after[0].rows == 1 and after[0].rank_correlation is None
    assert after[-1].rows == 5 and after[-1].rank_correlation is None
    assert sum(p.rows for p in after) == 1 + 270 + 5


def test_shadow_groups_of_a_warehouse_without_the_log_are_empty_and_create_nothing(
    fresh_database_url: str,
) -> None:
    assert PostgresWarehouse(fresh_database_url).read_shadow_groups() == []
    with warehouse.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (ONLINE_PREDICTIONS_TABLE,))
        assert cur.fetchone()[0] is None
