"""The training-snapshot suite passes clean data and names every kind of breakage it guards."""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn_assets.policy import Policy, load_policy
from churn_assets.quality.training_data import (
    EXPECTED_COLUMNS,
    NOT_EVALUATED,
    ExpectationFailure,
    TrainingDataRules,
    ValidationReport,
    build_suite,
    too_little_data,
    validate_training_dataset,
)

N_ROWS = 300
RULES = TrainingDataRules(Policy())
AS_OF = datetime.date(2024, 6, 1)


def _valid_frame(n: int = N_ROWS, seed: int = 7) -> pd.DataFrame:
    """Synthetic snapshot shaped like ``marts.training_snapshot``: nested revenues, ~20% churn."""
    rng = np.random.default_rng(seed)
    r30 = np.where(rng.random(n) < 0.3, 0.0, rng.gamma(2.0, 15.0, n).round(2))
    r90 = r30 + rng.gamma(2.0, 30.0, n).round(2)
    r365 = r90 + rng.gamma(2.0, 100.0, n).round(2)
    days_since = rng.integers(0, 365, n).astype("int64")
    classes = ["free", "business", "education", "unknown"]
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "as_of": [AS_OF] * n,
            "days_since_last_order": days_since,
            "total_revenue_30d": r30,
            "total_revenue_90d": r90,
            "total_revenue_365d": r365,
            "order_frequency": rng.gamma(1.5, 0.5, n),
            "cart_diversity": rng.integers(0, 12, n).astype("int64"),
            "email_domain_class": rng.choice(classes, n, p=[0.6, 0.25, 0.05, 0.1]).tolist(),
            "customer_lifetime_days": (days_since + rng.integers(0, 1500, n)).astype("int64"),
            "churned": (rng.random(n) < 0.2).astype("int64"),
        }
    )


@pytest.fixture(scope="module", autouse=True)
def _great_expectations_imported() -> None:
    """Pay GX's ~3 s import once, up front, so per-test durations show validation time only."""
    import great_expectations  # noqa: F401


@pytest.fixture(scope="module")
def valid_frame() -> pd.DataFrame:
    frame = _valid_frame()
    # Guard the fixture itself, so a failing case below is about the corruption, not the data.
    assert {c: str(t) for c, t in frame.dtypes.items()} == EXPECTED_COLUMNS
    assert 0.1 < frame["churned"].mean() < 0.3
    return frame


@pytest.fixture(scope="module")
def valid_report(valid_frame: pd.DataFrame) -> ValidationReport:
    # Module scope: the clean frame is validated once and shared by the tests that need it.
    return validate_training_dataset(valid_frame, RULES)


def _set(column: str, rows: list[int], value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[rows, column] = value
        return frame

    return corrupt


def _revenue_30d_above_90d(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[4, "total_revenue_30d"] = float(frame["total_revenue_90d"].iloc[4]) + 1.0
    return frame


def _failure(report: ValidationReport, expectation: str, column: str | None) -> ExpectationFailure:
    matches = [f for f in report.failures if (f.expectation, f.column) == (expectation, column)]
    assert matches, f"no {expectation} failure on {column}; got:\n" + "\n".join(
        map(str, report.failures)
    )
    return matches[0]


CASES = [
    # A feature with nulls: the model has no imputation.
    pytest.param(
        _set("order_frequency", [0, 10, 20], np.nan),
        "expect_column_values_to_not_be_null", "order_frequency", 3, None, 1,
        id="nulls-in-feature",
    ),
    # Negative revenue: a sign error upstream.
    pytest.param(
        _set("total_revenue_30d", [5], -12.5),
        "expect_column_values_to_be_between", "total_revenue_30d", 1, None, 1,
        id="negative-revenue",
    ),
    # A customer twice in one period: GX counts every row of the duplicated key, so 2.
    pytest.param(
        _set("customer_id", [1], "C00000"),
        "expect_compound_columns_to_be_unique", None, 2, None, 1,
        id="duplicate-customer-in-a-period",
    ),
    # A single-class label: nothing to learn; aggregate, so no row count but the observed mean.
    pytest.param(
        lambda f: f.assign(churned=0),
        "expect_column_mean_to_be_between", "churned", None, "0", 1,
        id="single-class-label",
    ),
    # Too few rows to train and evaluate on.
    pytest.param(
        lambda f: f.head(50).copy(),
        "expect_table_row_count_to_be_between", None, None, "50", 1,
        id="too-few-rows",
    ),
    # A label value outside {0, 1}.
    pytest.param(
        _set("churned", [3], 2),
        "expect_column_values_to_be_in_set", "churned", 1, None, 1,
        id="label-value-2",
    ),
    # An email class dbt does not produce and the model does not encode.
    pytest.param(
        _set("email_domain_class", [0, 1], "corporate"),
        "expect_column_values_to_be_in_set", "email_domain_class", 2, None, 1,
        id="unknown-email-class",
    ),
    # A missing column: table check fails, and its column checks become "not evaluated" failures
    # (column set, column count, dtype, not-null, non-negative: 5), never an exception.
    pytest.param(
        lambda f: f.drop(columns="cart_diversity"),
        "expect_table_columns_to_match_set", None, None, None, 5,
        id="missing-column",
    ),
    # Floats turned into strings: GX checks object columns element-wise, so every row is counted;
    # the range check cannot compare strings with 0 and is reported as not evaluated.
    pytest.param(
        lambda f: f.assign(order_frequency=f["order_frequency"].astype(str)),
        "expect_column_values_to_be_of_type", "order_frequency", N_ROWS, None, 2,
        id="wrong-dtype",
    ),
    # 30-day revenue above 90-day revenue: the windows are not nested.
    pytest.param(
        _revenue_30d_above_90d,
        "expect_column_pair_values_a_to_be_greater_than_b", "total_revenue_90d, total_revenue_30d",
        1, None, 1,
        id="revenue-30d-above-90d",
    ),
    # A duplicated column name: invisible to the column *set*, caught by the column count.
    pytest.param(
        lambda f: pd.concat([f, f[["churned"]]], axis=1),
        "expect_table_column_count_to_equal", None, None, "12", None,
        id="duplicated-column",
    ),
    # More periods than the training cohorts (6) and the holdout: 8 foreign as_of dates.
    pytest.param(
        lambda f: f.assign(
            as_of=[datetime.date(2020, 1 + i, 28) for i in range(8)] + list(f["as_of"][8:])
        ),
        "expect_column_unique_value_count_to_be_between", "as_of", None, "9", 1,
        id="too-many-periods",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("corrupt", "expectation", "column", "unexpected_count", "observed", "n_failures"), CASES
)
def test_corrupted_snapshot_fails_with_named_expectation(
    valid_frame: pd.DataFrame,
    corrupt: Callable[[pd.DataFrame], pd.DataFrame],
    expectation: str,
    column: str | None,
    unexpected_count: int | None,
    observed: str | None,
    n_failures: int | None,
) -> None:
    report = validate_training_dataset(corrupt(valid_frame.copy()), RULES)

    assert report.success is False
    failure = _failure(report, expectation, column)
    assert failure.unexpected_count == unexpected_count
    if observed is not None:
        assert failure.observed == observed
    if unexpected_count:
        assert failure.unexpected_percent == pytest.approx(100 * unexpected_count / N_ROWS)
        assert failure.examples
    if n_failures is not None:
        assert len(report.failures) == n_failures, "\n".join(map(str, report.failures))


def test_valid_snapshot_passes_every_expectation(valid_report: ValidationReport) -> None:
    assert valid_report.success is True
    assert valid_report.failures == ()
    assert valid_report.evaluated == len(build_suite(RULES).expectations)
    assert f"all {valid_report.evaluated} expectations passed" in valid_report.summary_markdown()


def test_the_same_customers_in_several_periods_are_valid_cohorts(
    valid_frame: pd.DataFrame,
) -> None:
    earlier = valid_frame.assign(as_of=datetime.date(2024, 1, 31))
    report = validate_training_dataset(pd.concat([earlier, valid_frame]), RULES)
    assert report.success, report.failures


def test_validation_does_not_modify_the_frame(valid_frame: pd.DataFrame) -> None:
    frame = valid_frame.copy()
    validate_training_dataset(frame, RULES)
    pd.testing.assert_frame_equal(frame, valid_frame)


def test_failure_examples_show_offending_values(valid_frame: pd.DataFrame) -> None:
    report = validate_training_dataset(
        _set("email_domain_class", [0, 1], "corporate")(valid_frame.copy()), RULES
    )
    # Distinct values only, strings quoted so "1" and 1 stay tellable apart.
    assert _failure(report, "expect_column_values_to_be_in_set", "email_domain_class").examples == (
        "'corporate'",
    )


def test_missing_column_is_reported_not_raised(valid_frame: pd.DataFrame) -> None:
    report = validate_training_dataset(valid_frame.drop(columns="cart_diversity"), RULES)

    table = _failure(report, "expect_table_columns_to_match_set", None)
    assert table.examples == ("missing: cart_diversity",)
    dtype = _failure(report, "expect_column_values_to_be_of_type", "cart_diversity")
    assert dtype.observed == f"{NOT_EVALUATED}missing column cart_diversity"
    assert str(dtype).endswith(f"{NOT_EVALUATED}missing column cart_diversity")


def test_any_frame_gives_a_report(valid_frame: pd.DataFrame) -> None:
    report = validate_training_dataset(pd.DataFrame(), RULES)
    assert report.success is False
    assert report.evaluated == len(build_suite(RULES).expectations)


def test_summary_markdown_lists_every_failure(valid_frame: pd.DataFrame) -> None:
    frame = valid_frame.copy()
    frame.loc[0, "total_revenue_30d"] = -1.0
    frame.loc[1, "email_domain_class"] = "a|b"  # a pipe must not break the table
    report = validate_training_dataset(frame, RULES)

    markdown = report.summary_markdown()
    lines = markdown.splitlines()
    assert f"2 of {report.evaluated} expectations failed" in lines[0]
    assert lines[2] == "| Expectation | Column | Unexpected rows | Observed | Examples |"
    rows = lines[4:]
    assert len(rows) == 2
    assert all(row.count(" | ") == 4 for row in rows)  # escaped pipe stays inside its cell
    assert "`expect_column_values_to_be_between` | total_revenue_30d | 1 (0.33%)" in rows[0]
    assert "'a\\|b'" in rows[1]


def test_failure_str_names_expectation_column_and_count() -> None:
    failure = ExpectationFailure(
        expectation="expect_column_values_to_not_be_null",
        column="order_frequency",
        unexpected_count=3,
        unexpected_percent=1.0,
        examples=("nan",),
        observed=None,
    )
    assert str(failure) == (
        "expect_column_values_to_not_be_null on order_frequency: "
        "3 unexpected row(s) (1.00%); e.g. nan"
    )
    aggregate = ExpectationFailure(
        "expect_column_mean_to_be_between", "churned", None, None, ("0",), "0"
    )
    assert str(aggregate) == "expect_column_mean_to_be_between on churned: observed 0"


def test_rules_set_the_thresholds(valid_frame: pd.DataFrame) -> None:
    policy = load_policy({"CHURN_MIN_LABELLED_CUSTOMERS": str(N_ROWS + 1)})
    report = validate_training_dataset(valid_frame, TrainingDataRules(policy))
    assert [f.expectation for f in report.failures] == ["expect_table_row_count_to_be_between"]
    assert "set CHURN_MIN_LABELLED_CUSTOMERS to move it" in str(report.failures[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"previous_label_rate": 1.5},
        {"email_domain_classes": ()},
    ],
)
def test_rules_reject_impossible_thresholds(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrainingDataRules(Policy(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label_rate", "environ", "previous", "setting", "message"),
    [
        # everybody churned: a broken label, whatever the business (the default max is 1)
        (1.0, {}, None, "CHURN_MAX_LABEL_RATE", "observed 1 >= max 1"),
        # nobody churned: the same, at the other end (the default min is 0)
        (0.0, {}, None, "CHURN_MIN_LABEL_RATE", "observed 0 <= min 0"),
        # a 70% one-off retailer passes the defaults, and fails a max the user set to 0.60
        (0.7, {"CHURN_MAX_LABEL_RATE": "0.60"}, None, "CHURN_MAX_LABEL_RATE", ">= max 0.6"),
        # a 5% subscription box fails only a minimum the user raised
        (0.05, {"CHURN_MIN_LABEL_RATE": "0.10"}, None, "CHURN_MIN_LABEL_RATE", "<= min 0.1"),
        # a jump from 20% to 70% since the previous snapshot: a broken label or feed
        (0.7, {}, 0.2, "CHURN_MAX_LABEL_RATE_CHANGE", "previous 0.2 ± 0.25"),
    ],
)
def test_label_rate_rules_catch_broken_labels_and_name_their_setting(
    valid_frame: pd.DataFrame,
    label_rate: float,
    environ: dict[str, str],
    previous: float | None,
    setting: str,
    message: str,
) -> None:
    frame = valid_frame.copy()
    churned = round(label_rate * len(frame))
    frame["churned"] = [1] * churned + [0] * (len(frame) - churned)
    rules = TrainingDataRules(load_policy(environ), previous_label_rate=previous)
    report = validate_training_dataset(frame, rules)
    texts = [str(f) for f in report.failures]
    assert len(texts) == 1, texts
    assert message in texts[0] and f"set {setting} to move it" in texts[0]


@pytest.mark.parametrize("label_rate", [0.05, 0.2, 0.7, 0.9])
def test_a_normal_churn_rate_of_any_business_passes_the_defaults(
    valid_frame: pd.DataFrame, label_rate: float
) -> None:
    frame = valid_frame.copy()
    churned = round(label_rate * len(frame))
    frame["churned"] = [1] * churned + [0] * (len(frame) - churned)
    assert validate_training_dataset(frame, RULES).success


def test_too_little_data_gives_the_counts_the_minimums_and_the_variables(
    valid_frame: pd.DataFrame,
) -> None:
    frame = valid_frame.head(50).copy()
    frame["churned"] = [1] * 9 + [0] * 41
    message = too_little_data(frame, RULES)
    assert message == (
        "too little data to train: 50 labelled customers (need 200, "
        "CHURN_MIN_LABELLED_CUSTOMERS), 9 churners (need 25, CHURN_MIN_CHURNERS), "
        "41 non-churners (need 25, CHURN_MIN_NON_CHURNERS). Use a longer history, more "
        "training periods (CHURN_TRAINING_PERIODS), a different label window "
        "(CHURN_WINDOW_DAYS), or lower the minimums if you accept a noisier holdout."
    )
    assert too_little_data(valid_frame, RULES) is None


def test_a_crash_inside_gx_becomes_a_failure(
    valid_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import great_expectations as gx

    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(gx.ValidationDefinition, "run", explode)
    report = validate_training_dataset(valid_frame, RULES)

    assert report.success is False
    assert report.evaluated == 0
    assert [f.observed for f in report.failures] == [f"{NOT_EVALUATED}RuntimeError: boom"]


def test_importing_the_module_does_not_import_great_expectations() -> None:
    code = (
        "import sys, churn_assets.quality.training_data; "
        "sys.exit('great_expectations' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# Bug: an infinite amount in the raw files became Infinity in marts.customer_features and
# the suite passed it (revenue had only a lower bound), so training failed late. Each case:
# the feature column and the value planted in one row.
INFINITE_CASES = [
    pytest.param("total_revenue_365d", np.inf, id="inf-revenue"),  # sum over an inf amount
    pytest.param("order_frequency", -np.inf, id="minus-inf-frequency"),  # caught by min too
    pytest.param("total_revenue_30d", 1e39, id="beyond-float32"),  # finite, inf as float32
]


@pytest.mark.parametrize(("column", "value"), INFINITE_CASES)
def test_validate_training_dataset_rejects_non_finite_features(
    valid_frame: pd.DataFrame, column: str, value: float
) -> None:
    frame = valid_frame.copy()
    frame.loc[7, column] = value
    report = validate_training_dataset(frame, RULES)

    assert report.success is False
    failure = _failure(report, "expect_column_values_to_be_between", column)
    assert failure.unexpected_count == 1
    assert failure.examples == (f"{value:.6g}",)
