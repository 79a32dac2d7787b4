"""The names several layers share: registry aliases and tags, table names, snapshot columns
and dtypes, the feature vocabulary. Pure constants, below ``data/``, ``quality/``, ``ml/``
and ``serving/``, so none of them reaches into another for a name.

The features themselves are computed once, in dbt SQL (``dbt_project/models/marts``); this
module fixes their names, order and vocabulary as the model and the checks see them.
"""

from __future__ import annotations

# The MLflow experiment training runs log to, and the registered model they version.
EXPERIMENT_NAME = "churn"
REGISTERED_MODEL_NAME = "churn-model"

# MLflow registry aliases, and the tags the promotion decision writes on a version.
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
PROMOTION_TAG_PREFIX = "promotion."
TAG_PROMOTION_DECISION = f"{PROMOTION_TAG_PREFIX}decision"  # set once: decided once

# dbt tables the Python side reads.
TRAINING_SNAPSHOT_TABLE = "marts.training_snapshot"
CURRENT_FEATURES_TABLE = "marts.current_features"  # newest period: scorer, drift
CUSTOMER_FEATURES_TABLE = "marts.customer_features"  # every period
CHURN_LABELS_TABLE = "marts.churn_labels"
# Written by the online scorer (one row per served prediction), read by analysts and the
# shadow comparison.
ONLINE_PREDICTIONS_TABLE = "scoring.online_predictions"
# Realized performance per (model version, period): written by its asset, read by the
# analyst tables and `churn status`.
REALIZED_TABLE = "scoring.realized_performance"
# The dbt models partitioned by period (incremental on as_of): a retired period's rows go.
PERIOD_TABLES = (CUSTOMER_FEATURES_TABLE, CHURN_LABELS_TABLE, TRAINING_SNAPSHOT_TABLE)

ID = "customer_id"
LABEL = "churned"
NUMERIC_FEATURES: tuple[str, ...] = (
    "days_since_last_order",
    "total_revenue_30d",
    "total_revenue_90d",
    "total_revenue_365d",
    "order_frequency",
    "cart_diversity",
    "customer_lifetime_days",
)
CATEGORICAL_FEATURE = "email_domain_class"
EMAIL_DOMAIN_CLASSES: tuple[str, ...] = ("free", "business", "education", "unknown")
UNKNOWN_CLASS = "unknown"

# One-line meanings, for model cards and metadata (the dbt yml has the full definitions).
FEATURE_DESCRIPTIONS: dict[str, str] = {
    "days_since_last_order": "days from the last order on or before as_of to as_of",
    "total_revenue_30d": "revenue of orders in (as_of - 30 days, as_of]",
    "total_revenue_90d": "revenue of orders in (as_of - 90 days, as_of]",
    "total_revenue_365d": "revenue of orders in (as_of - 365 days, as_of]",
    "order_frequency": "orders to date per 30 days of lifetime (lifetime floored at 30 days)",
    "cart_diversity": "distinct product categories ordered to date",
    "customer_lifetime_days": "days from signup (or first order if earlier/missing) to as_of",
    "email_domain_class": "free, business, education or unknown (missing email)",
}

# Every column of the training snapshot and the pandas dtype the ML code and the quality
# suite expect (the scoring tables have the same columns without the label).
SNAPSHOT_DTYPES: dict[str, str] = {
    ID: "object",
    "as_of": "object",  # datetime.date values; pandas keeps them in an object column
    "days_since_last_order": "int64",
    "total_revenue_30d": "float64",
    "total_revenue_90d": "float64",
    "total_revenue_365d": "float64",
    "order_frequency": "float64",
    "cart_diversity": "int64",
    CATEGORICAL_FEATURE: "object",
    "customer_lifetime_days": "int64",
    LABEL: "int64",
}
