"""The policy: one definition per threshold, read from the environment, validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from churn_assets.policy import Policy, PolicyError, env_name, load_policy, rules

PACKAGE = Path(__file__).resolve().parents[2] / "churn_assets"


def test_load_policy_defaults_without_any_variable() -> None:
    assert load_policy({}) == Policy()
    assert (Policy().min_auc, Policy().max_label_rate, Policy().drift_share_threshold) == (
        0.60,
        1.0,
        0.3,
    )


def test_load_policy_reads_every_rules_variable() -> None:
    # Each rule's variable moves exactly that rule (a typo in a name would leave the default).
    for rule in rules():
        # a valid value other than the default: 10% less (0.1 for a zero default); ints + 1
        if rule.kind is int:
            changed: float = rule.default + 1
        else:
            changed = rule.default * 0.9 if rule.default else 0.1
        policy = load_policy({rule.env: str(changed)})
        assert getattr(policy, rule.name) == pytest.approx(changed), rule.env


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        # not a number
        ({"CHURN_MIN_AUC": "high"}, "CHURN_MIN_AUC='high' is not a number"),
        # an int rule given a fraction
        ({"CHURN_MIN_CHURNERS": "2.5"}, "CHURN_MIN_CHURNERS='2.5' is not an integer"),
        # out of range: an AUC above 1 could never pass
        ({"CHURN_MIN_AUC": "1.5"}, r"CHURN_MIN_AUC=1.5: min_auc must be between 0.0 and 1.0"),
        # bounds in the wrong order: no label rate could pass
        (
            {"CHURN_MIN_LABEL_RATE": "0.7", "CHURN_MAX_LABEL_RATE": "0.6"},
            r"CHURN_MIN_LABEL_RATE \(0.7\) must be below CHURN_MAX_LABEL_RATE \(0.6\)",
        ),
        # risk bands that overlap
        ({"CHURN_RISK_MEDIUM_FROM": "0.7"}, "CHURN_RISK_MEDIUM_FROM"),
    ],
)
def test_load_policy_names_the_bad_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(environ)


def test_every_rule_has_a_distinct_churn_variable_and_a_meaning() -> None:
    names = [rule.env for rule in rules()]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"CHURN_[A-Z_]+", name) for name in names)
    assert all(len(rule.meaning) > 20 for rule in rules())
    assert env_name("max_label_rate") == "CHURN_MAX_LABEL_RATE"


def test_no_policy_variable_is_read_anywhere_else_in_the_package() -> None:
    # One home: a second reader of a policy variable would be a second copy of the rule.
    for path in PACKAGE.rglob("*.py"):
        if path.name == "policy.py":
            continue
        text = path.read_text()
        for rule in rules():
            assert f'"{rule.env}"' not in text, f"{path} reads {rule.env} itself"
