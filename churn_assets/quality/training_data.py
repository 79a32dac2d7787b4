"""Great Expectations suite for ``marts.training_snapshot``: the gate before any model is trained.

A model trained on a broken snapshot (missing labels, a single class, leaked duplicates,
negative revenue) fails silently and late, so the snapshot is validated first and every broken
expectation is reported at once, in a form that fits a Dagster asset check's metadata.

``great_expectations`` is imported lazily (it takes ~3 s), so importing this module stays cheap
for code locations and CLIs that never validate.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn_assets.policy import Policy, env_name
from churn_assets.schema import EMAIL_DOMAIN_CLASSES, LABEL, NUMERIC_FEATURES, SNAPSHOT_DTYPES

# GX 1.x may phone home with usage statistics; the platform runs offline and must not try.
# Set before the (lazy) import so it holds no matter which caller imports GX first.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations import Expectation

__all__ = [
    "EXPECTED_COLUMNS",
    "ExpectationFailure",
    "TrainingDataRules",
    "ValidationReport",
    "build_suite",
    "too_little_data",
    "validate_training_dataset",
]

EXPECTED_COLUMNS: dict[str, str] = SNAPSHOT_DTYPES
"""Every column of the snapshot and the pandas dtype name it must have."""

# Every numeric feature is a count, duration or amount of money.
NON_NEGATIVE_COLUMNS: tuple[str, ...] = NUMERIC_FEATURES
"""Counts, durations and money: a negative value means a broken join or sign error upstream."""

MAX_FEATURE_VALUE = float(np.finfo(np.float32).max)
"""Upper bound of every numeric feature: the largest float32, the model's input type.

It makes the range check a finiteness check too (inf > any bound; NaN is caught as null).
The raw-data contract already refuses infinite and oversized amounts; this is defence in
depth against an overflow or a bad value reaching the snapshot another way, which would
otherwise only fail late, inside training.
"""

REVENUE_WINDOWS: tuple[str, ...] = ("total_revenue_30d", "total_revenue_90d", "total_revenue_365d")
"""Nested windows, shortest first: each one's revenue is part of the next one's."""

LABEL_COLUMN = LABEL
NOT_EVALUATED = "not evaluated: "
"""Prefix of ``ExpectationFailure.observed`` when GX could not evaluate the expectation."""
_SUITE_NAME = "training_snapshot"
_MAX_EXAMPLES = 5
_MAX_TEXT = 80


@dataclass(frozen=True)
class TrainingDataRules:
    """The policy's data rules for one snapshot (thresholds live in ``churn_assets.policy``).

    The label-rate rules catch a *broken* label (nobody or everybody churned, a rate that
    jumped since the last training snapshot), not a business's normal churn rate: 5% for a
    subscription box and 70% for a one-off retailer both pass the defaults.
    """

    policy: Policy
    previous_label_rate: float | None = None
    """Label rate of the previous training snapshot, if any: the change rule compares to it."""
    email_domain_classes: tuple[str, ...] = EMAIL_DOMAIN_CLASSES
    """Every ``email_domain_class`` dbt may emit; the model one-hot encodes exactly these."""

    def __post_init__(self) -> None:
        if not self.email_domain_classes:
            raise ValueError("email_domain_classes must not be empty")
        if self.previous_label_rate is not None and not 0.0 <= self.previous_label_rate <= 1.0:
            raise ValueError(
                f"previous_label_rate must be in [0, 1], got {self.previous_label_rate}"
            )


def too_little_data(df: pd.DataFrame, rules: TrainingDataRules) -> str | None:
    """Why ``df`` is too small to train and hold out on, with the counts, or None.

    Checked before (and besides) the suite: the message a user needs is the counts against
    the minimums and the variables that set them, not one failed expectation per count.
    With several periods the counts are the newest period's, the out-of-time holdout: its
    customers are the ones the model is judged on (the stacked cohorts repeat customers).
    """
    policy = rules.policy
    where = ""
    if "as_of" in df.columns and df["as_of"].nunique() > 1:
        newest = df["as_of"].astype(str).max()
        df = df[df["as_of"].astype(str) == newest]
        where = f" in the holdout period {newest}"
    rows = len(df)
    labels = pd.to_numeric(df[LABEL_COLUMN], errors="coerce") if LABEL_COLUMN in df else None
    churners = int((labels == 1).sum()) if labels is not None else 0
    stayers = int((labels == 0).sum()) if labels is not None else 0
    counts = (
        (rows, policy.min_labelled_customers, "labelled customers", "min_labelled_customers"),
        (churners, policy.min_churners, "churners", "min_churners"),
        (stayers, policy.min_non_churners, "non-churners", "min_non_churners"),
    )
    if all(count >= minimum for count, minimum, _, _ in counts):
        return None
    parts = [
        f"{count:,} {what} (need {minimum:,}, {env_name(rule)})"
        for count, minimum, what, rule in counts
    ]
    return (
        "too little data to train: " + ", ".join(parts) + where + ". Use a longer history, more "
        "training periods (CHURN_TRAINING_PERIODS), a different label window "
        "(CHURN_WINDOW_DAYS), or lower the minimums if you accept a noisier holdout."
    )


@dataclass(frozen=True)
class ExpectationFailure:
    """One expectation that did not hold, flattened from its GX result for people to read."""

    expectation: str
    """GX expectation type, e.g. ``expect_column_values_to_not_be_null``."""
    column: str | None
    """The column checked; ``"A, B"`` for column-pair expectations; None for table ones."""
    unexpected_count: int | None
    """Rows breaking a row-level expectation; None for aggregates and errored expectations."""
    unexpected_percent: float | None
    """Share of rows (0-100) breaking a row-level expectation."""
    examples: tuple[str, ...]
    """A few offending values (deduplicated), or the observed value for aggregates."""
    observed: str | None
    """Observed aggregate (mean, row count, columns), or ``"not evaluated: <why>"``."""
    bound: str | None = None
    """The rule the observation broke, e.g. ``">= max 0.6"`` (policy-driven expectations)."""
    setting: str | None = None
    """The variable that moves the broken threshold (policy-driven expectations only)."""

    def __str__(self) -> str:
        text = self.expectation
        if self.column:
            text += f" on {self.column}"
        details = []
        if self.unexpected_count is not None:
            share = f" ({self.unexpected_percent:.2f}%)" if self.unexpected_percent else ""
            details.append(f"{self.unexpected_count} unexpected row(s){share}")
        if self.observed is not None:
            evaluated = not self.observed.startswith(NOT_EVALUATED)
            bound = f" {self.bound}" if self.bound and evaluated else ""
            details.append(f"observed {self.observed}{bound}" if evaluated else self.observed)
        if self.examples and self.examples != (self.observed,):
            details.append(f"e.g. {', '.join(self.examples)}")
        if self.setting:
            details.append(f"set {self.setting} to move it")
        return f"{text}: {'; '.join(details)}" if details else text


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of validating one snapshot: the verdict plus every failed expectation."""

    success: bool
    evaluated: int
    """How many expectations ran (a suite that errored out before running counts 0)."""
    failures: tuple[ExpectationFailure, ...]

    def summary_markdown(self) -> str:
        """Markdown for the Dagster UI: a table of failures, or a one-line all-clear."""
        if self.success:
            return f"**Training data OK**: all {self.evaluated} expectations passed."
        header = (
            f"**Training data failed validation**: {len(self.failures)} of {self.evaluated} "
            "expectations failed.\n\n"
            "| Expectation | Column | Unexpected rows | Observed | Examples |\n"
            "|---|---|---|---|---|"
        )
        rows = []
        for failure in self.failures:
            unexpected = "-"
            if failure.unexpected_count is not None:
                unexpected = str(failure.unexpected_count)
                if failure.unexpected_percent is not None:
                    unexpected += f" ({failure.unexpected_percent:.2f}%)"
            examples = failure.examples if failure.examples != (failure.observed,) else ()
            cells = (
                f"`{failure.expectation}`",
                failure.column or "(table)",
                unexpected,
                failure.observed or "-",
                ", ".join(examples) or "-",
            )
            rows.append("| " + " | ".join(_md_cell(cell) for cell in cells) + " |")
        return "\n".join([header, *rows])


def build_suite(rules: TrainingDataRules) -> ExpectationSuite:
    """The expectations for ``marts.training_snapshot``, each with a note saying why it exists."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    columns = list(EXPECTED_COLUMNS)
    expectations: list[Expectation] = []

    # Schema: the feature pipeline and the model's input layer are built for exactly these.
    expectations.append(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=columns,
            exact_match=True,
            notes="Missing columns break feature building; extra ones hint at a changed dbt model.",
        )
    )
    expectations.append(
        gxe.ExpectTableColumnCountToEqual(
            value=len(columns),
            notes="The column *set* check cannot see a duplicated column name; the count can.",
        )
    )
    policy = rules.policy
    expectations.append(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=policy.min_labelled_customers,
            max_value=None,
            notes="Too few customers make the hold-out metrics (and the AUC gate) meaningless.",
            meta=_setting("min_labelled_customers", f"< min {policy.min_labelled_customers}"),
        )
    )
    for column, dtype in EXPECTED_COLUMNS.items():
        expectations.append(
            gxe.ExpectColumnValuesToBeOfType(
                column=column,
                type_=dtype,
                notes="A changed dtype (e.g. numbers read as text) silently corrupts tensors.",
            )
        )
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=column,
                notes="The model has no imputation; dbt coalesces, so a null is an upstream bug.",
            )
        )

    # Values.
    for column in NON_NEGATIVE_COLUMNS:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=0,
                max_value=MAX_FEATURE_VALUE,
                notes="Counts, days and revenue are >= 0 and finite in float32 (the model's "
                "input); inf means an overflow or an infinite raw amount upstream.",
            )
        )
    for shorter, longer in itertools.pairwise(REVENUE_WINDOWS):
        expectations.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=longer,
                column_B=shorter,
                or_equal=True,
                notes=f"{shorter} is contained in {longer}; otherwise the windows are misaligned.",
            )
        )
    expectations.append(
        gxe.ExpectColumnValuesToBeInSet(
            column="email_domain_class",
            value_set=list(rules.email_domain_classes),
            notes="The model one-hot encodes these classes; a new one would be dropped silently.",
        )
    )
    expectations.append(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["as_of", "customer_id"],
            notes="One row per customer and period; duplicates leak between train and test splits.",
        )
    )
    expectations.append(
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column="as_of",
            min_value=1,
            # the training cohorts plus the out-of-time holdout period
            max_value=rules.policy.training_periods + 1,
            notes="The training cohorts (CHURN_TRAINING_PERIODS) and the holdout period; "
            "more mean the snapshot mixes periods it should not.",
        )
    )

    # Label.
    expectations.append(
        gxe.ExpectColumnValuesToBeInSet(
            column=LABEL_COLUMN,
            value_set=[0, 1],
            notes="Binary label; anything else means the label SQL is broken.",
        )
    )
    # Strict bounds: with the defaults (0, 1) only "nobody churned" and "everybody churned"
    # fail, which no business's real churn rate is.
    expectations.append(
        gxe.ExpectColumnMeanToBeBetween(
            column=LABEL_COLUMN,
            min_value=policy.min_label_rate,
            strict_min=True,
            notes="A label rate at or below the minimum (e.g. nobody churned) is a broken label.",
            meta=_setting("min_label_rate", f"<= min {policy.min_label_rate:g}"),
        )
    )
    expectations.append(
        gxe.ExpectColumnMeanToBeBetween(
            column=LABEL_COLUMN,
            max_value=policy.max_label_rate,
            strict_max=True,
            notes="A label rate at or above the maximum (e.g. everybody churned) is a broken "
            "label or label window.",
            meta=_setting("max_label_rate", f">= max {policy.max_label_rate:g}"),
        )
    )
    if rules.previous_label_rate is not None:
        change = policy.max_label_rate_change
        low = max(0.0, rules.previous_label_rate - change)
        high = min(1.0, rules.previous_label_rate + change)
        expectations.append(
            gxe.ExpectColumnMeanToBeBetween(
                column=LABEL_COLUMN,
                min_value=low,
                max_value=high,
                notes="The label rate jumped since the previous training snapshot: a broken "
                "label or feed, not a change in the business.",
                meta=_setting(
                    "max_label_rate_change",
                    f"outside [{low:.3g}, {high:.3g}] (previous {rules.previous_label_rate:.3g}"
                    f" ± {change:g})",
                ),
            )
        )
    # Passed to the constructor: ExpectationSuite.add_expectation needs an active data context.
    return gx.ExpectationSuite(name=_SUITE_NAME, expectations=expectations)


def _setting(rule: str, bound: str) -> dict[str, str]:
    """GX ``meta`` naming the policy variable behind an expectation, for its failure message."""
    return {"setting": env_name(rule), "bound": bound}


def validate_training_dataset(df: pd.DataFrame, rules: TrainingDataRules) -> ValidationReport:
    """Run the suite on ``df`` and report every failure; odd input fails, it never raises."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite = build_suite(rules)
    # A fresh in-memory context per call: nothing is written to disk and runs cannot leak
    # into each other. Note that get_context() also sets GX's process-wide current project.
    context = gx.get_context(mode="ephemeral")
    # tqdm bars per metric batch would flood Dagster's captured stderr.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas(name="training_data")
        .add_dataframe_asset(name="training_snapshot")
        .add_batch_definition_whole_dataframe(name="whole_snapshot")
    )
    suite = context.suites.add(suite)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="training_snapshot", data=batch_definition, suite=suite)
    )
    try:
        # SUMMARY carries unexpected counts and a partial_unexpected_list, but not full row lists.
        result = validation.run(
            batch_parameters={"dataframe": df},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
    except Exception as error:  # a crash inside GX must still block, as a reported failure
        crash = ExpectationFailure(
            expectation="great_expectations_run",
            column=None,
            unexpected_count=None,
            unexpected_percent=None,
            examples=(),
            observed=_clip(f"{NOT_EVALUATED}{type(error).__name__}: {error}"),
        )
        return ValidationReport(success=False, evaluated=0, failures=(crash,))

    # GX returns results in metric-resolution order; report them in suite order instead.
    position = {expectation.id: index for index, expectation in enumerate(suite.expectations)}
    failed = sorted(
        (r for r in result.results if not r.success),
        key=lambda r: position.get(getattr(r.expectation_config, "id", None), len(position)),
    )
    present = {str(column) for column in df.columns}
    failures = tuple(_to_failure(r, present) for r in failed)
    return ValidationReport(
        success=bool(result.success) and not failures,
        evaluated=len(result.results),
        failures=failures,
    )


def _to_failure(result: ExpectationValidationResult, present: set[str]) -> ExpectationFailure:
    """Flatten one failed GX result; errored expectations become failures too."""
    config = result.expectation_config
    assert config is not None  # always set on results of a suite run
    kwargs = config.kwargs
    if "column_A" in kwargs:
        checked = [str(kwargs["column_A"]), str(kwargs["column_B"])]
    elif "column" in kwargs:
        checked = [str(kwargs["column"])]
    else:
        checked = []
    column = ", ".join(checked) or None
    details: Mapping[str, Any] = result.result or {}

    error = _exception_message(result.exception_info)
    if error is not None:
        missing = [name for name in checked if name not in present]
        # GX's own message for a missing column is unhelpful for some expectations
        # (ExpectColumnValuesToBeOfType raises a bare IndexError), so name the cause.
        reason = f"missing column {', '.join(missing)}" if missing else error
        return ExpectationFailure(
            config.type, column, None, None, (), _clip(f"{NOT_EVALUATED}{reason}")
        )

    count = details.get("unexpected_count")
    percent = details.get("unexpected_percent")
    observed_value = details.get("observed_value")
    observed = None if observed_value is None else _clip(_fmt(observed_value))
    if "partial_unexpected_list" in details:
        examples = _examples(details["partial_unexpected_list"])
    elif isinstance(details.get("details"), Mapping) and "mismatched" in details["details"]:
        # ExpectTableColumnsToMatchSet: the offending values are the mismatched column names.
        examples = tuple(
            f"{kind}: {', '.join(map(str, names))}"
            for kind, names in details["details"]["mismatched"].items()
        )
    else:
        examples = () if observed is None else (observed,)
    meta = config.meta or {}
    return ExpectationFailure(
        expectation=config.type,
        column=column,
        unexpected_count=None if count is None else int(count),
        unexpected_percent=None if percent is None else float(percent),
        examples=examples,
        observed=observed,
        bound=meta.get("bound"),
        setting=meta.get("setting"),
    )


def _exception_message(info: Mapping[str, Any] | None) -> str | None:
    """The error of an expectation that could not be evaluated, if any.

    GX 1.x uses two shapes: a flat ``ExceptionInfo`` when the expectation itself raised, and a
    dict keyed by metric id (each value an exception info) when a metric could not be computed.
    """
    if not info:
        return None
    if "raised_exception" in info:
        return (
            str(info.get("exception_message") or "unknown error")
            if info.get("raised_exception")
            else None
        )
    messages = [
        str(value.get("exception_message") or "unknown error")
        for value in info.values()
        if isinstance(value, Mapping) and value.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) if messages else None


def _examples(values: Iterable[Any]) -> tuple[str, ...]:
    """A few distinct offending values, formatted for people."""
    distinct = dict.fromkeys(_clip(_fmt(value)) for value in values)
    return tuple(distinct)[:_MAX_EXAMPLES]


def _fmt(value: Any) -> str:
    """Short, unambiguous text for a value: strings quoted, floats to 6 significant digits."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):  # numpy float64 subclasses float
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_fmt(item) for item in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(item) for item in value) + "]"
    return str(value)


def _clip(text: str) -> str:
    """Keep metadata readable: one line, bounded length."""
    line = " ".join(text.split())
    return line if len(line) <= _MAX_TEXT else line[: _MAX_TEXT - 3] + "..."


def _md_cell(text: str) -> str:
    """Escape what would break a markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
