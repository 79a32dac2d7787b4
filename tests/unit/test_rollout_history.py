"""The rollout history from the registry's promotion tags, and the card section it makes."""

from __future__ import annotations

from churn_assets.ml.model_card import ROLLOUT_HEADING, with_rollout_history
from churn_assets.ml.tracking import (
    TAG_DECIDED_AT,
    TAG_DECISION,
    TAG_PROMOTION_COMPARED_WITH,
    TAG_PROMOTION_REASON,
    history_from_tags,
)

_REASON = TAG_PROMOTION_REASON
_REPLACED = TAG_PROMOTION_COMPARED_WITH


def _promoted(at: str | None, reason: str, replaced: str = "none") -> dict[str, str]:
    tags = {TAG_DECISION: "promoted", _REASON: reason, _REPLACED: replaced}
    return tags | ({TAG_DECIDED_AT: at} if at else {})


def test_each_champion_reigns_until_the_next_promotion_in_the_order_they_were_applied() -> None:
    history = history_from_tags(
        {
            # v12 was promoted before v9 (a re-decided older version): time decides, not number
            "9": _promoted("2026-03-02T10:00:00+00:00", "AUC gain 0.03", replaced="12"),
            "12": _promoted("2026-02-01T10:00:00+00:00", "first gated version"),
            "10": {TAG_DECISION: "kept", _REASON: "required gain 0.010"},
            "11": {},  # undecided
        }
    )
    assert [(r["version"], r["since"], r["until"], r["replaced"]) for r in history] == [
        ("12", "2026-02-01T10:00:00+00:00", "2026-03-02T10:00:00+00:00", None),
        ("9", "2026-03-02T10:00:00+00:00", None, "12"),
    ]
    assert history[1]["reason"] == "AUC gain 0.03"


def test_versions_promoted_before_times_were_recorded_come_first_in_version_order() -> None:
    history = history_from_tags(
        {
            "3": _promoted("2026-01-05T00:00:00+00:00", "drift"),
            "2": _promoted(None, "older"),
            "1": _promoted(None, "oldest"),
        }
    )
    assert [r["version"] for r in history] == ["1", "2", "3"]
    assert history[0]["since"] is None and history[1]["until"] == "2026-01-05T00:00:00+00:00"


def test_nothing_promoted_is_an_empty_history() -> None:
    assert history_from_tags({"1": {TAG_DECISION: "kept"}}) == []


def test_the_cards_section_is_replaced_not_appended_again() -> None:
    first = [{"version": "1", "since": "t1", "until": None, "replaced": None, "reason": "a|b"}]
    card = with_rollout_history("# Card\n\n## Data\n\nrows\n", first)
    assert card.count(ROLLOUT_HEADING) == 1
    assert "| v1 | t1 | now | none | a/b |" in card  # a pipe in a reason splits no cell
    second = [{**first[0], "until": "t2"}]
    second.append({"version": "2", "since": "t2", "until": None, "replaced": "1", "reason": "c"})
    again = with_rollout_history(card, second)
    assert again.count(ROLLOUT_HEADING) == 1 and again.startswith("# Card\n\n## Data\n\nrows\n")
    assert "| v1 | t1 | t2 | none |" in again and "| v2 | t2 | now | v1 | c |" in again
