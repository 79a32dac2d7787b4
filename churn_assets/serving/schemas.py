"""The API's request and response models: what a caller may send and what it gets back.

Validation happens here, at the edge: a customer id the warehouse could never hold, a
non-finite feature or an oversized batch is a 422 before any lookup or scoring."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from churn_assets.limits import ID_FORBIDDEN_CHARACTERS, MAX_ID_LENGTH
from churn_assets.ml.bands import RiskBand
from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    FEATURE_DESCRIPTIONS,
    NUMERIC_FEATURES,
)

MAX_BATCH_ITEMS = 10_000

ServedBy = Literal["champion", "canary"]

# --- request and response models --------------------------------------------------------

EmailDomainClass = Literal["free", "business", "education", "unknown"]
if get_args(EmailDomainClass) != EMAIL_DOMAIN_CLASSES:  # the model's vocabulary, in order
    raise RuntimeError("EmailDomainClass is out of sync with EMAIL_DOMAIN_CLASSES")

# Bounded so float32 conversion stays finite; non-negative as every feature is a count,
# sum or duration (the model's log1p would turn a negative into NaN).
_F32_MAX = float(np.finfo(np.float32).max)


def _numeric(name: str) -> Any:
    return Field(ge=0, le=_F32_MAX, description=FEATURE_DESCRIPTIONS[name])


class Features(BaseModel):
    """The eight model features of one customer, as in ``marts.current_features``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    days_since_last_order: float = _numeric("days_since_last_order")
    total_revenue_30d: float = _numeric("total_revenue_30d")
    total_revenue_90d: float = _numeric("total_revenue_90d")
    total_revenue_365d: float = _numeric("total_revenue_365d")
    order_frequency: float = _numeric("order_frequency")
    cart_diversity: float = _numeric("cart_diversity")
    customer_lifetime_days: float = _numeric("customer_lifetime_days")
    email_domain_class: EmailDomainClass = Field(
        description=FEATURE_DESCRIPTIONS[CATEGORICAL_FEATURE]
    )


if tuple(Features.model_fields)[:-1] != NUMERIC_FEATURES:
    raise RuntimeError("Features fields are out of sync with NUMERIC_FEATURES")


_ID_FORBIDDEN = re.compile(ID_FORBIDDEN_CHARACTERS)  # the contract refuses them too


def _check_customer_id(value: str) -> str:
    """Refuse at the edge what can never match a warehouse id, with a reason (422), instead
    of a 404 that hides a client bug or a driver error that reaches the database pool."""
    bad = _ID_FORBIDDEN.search(value)
    if bad is not None:
        raise ValueError(
            "customer_id must not contain control characters or unpaired surrogates; "
            f"found U+{ord(bad.group()):04X} at position {bad.start()}"
        )
    if not value.strip():
        raise ValueError("customer_id must not be blank")
    if value != value.strip():
        raise ValueError(
            "customer_id must not start or end with whitespace (ids are stored stripped)"
        )
    return value


CustomerId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, description="as in the warehouse"),
    AfterValidator(_check_customer_id),
]


class PredictRequest(BaseModel):
    """Exactly one of ``customer_id`` (features from the warehouse) or ``features``."""

    model_config = ConfigDict(extra="forbid")

    customer_id: CustomerId | None = None
    features: Features | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.customer_id is None) == (self.features is None):
            given = "both" if self.customer_id is not None else "neither"
            raise ValueError(f"give exactly one of 'customer_id' or 'features' (got {given})")
        return self


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[PredictRequest], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]


class Lineage(BaseModel):
    """What produced a response: enough to trace and reproduce every score in it."""

    served_by: ServedBy = Field(
        description="champion, or canary: the challenger served this customer "
        "(CHURN_CANARY_PERCENT); model_version names the version either way"
    )
    model_name: str
    model_version: str
    model_sha256: str
    request_id: str
    scored_at: datetime


class Prediction(Lineage):
    customer_id: str | None
    features_as_of: str | None = Field(description="as_of of warehouse features, else null")
    features: Features
    input_hash: str = Field(description="sha256 of the canonical JSON of `features`")
    churn_probability: float
    risk_band: RiskBand


class BatchItem(BaseModel):
    customer_id: str | None
    features_as_of: str | None
    input_hash: str
    churn_probability: float
    risk_band: RiskBand


class BatchPrediction(Lineage):
    input_hash: str = Field(description="sha256 of the canonical JSON of the list of features")
    count: int
    predictions: list[BatchItem]


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str
    loaded_at: datetime


class RefreshErrorInfo(BaseModel):
    message: str
    at: datetime
    version: str | None


class FeatureStoreErrorInfo(BaseModel):
    message: str
    at: datetime


class FeatureStoreInfo(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="ok: customer_id lookups answer from a current copy of the feature table; "
        "degraded: from the last copy, because the latest refresh failed (see last_error); "
        "unavailable: they cannot be answered"
    )
    table: str
    as_of: date | None = Field(None, description="period (as_of) of the copy that answers")
    rows: int | None = Field(None, description="customers in that copy")
    refreshed_at: datetime | None = Field(
        None, description="the latest refresh that reached the feature table"
    )
    last_error: FeatureStoreErrorInfo | None = Field(
        description="the latest refresh or lookup that failed, kept after recovery"
    )


class ChallengerInfo(BaseModel):
    model: ModelInfo | None = Field(description="the challenger alias's version, once loaded")
    active: bool = Field(
        description="true when it is not the champion's version: every /predict is then "
        "shadow-scored by it, and the canary's customers are served by it"
    )
    canary_percent: float = Field(description="share of customers (by id) the canary serves")
    last_error: RefreshErrorInfo | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model: ModelInfo | None
    polling: bool
    last_refresh_at: datetime | None
    last_error: RefreshErrorInfo | None
    feature_store: FeatureStoreInfo
    challenger: ChallengerInfo | None = Field(
        None, description="null when the scorer does not follow a challenger"
    )
