"""The decision policy: every threshold the platform decides with, defined once.

Each rule is one field of :class:`Policy` with its default, its meaning, its environment
variable and its valid range. Everything else derives from this class: the Dagster
resource ``ChurnPolicy`` (its fields, defaults and launchpad descriptions are generated from
these, see ``defs/resources.py``), the gates and checks, the sensors, the CLI, the online
scorer and the benchmarks. A failed rule names its variable, so a user knows what to move.

Pure Python, no Dagster: the ML library and the scorer read it too.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class PolicyError(ValueError):
    """A policy variable holds a value the platform cannot use."""


def _rule(default: float | int, env: str, meaning: str, low: float, high: float) -> Any:
    return field(
        default=default, metadata={"env": env, "meaning": meaning, "low": low, "high": high}
    )


@dataclass(frozen=True)
class Policy:
    """Thresholds for data, gates, promotion, drift, retraining and risk bands.

    Defaults fit businesses from a 5% quarterly churn subscription to a 70%+ one-off
    retailer: data rules catch broken data, not a business's normal churn rate.
    """

    # --- training data (the GX suite and the early stop before training) ---
    min_labelled_customers: int = _rule(
        200,
        "CHURN_MIN_LABELLED_CUSTOMERS",
        "customers with a label in the holdout period needed to train and judge the model",
        1,
        math.inf,
    )
    min_churners: int = _rule(
        25,
        "CHURN_MIN_CHURNERS",
        "churned customers needed in the holdout period (fewer make AUC noise)",
        1,
        math.inf,
    )
    min_non_churners: int = _rule(
        25,
        "CHURN_MIN_NON_CHURNERS",
        "retained customers needed, for the same reason as churners",
        1,
        math.inf,
    )
    min_label_rate: float = _rule(
        0.0,
        "CHURN_MIN_LABEL_RATE",
        "label rate must be above this (0: only 'nobody churned' is refused)",
        0.0,
        1.0,
    )
    max_label_rate: float = _rule(
        1.0,
        "CHURN_MAX_LABEL_RATE",
        "label rate must be below this (1: only 'everybody churned' is refused)",
        0.0,
        1.0,
    )
    max_label_rate_change: float = _rule(
        0.25,
        "CHURN_MAX_LABEL_RATE_CHANGE",
        "largest change of the label rate since the previous accepted training set "
        "(a jump means a broken label or feed, not a business change)",
        0.0,
        1.0,
    )
    # --- deliveries (checked before a load replaces anything) ---
    warn_customer_drop: float = _rule(
        0.05,
        "CHURN_WARN_CUSTOMER_DROP",
        "share of the previous load's customers a delivery may lose before the "
        "customer_count_change check warns (WARN; the delivery is loaded)",
        0.0,
        1.0,
    )
    max_customer_drop: float = _rule(
        0.2,
        "CHURN_MAX_CUSTOMER_DROP",
        "share of the previous load's customers a delivery may lose before it is refused, "
        "with nothing loaded (a cut-off export, not churn: churned customers stay in the "
        "customer file; 1 never refuses)",
        0.0,
        1.0,
    )
    # --- time: cohorts, backtest, realized performance ---
    training_periods: int = _rule(
        6,
        "CHURN_TRAINING_PERIODS",
        "labelled periods stacked into the training set (the newest whose label windows "
        "closed before the out-of-time holdout period)",
        1,
        120,
    )
    max_training_rows: int = _rule(
        500_000,
        "CHURN_MAX_TRAINING_ROWS",
        "customers of the training cohorts are sampled (by a hash of the id, the same in "
        "every period) down to about this many rows; the holdout period is never sampled "
        "(training time grows with rows, AUC barely)",
        1_000,
        math.inf,
    )
    backtest_periods: int = _rule(
        6,
        "CHURN_BACKTEST_PERIODS",
        "labelled periods the backtest evaluates, each with a model trained on the periods "
        "before it",
        1,
        120,
    )
    backtest_max_training_rows: int = _rule(
        100_000,
        "CHURN_BACKTEST_MAX_TRAINING_ROWS",
        "customers are sampled so that each backtest model trains on about this many rows "
        "(one model per evaluated period: the backtest must not cost six trainings at scale)",
        1_000,
        math.inf,
    )
    realized_auc_tolerance: float = _rule(
        0.05,
        "CHURN_REALIZED_AUC_TOLERANCE",
        "how far a version's realized AUC (once labels mature) may fall below its holdout "
        "AUC before the realized-performance check fails (WARN; triggers retraining)",
        0.0,
        1.0,
    )
    scores_freshness_grace_hours: float = _rule(
        48.0,
        "CHURN_SCORES_FRESHNESS_GRACE_HOURS",
        "scores not refreshed for one period plus this many hours fail the freshness check "
        "of churn_scores (WARN): the monthly data did not arrive or scoring stopped",
        0.0,
        24.0 * 365,
    )
    # --- release gates ---
    min_auc: float = _rule(
        0.60, "CHURN_MIN_AUC", "holdout ROC AUC a model must reach to be exported", 0.0, 1.0
    )
    parity_tolerance: float = _rule(
        1e-6,
        "CHURN_PARITY_TOLERANCE",
        "largest absolute onnxruntime-vs-torch probability difference on any holdout row "
        "(float32 end to end: ~1e-7)",
        0.0,
        1.0,
    )
    reference_auc_tolerance: float = _rule(
        0.01,
        "CHURN_REFERENCE_AUC_TOLERANCE",
        "how far the MLP's AUC may trail the logistic-regression reference (WARN check)",
        0.0,
        1.0,
    )
    # --- promotion ---
    promotion_min_auc_gain: float = _rule(
        0.01,
        "CHURN_PROMOTION_MIN_AUC_GAIN",
        "AUC a challenger must add over the champion on the challenger's holdout",
        0.0,
        1.0,
    )
    promotion_brier_tolerance: float = _rule(
        0.005,
        "CHURN_PROMOTION_BRIER_TOLERANCE",
        "how much worse a challenger's Brier score may be",
        0.0,
        1.0,
    )
    promotion_bootstrap_resamples: int = _rule(
        1000,
        "CHURN_PROMOTION_BOOTSTRAP_RESAMPLES",
        "paired bootstrap resamples of the AUC difference",
        1,
        math.inf,
    )
    promotion_confidence: float = _rule(
        0.95,
        "CHURN_PROMOTION_CONFIDENCE",
        "two-sided confidence of the bootstrap interval, which must exclude 0",
        0.5,
        0.999,
    )
    # --- drift and retraining ---
    drift_psi_threshold: float = _rule(
        0.2,
        "CHURN_DRIFT_PSI_THRESHOLD",
        "PSI from which a feature's shift counts as large (rule of thumb: 0.2)",
        0.0,
        math.inf,
    )
    drift_p_value: float = _rule(
        0.01,
        "CHURN_DRIFT_P_VALUE",
        "KS / chi-square p-value below which a shift counts as real",
        1e-12,
        1.0,
    )
    drift_share_threshold: float = _rule(
        0.3,
        "CHURN_DRIFT_SHARE_THRESHOLD",
        "the drift gate fails when this share of features drifted",
        1e-12,
        1.0,
    )
    retrain_cooldown_seconds: int = _rule(
        3600,
        "CHURN_RETRAIN_COOLDOWN_SECONDS",
        "minimum time between two triggered retrains, drift or realized performance "
        "(no retrain storms)",
        0,
        math.inf,
    )
    # --- risk bands (online and batch scores) ---
    risk_medium_from: float = _rule(
        0.3,
        "CHURN_RISK_MEDIUM_FROM",
        "probability from which a customer is 'medium' risk",
        0.0,
        1.0,
    )
    risk_high_from: float = _rule(
        0.6,
        "CHURN_RISK_HIGH_FROM",
        "probability from which a customer is 'high' risk",
        0.0,
        1.0,
    )
    # --- retention campaign (analytics.retention_targets) ---
    # Expected value saved by contacting a customer = p(churn) x value x save rate - contact
    # cost, with value = margin x their revenue of the last 365 days: the profit one more
    # year of them brings if, saved, they keep buying as they did. Money is in the currency
    # of the order amounts.
    retention_margin: float = _rule(
        0.3,
        "CHURN_RETENTION_MARGIN",
        "share of revenue that is profit: a customer's value is this share of their revenue "
        "of the last 365 days (analytics.retention_targets)",
        0.0,
        1.0,
    )
    retention_save_rate: float = _rule(
        0.2,
        "CHURN_RETENTION_SAVE_RATE",
        "share of contacted would-be churners a retention contact keeps (measure it with a "
        "control group; 0.2 is a common campaign's order of magnitude)",
        0.0,
        1.0,
    )
    retention_contact_cost: float = _rule(
        2.0,
        "CHURN_RETENTION_CONTACT_COST",
        "cost of contacting one customer (offer and handling), in the currency of the order "
        "amounts; a customer is worth a contact when p(churn) x value x save rate exceeds it",
        0.0,
        1e9,  # finite: dbt receives it as a JSON number
    )
    # --- the online scorer's prediction log ---
    prediction_log_retention_days: int = _rule(
        180,
        "CHURN_PREDICTION_LOG_RETENTION_DAYS",
        "days the online prediction log keeps a prediction (the scorer deletes older rows "
        "hourly); at least the label window plus a period (CHURN_WINDOW_DAYS + 31 for "
        "months), or predictions go before their labels mature and cannot be judged",
        1,
        math.inf,
    )

    def __post_init__(self) -> None:
        for rule in dataclasses.fields(self):
            value = getattr(self, rule.name)
            low, high = rule.metadata["low"], rule.metadata["high"]
            if not (isinstance(value, int | float) and low <= value <= high):
                raise PolicyError(
                    f"{rule.metadata['env']}={value!r}: {rule.name} must be between "
                    f"{low} and {high}"
                )
        if self.min_label_rate >= self.max_label_rate:
            raise PolicyError(
                f"CHURN_MIN_LABEL_RATE ({self.min_label_rate}) must be below "
                f"CHURN_MAX_LABEL_RATE ({self.max_label_rate})"
            )
        if self.warn_customer_drop > self.max_customer_drop:
            raise PolicyError(
                f"CHURN_WARN_CUSTOMER_DROP ({self.warn_customer_drop}) must not be above "
                f"CHURN_MAX_CUSTOMER_DROP ({self.max_customer_drop})"
            )
        if self.risk_medium_from >= self.risk_high_from:
            raise PolicyError(
                f"CHURN_RISK_MEDIUM_FROM ({self.risk_medium_from}) must be below "
                f"CHURN_RISK_HIGH_FROM ({self.risk_high_from})"
            )

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Rule:
    """How one policy field is documented and set (for the resource, the CLI and the docs)."""

    name: str
    default: float | int
    env: str
    meaning: str
    kind: type


def rules() -> tuple[Rule, ...]:
    """Every rule of :class:`Policy`, in declaration order."""
    return tuple(
        Rule(
            f.name,
            f.default,  # type: ignore[arg-type]
            f.metadata["env"],
            f.metadata["meaning"],
            int if isinstance(f.default, int) else float,
        )
        for f in dataclasses.fields(Policy)
    )


def env_name(rule_name: str) -> str:
    """The environment variable of a policy field (for messages: "set CHURN_X to move it")."""
    return next(rule.env for rule in rules() if rule.name == rule_name)


def load_policy(environ: Mapping[str, str] | None = None) -> Policy:
    """The policy with every variable set in ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    values: dict[str, float | int] = {}
    for rule in rules():
        raw = env.get(rule.env)
        if not raw:
            continue
        try:
            values[rule.name] = rule.kind(raw)
        except ValueError:
            kind = "an integer" if rule.kind is int else "a number"
            raise PolicyError(f"{rule.env}={raw!r} is not {kind}") from None
    return Policy(**values)  # type: ignore[arg-type]  # each value has its field's kind
