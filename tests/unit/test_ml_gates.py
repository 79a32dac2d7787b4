"""Unit tests for the release gates."""

from __future__ import annotations

import pytest

from churn_assets.ml.gates import Gate, reference_gate


def test_gate_passed_follows_its_comparison() -> None:
    assert Gate("auc", 0.6, ">=", observed=0.6).passed is True
    assert Gate("gap", 0.1, "<=", observed=0.2).passed is False
    assert Gate("auc", 0.6).passed is None


def test_reference_gate_warns_only_beyond_the_tolerance() -> None:
    within = reference_gate(0.800, 0.805, tolerance=0.01)
    assert within.passed is True
    assert within.observed == pytest.approx(-0.005)
    trailing = reference_gate(0.800, 0.820, tolerance=0.01)
    assert trailing.passed is False
    assert trailing.observed == pytest.approx(-0.02)
    assert trailing.threshold == -0.01
    assert reference_gate(0.85, 0.80, tolerance=0.0).passed is True
    assert reference_gate(0.80, None, tolerance=0.01).passed is None
