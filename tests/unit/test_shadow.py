"""Unit tests for the shadow comparison: champion and challenger on the same live requests."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.shadow import (
    NO_SHADOW_YET,
    ShadowPair,
    average_ranks,
    compare_shadow,
    describe,
    pairs_from_groups,
    spearman,
)
from churn_assets.tables.online_predictions import SHADOW_COLUMNS, ShadowGroup


def _at(minute: int) -> datetime:
    return datetime(2026, 2, 1, 12, minute, tzinfo=UTC)


def _rows(
    champion: str,
    challenger: str,
    probabilities: list[tuple[float, float]],
    bands: list[tuple[str, str]],
    minutes: list[int],
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "champion_version": champion,
            "challenger_version": challenger,
            "champion_probability": [c for c, _ in probabilities],
            "challenger_probability": [s for _, s in probabilities],
            "champion_band": [c for c, _ in bands],
            "challenger_band": [s for _, s in bands],
            "scored_at": [_at(m) for m in minutes],
        }
    )


# Champion v1 against challenger v2, four requests, with a tie on each side.
#   champion    0.1  0.4  0.4  0.8   ranks 1    2.5  2.5  4
#   challenger  0.2  0.2  0.5  0.9   ranks 1.5  1.5  3    4
# Centred ranks (mean 2.5): (-1.5, 0, 0, 1.5) and (-1, -1, 0.5, 1.5); products sum to
# 1.5 + 2.25 = 3.75, squares to 4.5 and 4.5: Spearman 3.75 / 4.5 = 5/6.
# Bands agree on 3 of 4 (the second request: medium vs low); |differences| 0.1, 0.2, 0.1,
# 0.1, mean 0.125.
TIED = _rows(
    "1",
    "2",
    [(0.1, 0.2), (0.4, 0.2), (0.4, 0.5), (0.8, 0.9)],
    [("low", "low"), ("medium", "low"), ("medium", "medium"), ("high", "high")],
    [3, 1, 4, 2],
)


def test_a_pair_is_judged_by_hand_with_ties_in_the_ranks() -> None:
    (pair,) = compare_shadow(TIED)
    assert (pair.champion_version, pair.challenger_version, pair.rows) == ("1", "2", 4)
    assert pair.band_agreement == 0.75
    assert pair.mean_abs_diff == pytest.approx(0.125)
    assert pair.rank_correlation == pytest.approx(5 / 6)
    assert (pair.first_scored_at, pair.last_scored_at) == (_at(1), _at(4))


def test_spearman_of_a_perfect_and_a_reversed_ranking() -> None:
    assert spearman([0.1, 0.5, 0.7], [0.2, 0.3, 0.9]) == pytest.approx(1.0)
    assert spearman([0.1, 0.5, 0.7], [0.9, 0.3, 0.2]) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("champion", "challenger"),
    [
        ([0.3], [0.6]),  # one request: no ranking to compare
        ([0.2, 0.4, 0.6], [0.5, 0.5, 0.5]),  # the challenger gave everyone the same score
        ([0.5, 0.5], [0.1, 0.9]),  # the champion did
    ],
)
def test_spearman_is_none_where_it_is_undefined(
    champion: list[float], challenger: list[float]
) -> None:
    assert spearman(champion, challenger) is None


def test_a_one_row_pair_has_its_numbers_and_no_rank_correlation() -> None:
    (pair,) = compare_shadow(_rows("3", "4", [(0.3, 0.65)], [("medium", "high")], [7]))
    assert pair.rows == 1
    assert pair.band_agreement == 0.0
    assert pair.mean_abs_diff == pytest.approx(0.35)
    assert pair.rank_correlation is None
    assert pair.first_scored_at == pair.last_scored_at == _at(7)


def test_pairs_are_separate_and_the_newest_comes_last() -> None:
    later = _rows("2", "3", [(0.2, 0.2), (0.7, 0.6)], [("low", "low"), ("high", "high")], [5, 9])
    # v9 against v10 ends at the same minute as v2 against v3: versions sort as numbers
    same_end = _rows("9", "10", [(0.5, 0.1)], [("medium", "low")], [9])
    shadow = pd.concat([later, same_end, TIED]).sample(frac=1.0, random_state=0)
    pairs = compare_shadow(shadow)
    assert [(p.champion_version, p.challenger_version) for p in pairs] == [
        ("1", "2"),  # last request at minute 4
        ("2", "3"),  # minute 9
        ("9", "10"),  # minute 9, later versions
    ]
    assert [p.rows for p in pairs] == [4, 2, 1]
    # (0.2, 0.7) against (0.2, 0.6): same order, same bands, |differences| 0 and 0.1
    assert pairs[1].rank_correlation == pytest.approx(1.0)
    assert pairs[1].band_agreement == 1.0
    assert pairs[1].mean_abs_diff == pytest.approx(0.05)


def test_no_shadow_rows_give_no_pairs() -> None:
    assert compare_shadow(pd.DataFrame(columns=list(SHADOW_COLUMNS))) == []


def test_a_frame_without_the_oriented_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="challenger_band"):
        compare_shadow(TIED.drop(columns="challenger_band"))


def test_as_dict_is_json_with_iso_timestamps() -> None:
    (pair,) = compare_shadow(TIED)
    record = json.loads(json.dumps(pair.as_dict()))
    assert record["first_scored_at"] == "2026-02-01T12:01:00+00:00"
    assert record["last_scored_at"] == "2026-02-01T12:04:00+00:00"
    assert record["rank_correlation"] == pytest.approx(5 / 6)
    assert set(record) == {f.name for f in ShadowPair.__dataclass_fields__.values()}


def test_describe_names_the_newest_pair_or_why_there_is_none() -> None:
    assert describe([]) == NO_SHADOW_YET
    one_row = compare_shadow(_rows("3", "4", [(0.3, 0.65)], [("medium", "high")], [7]))
    assert describe(compare_shadow(TIED) + one_row) == (
        "challenger v4 against champion v3 on 1 request(s): same risk band on 0.0%, mean "
        "|probability difference| 0.3500, Spearman undefined (under 2 requests or one side "
        "constant)"
    )
    assert describe(compare_shadow(TIED)).endswith(
        "same risk band on 75.0%, mean |probability difference| 0.1250, Spearman 0.833"
    )


@pytest.mark.parametrize("decimals", [1, 2, 6])  # many ties, some, hardly any
def test_average_ranks_are_pandas_average_ranks(decimals: int) -> None:
    values = np.round(np.random.default_rng(decimals).random(2_000), decimals)
    expected = pd.Series(values).rank(method="average").to_numpy()
    np.testing.assert_array_equal(average_ranks(values), expected)


def test_spearman_with_a_missing_value_is_none() -> None:
    assert spearman([0.1, float("nan"), 0.7], [0.2, 0.3, 0.9]) is None


def test_pairs_from_groups_judge_a_pair_as_compare_shadow_does() -> None:
    """The aggregated form of TIED (rows in another order: the order is unspecified)."""
    group = ShadowGroup(
        champion_version="1",
        challenger_version="2",
        same_band=3,
        first_scored_at=_at(1),
        last_scored_at=_at(4),
        champion_probability=np.array([0.8, 0.4, 0.1, 0.4]),
        challenger_probability=np.array([0.9, 0.5, 0.2, 0.2]),
    )
    one_row = ShadowGroup("3", "4", 0, _at(7), _at(7), np.array([0.3]), np.array([0.65]))
    pairs = pairs_from_groups([one_row, group])
    expected = compare_shadow(TIED) + compare_shadow(
        _rows("3", "4", [(0.3, 0.65)], [("medium", "high")], [7])
    )
    assert len(pairs) == len(expected) == 2
    for got, want in zip(pairs, expected, strict=True):
        assert got.as_dict() == pytest.approx(want.as_dict())
