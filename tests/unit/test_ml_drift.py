"""Unit tests for feature drift: PSI by hand, the tests behind the drifted flag, the gate."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from dataclasses import replace
from functools import cache

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.drift import (
    PSI_EPSILON,
    DriftPolicy,
    categorical_drift,
    categorical_psi,
    compute_drift,
    histograms_png,
    html_report,
    numeric_drift,
    psi,
)
from churn_assets.ml.features import CATEGORICAL_FEATURE, EMAIL_DOMAIN_CLASSES, NUMERIC_FEATURES
from churn_assets.policy import Policy
from tests.unit._features import generated_snapshot

DRIFT = DriftPolicy.from_policy(Policy())

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_FEATURES = (*NUMERIC_FEATURES, CATEGORICAL_FEATURE)
# 0..999: the deciles of this reference are exactly the blocks 0-99, 100-199, ..., 900-999.
UNIFORM = np.arange(1000, dtype=np.float64)
BLOCK_CENTRES = np.arange(10) * 100.0 + 50.0


def _psi_by_hand(ref: list[float], cur: list[float]) -> float:
    return sum((c - r) * math.log(c / r) for r, c in zip(ref, cur, strict=True))


@cache
def _snapshots() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two ~1,000-row feature frames from the same generator, different seeds."""
    reference, _ = generated_snapshot(1170, seed=1)
    current, _ = generated_snapshot(1170, seed=2)
    return reference, current


def _shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Customers spending half, ordering 60 days later, and 60% of free emails now business."""
    out = frame.copy()
    for name in ("total_revenue_30d", "total_revenue_90d", "total_revenue_365d"):
        out[name] = out[name] * 0.5
    out["days_since_last_order"] = out["days_since_last_order"] + 60
    moved = (out[CATEGORICAL_FEATURE] == "free") & (np.random.default_rng(0).random(len(out)) < 0.6)
    out.loc[moved, CATEGORICAL_FEATURE] = "business"
    return out


def test_psi_of_identical_samples_is_zero() -> None:
    values = np.random.default_rng(0).lognormal(size=500)
    assert psi(values, values.copy()) == 0.0


@pytest.mark.parametrize(
    "shares",
    [
        # Mass moves from the top deciles to the bottom ones.
        (0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05),
        # A small wobble around uniform.
        (0.12, 0.08, 0.1, 0.1, 0.11, 0.09, 0.1, 0.1, 0.1, 0.1),
        # Almost everything in one decile.
        (0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.91),
    ],
)
def test_psi_matches_the_hand_computed_value_for_known_bin_shares(
    shares: tuple[float, ...],
) -> None:
    current = np.repeat(BLOCK_CENTRES, np.round(np.array(shares) * 1000).astype(int))
    assert psi(UNIFORM, current) == pytest.approx(_psi_by_hand([0.1] * 10, list(shares)), abs=1e-9)


@pytest.mark.parametrize(
    ("outside", "inside"),
    [
        # Below the reference minimum -> first bin, like the minimum itself.
        (-1e6, 0.0),
        # Above the reference maximum -> last bin, like the maximum itself.
        (1e6, 999.0),
    ],
)
def test_psi_puts_out_of_range_current_values_in_the_outer_bins(
    outside: float, inside: float
) -> None:
    half = np.full(500, 450.0)  # the other half sits in the 5th decile
    with_outside = np.concatenate([half, np.full(500, outside)])
    with_inside = np.concatenate([half, np.full(500, inside)])
    expected = _psi_by_hand(
        [0.1] * 10,
        [0.5 if k in (4, 0 if outside < 0 else 9) else PSI_EPSILON for k in range(10)],
    )
    assert psi(UNIFORM, with_outside) == pytest.approx(expected, abs=1e-9)
    assert psi(UNIFORM, with_outside) == psi(UNIFORM, with_inside)


def test_psi_gives_a_point_mass_at_the_minimum_its_own_bin() -> None:
    # Reference: half zeros (e.g. no revenue in 30 days), then 1..5. Deciles: 0 (x5), 0.5,
    # 1.4, 2.3, 3.2, 4.1 -> bins (-inf,0] (0,0.5] (0.5,1.4] ... (4.1,inf) with shares
    # .5, 0, .1, .1, .1, .1, .1. Current: 20% zeros, 16% each of 1..5.
    reference = np.array([0, 0, 0, 0, 0, 1, 2, 3, 4, 5], dtype=np.float64)
    current = np.concatenate([np.zeros(5), np.tile(np.arange(1.0, 6.0), 4)])
    expected = _psi_by_hand([0.5] + [0.1] * 5, [0.2] + [0.16] * 5)  # the empty bin adds 0
    assert psi(reference, current) == pytest.approx(expected, abs=1e-9)


def test_psi_keeps_an_emptied_bin_finite_with_the_epsilon() -> None:
    current = np.repeat(BLOCK_CENTRES[1:], 111)  # the first decile is empty now
    value = psi(UNIFORM, current)
    assert math.isfinite(value)
    shares = [PSI_EPSILON] + [111 / 999] * 9
    assert value == pytest.approx(_psi_by_hand([0.1] * 10, shares), abs=1e-9)


@pytest.mark.parametrize(
    ("reference", "current", "expected"),
    [
        # Identical mixes.
        (["free", "business"] * 5, ["business", "free"] * 3, 0.0),
        # free 60% -> 30%, business 20% -> 50%, education and unknown unchanged.
        (
            ["free"] * 6 + ["business"] * 2 + ["education", "unknown"],
            ["free"] * 3 + ["business"] * 5 + ["education", "unknown"],
            _psi_by_hand([0.6, 0.2], [0.3, 0.5]),
        ),
        # A category outside the vocabulary counts as "other": 0% -> 50% of the rows.
        (
            ["free"] * 4,
            ["free", "government"] * 2,
            _psi_by_hand([1.0, PSI_EPSILON], [0.5, 0.5]),
        ),
    ],
)
def test_categorical_psi_matches_the_hand_computed_value(
    reference: list[str], current: list[str], expected: float
) -> None:
    assert categorical_psi(reference, current, EMAIL_DOMAIN_CLASSES) == pytest.approx(
        expected, abs=1e-12
    )


def test_numeric_drift_ks_finds_no_difference_between_samples_of_one_distribution() -> None:
    rng = np.random.default_rng(1)
    result = numeric_drift("x", rng.normal(size=5000), rng.normal(size=5000), DRIFT)
    assert result.p_value > 0.2
    assert result.psi < 0.02
    assert not result.drifted


def test_numeric_drift_ks_finds_a_shifted_normal() -> None:
    rng = np.random.default_rng(2)
    result = numeric_drift("x", rng.normal(size=2000), rng.normal(0.5, 1.0, size=2000), DRIFT)
    assert result.p_value < 1e-6
    assert result.statistic > 0.15
    assert result.drifted
    assert result.current_mean == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize(
    ("n", "shift", "psi_flags", "test_flags", "drifted"),
    [
        # Tiny samples, no shift: PSI is large by chance, the KS test is not -> not drifted.
        (25, 0.0, True, False, False),
        # Huge samples, trivial shift (0.02 sd): KS is significant, PSI tiny -> not drifted.
        (200_000, 0.02, False, True, False),
        # A real shift on a moderate sample: both flag -> drifted.
        (1000, 1.0, True, True, True),
    ],
)
def test_numeric_drift_needs_both_psi_and_the_test_to_flag(
    n: int, shift: float, psi_flags: bool, test_flags: bool, drifted: bool
) -> None:
    rng = np.random.default_rng(3)
    result = numeric_drift("x", rng.normal(size=n), rng.normal(shift, 1.0, size=n), DRIFT)
    policy = DRIFT
    assert (result.psi >= policy.psi_threshold) is psi_flags
    assert (result.p_value < policy.ks_pvalue_threshold) is test_flags
    assert result.drifted is drifted


def test_categorical_drift_uses_the_chi_square_test_and_skips_unused_categories() -> None:
    reference = ["free"] * 600 + ["business"] * 400
    vocabulary = ("free", "business", "education")  # education is in neither sample
    shifted = categorical_drift(
        "c", reference, ["free"] * 300 + ["business"] * 700, vocabulary, DRIFT
    )
    assert shifted.kind == "categorical" and shifted.reference_mean is None
    assert shifted.p_value < 1e-6 and shifted.drifted
    same = categorical_drift("c", reference, list(reversed(reference)), ("free", "business"), DRIFT)
    assert same.statistic == 0.0 and same.p_value == 1.0 and not same.drifted
    single = categorical_drift("c", ["free"] * 10, ["free"] * 5, EMAIL_DOMAIN_CLASSES, DRIFT)
    assert (single.statistic, single.p_value) == (0.0, 1.0)


def test_compute_drift_of_identical_frames_is_zero_everywhere() -> None:
    reference, _ = _snapshots()
    report = compute_drift(reference, reference.copy(), DRIFT)
    assert [f.feature for f in report.features] == list(ALL_FEATURES)
    assert all(f.psi == 0.0 and not f.drifted for f in report.features)
    assert report.drift_share == 0.0 and report.gate_passed


def test_compute_drift_passes_two_samples_of_the_same_distribution() -> None:
    reference, current = _snapshots()
    report = compute_drift(reference, current, DRIFT)
    assert report.gate_passed
    assert report.n_drifted == 0
    assert max(f.psi for f in report.features) < 0.1
    assert (report.n_reference, report.n_current) == (len(reference), len(current))


def test_compute_drift_fails_the_gate_on_shifted_customers() -> None:
    reference, current = _snapshots()
    report = compute_drift(reference, _shifted(current), DRIFT)
    drifted = {f.feature for f in report.features if f.drifted}
    assert drifted == {
        "days_since_last_order",
        "total_revenue_30d",
        "total_revenue_90d",
        "total_revenue_365d",
        CATEGORICAL_FEATURE,
    }
    assert report.drift_share == 5 / 8
    assert not report.gate_passed
    assert report.verdict.startswith("drift gate FAILED: 5 of 8 features drifted")
    by_name = {f.feature: f for f in report.features}
    recency = by_name["days_since_last_order"]
    assert recency.current_mean is not None and recency.reference_mean is not None
    assert recency.current_mean - recency.reference_mean == pytest.approx(
        60 + current["days_since_last_order"].mean() - reference["days_since_last_order"].mean()
    )


@pytest.mark.parametrize(
    ("shifted", "threshold", "share", "passed"),
    [
        # Nothing shifted.
        ((), 0.3, 0.0, True),
        # One of eight: 12.5% < 30%.
        (("days_since_last_order",), 0.3, 1 / 8, True),
        # Three of eight: 37.5% >= 30%.
        (("days_since_last_order", "cart_diversity", "customer_lifetime_days"), 0.3, 3 / 8, False),
        # Exactly at the threshold fails (the gate passes only below it).
        (
            ("days_since_last_order", "cart_diversity", "customer_lifetime_days"),
            3 / 8,
            3 / 8,
            False,
        ),
        # Just above the share passes.
        (("days_since_last_order", "cart_diversity", "customer_lifetime_days"), 0.4, 3 / 8, True),
    ],
)
def test_compute_drift_share_is_drifted_features_over_all_features(
    shifted: tuple[str, ...], threshold: float, share: float, passed: bool
) -> None:
    reference, current = _snapshots()
    current = current.copy()
    for name in shifted:
        current[name] = current[name] + 3 * current[name].std()
    report = compute_drift(reference, current, replace(DRIFT, drift_share_threshold=threshold))
    assert {f.feature for f in report.features if f.drifted} == set(shifted)
    assert report.drift_share == share
    assert report.threshold == threshold
    assert report.gate_passed is passed
    assert report.verdict.startswith(f"drift gate {'passed' if passed else 'FAILED'}: ")
    assert (
        f"share {share:.1%} {'<' if passed else '>='} threshold {threshold:.1%}" in report.verdict
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        # Every missing column is named, with the frame it is missing from.
        (
            lambda f: f.drop(columns=["cart_diversity", CATEGORICAL_FEATURE]),
            "current features are missing column\\(s\\): cart_diversity, email_domain_class",
        ),
        # No rows: nothing to compare.
        (lambda f: f.iloc[:0], "current features are empty"),
        # A missing numeric value is an upstream bug, not a drift.
        (lambda f: f.assign(order_frequency=np.nan), "current order_frequency must be finite"),
    ],
)
def test_compute_drift_rejects_unusable_frames(
    change: Callable[[pd.DataFrame], pd.DataFrame], match: str
) -> None:
    reference, current = _snapshots()
    with pytest.raises(ValueError, match=match):
        compute_drift(reference, change(current), DRIFT)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bins": 1}, "n_bins"),  # one bin cannot show a shift
        ({"drift_share_threshold": 0.0}, "drift_share_threshold"),  # would always fail
        ({"ks_pvalue_threshold": 0.0}, "ks_pvalue_threshold"),  # nothing could ever drift
        ({"psi_threshold": -0.1}, "psi_threshold"),
    ],
)
def test_drift_policy_rejects_meaningless_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replace(DRIFT, **kwargs)


def test_drift_report_to_frame_and_markdown_have_one_row_per_feature() -> None:
    reference, current = _snapshots()
    report = compute_drift(reference, _shifted(current), DRIFT)
    frame = report.to_frame()
    assert list(frame["feature"]) == list(ALL_FEATURES)
    assert frame["drifted"].tolist() == [f.drifted for f in report.features]
    assert frame.loc[frame["feature"] == CATEGORICAL_FEATURE, "reference_mean"].isna().all()
    table = report.markdown_table().splitlines()
    assert len(table) == 2 + len(ALL_FEATURES)
    assert table[2].startswith("| days_since_last_order | numeric | ")
    assert table[2].endswith("| yes |")
    assert table[-1].startswith("| email_domain_class | categorical | ")


def test_histograms_png_is_png_bytes_of_the_panel_grid() -> None:
    reference, current = _snapshots()
    png = histograms_png(reference, _shifted(current))
    assert png.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1200, 600)


def test_html_report_is_a_standalone_page_with_verdict_table_context_and_image() -> None:
    reference, current = _snapshots()
    report = compute_drift(reference, _shifted(current), DRIFT)
    png = b"\x89PNG\r\n\x1a\nnot really"
    page = html_report(
        report,
        png,
        title="Drift <weekly>",
        context={"reference model": "churn-model v3", "current as_of": "2025-11-01"},
    )
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Drift &lt;weekly&gt;</title>" in page  # escaped, not markup
    assert report.verdict.replace(">=", "&gt;=") in page
    assert "<th>reference model</th><td>churn-model v3</td>" in page
    assert "<td>2025-11-01</td>" in page
    rows = re.findall(r'<tr class="(drifted|stable)"[^>]*><td>([a-z_0-9]+)</td>', page)
    assert rows == [("drifted" if f.drifted else "stable", f.feature) for f in report.features]
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded is not None and base64.b64decode(embedded.group(1)) == png
    assert "http" not in page  # standalone: no external stylesheet, script or image
