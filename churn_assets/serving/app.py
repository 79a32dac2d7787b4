"""The online scoring API (FastAPI): churn probability for one customer or a batch.

A request names a customer (features are read from ``marts.current_features``, the table
batch scoring and the drift monitor read, so online and batch scores agree) or carries the
eight features itself. Every prediction carries its lineage: which registered model version
(and ONNX sha256) produced it, a request id, and the sha256 of the features actually scored,
so a score can be traced and reproduced later.

Each request reads the holder's model reference once and uses only that object, so a hot
reload in the middle of a request can never mix two models (see ``model_store``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt
import psycopg2
import psycopg2.extensions
from fastapi import FastAPI, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from psycopg2.pool import ThreadedConnectionPool
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    FEATURE_DESCRIPTIONS,
    NUMERIC_FEATURES,
    ModelInputs,
)
from churn_assets.serving.bands import RiskBand, risk_band
from churn_assets.serving.model_store import ChampionHolder, LoadedModel
from churn_assets.warehouse import WarehouseError, redact

FEATURE_TABLE = "marts.current_features"
MAX_BATCH_ITEMS = 10_000
API_KEY_HEADER = "X-API-Key"
REQUEST_ID_HEADER = "X-Request-ID"
OPEN_PATHS = frozenset({"/health"})  # reachable without the API key (load balancer probes)


# --- features ---------------------------------------------------------------------------


class FeatureSource(Protocol):
    """Where ``customer_id`` requests get their features; must be safe to call from many
    threads at once. Rows hold the eight features (plus ``as_of`` when known)."""

    def get(self, customer_id: str) -> dict[str, Any] | None: ...

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


class InMemoryFeatureSource:
    """Rows from a mapping (tests, benchmarks); read-only, hence thread-safe."""

    def __init__(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        self._rows = {key: dict(row) for key, row in rows.items()}

    def get(self, customer_id: str) -> dict[str, Any] | None:
        row = self._rows.get(customer_id)
        return dict(row) if row is not None else None

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {c: dict(self._rows[c]) for c in customer_ids if c in self._rows}


_COLUMNS = ("as_of", "customer_id", *NUMERIC_FEATURES, CATEGORICAL_FEATURE)
_SELECT = f"select {', '.join(_COLUMNS)} from {FEATURE_TABLE}"


class WarehouseFeatureSource:
    """Feature rows from ``marts.current_features`` over a small connection pool.

    psycopg2 connections must not be shared by concurrent threads, so each lookup borrows
    one from a ``ThreadedConnectionPool``. That pool raises instead of waiting when it is
    exhausted, hence the semaphore with one slot per connection in front of it. A connection
    broken by a server restart is discarded and the lookup retried once on a fresh one.

    One connection by default: a lookup is ~0.2 ms of mostly CPU, and on the 2-core
    reference machine more concurrent lookups only oversubscribe the cores (4 connections
    cut throughput 2-3x under 4 concurrent clients; see ``benchmarks/RESULTS.md``).
    Raise it for a remote warehouse, where concurrency hides network round trips.
    """

    def __init__(self, url: str, max_connections: int = 1) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._url = url
        self._slots = threading.BoundedSemaphore(max_connections)
        try:  # one connection up front: a wrong URL fails at startup, not on first request
            self._pool = ThreadedConnectionPool(1, max_connections, dsn=url, connect_timeout=10)
        except psycopg2.OperationalError as exc:
            message = f"cannot connect to the warehouse at {redact(url)}: {exc}"
            raise WarehouseError(message) from exc

    def get(self, customer_id: str) -> dict[str, Any] | None:
        rows = self._fetch(f"{_SELECT} where customer_id = %s", (customer_id,))
        return rows[0] if rows else None

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not customer_ids:
            return {}
        rows = self._fetch(f"{_SELECT} where customer_id = any(%s)", (list(customer_ids),))
        return {row["customer_id"]: row for row in rows}

    def close(self) -> None:
        self._pool.closeall()

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._slots:
            for attempt in (1, 2):
                try:
                    conn = self._pool.getconn()
                except psycopg2.Error as exc:
                    raise WarehouseError(
                        f"cannot connect to the warehouse at {redact(self._url)}: {exc}"
                    ) from exc
                try:
                    rows = _run_query(conn, sql, params)
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    self._pool.putconn(conn, close=True)
                    if attempt == 2:
                        raise WarehouseError(f"feature lookup failed: {exc}") from exc
                    continue
                except psycopg2.Error as exc:
                    self._pool.putconn(conn)
                    raise WarehouseError(f"feature lookup failed: {exc}") from exc
                self._pool.putconn(conn)
                return rows
        raise AssertionError("unreachable")  # pragma: no cover


def _run_query(
    conn: psycopg2.extensions.connection, sql: str, params: tuple[Any, ...]
) -> list[dict[str, Any]]:
    conn.autocommit = True  # plain reads: no transaction left idle between requests
    with conn.cursor() as cur:
        cur.execute(sql, params)
        names = [column.name for column in cur.description or ()]
        # numeric columns arrive as Decimal; the model and the input hash want floats
        return [
            {n: float(v) if isinstance(v, Decimal) else v for n, v in zip(names, row, strict=True)}
            for row in cur.fetchall()
        ]


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


class PredictRequest(BaseModel):
    """Exactly one of ``customer_id`` (features from the warehouse) or ``features``."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = Field(default=None, min_length=1, max_length=256)
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


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model: ModelInfo | None
    polling: bool
    last_refresh_at: datetime | None
    last_error: RefreshErrorInfo | None


# --- scoring ----------------------------------------------------------------------------

_CATEGORY_INDEX = {name: index for index, name in enumerate(EMAIL_DOMAIN_CLASSES)}


def input_hash(payload: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces), stable across clients."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def score(model: LoadedModel, features: Sequence[Features]) -> npt.NDArray[np.float32]:
    """One onnxruntime call for all rows (validated features need no pandas round trip)."""
    numeric = np.array(
        [[getattr(f, name) for name in NUMERIC_FEATURES] for f in features], dtype=np.float32
    ).reshape(len(features), len(NUMERIC_FEATURES))
    category = np.fromiter(
        (_CATEGORY_INDEX[f.email_domain_class] for f in features), dtype=np.int64
    )
    probabilities = model.predict(ModelInputs(numeric=numeric, category=category))
    if not np.isfinite(probabilities).all():
        raise HTTPException(422, "features are outside the range the model can score")
    return probabilities


def _stored_features(customer_id: str, row: Mapping[str, Any]) -> Features:
    try:
        return Features.model_validate({name: row.get(name) for name in Features.model_fields})
    except ValueError as exc:  # a warehouse problem, not the caller's: 500, with the reason
        detail = f"stored features of customer {customer_id!r} are invalid: {exc}"
        raise HTTPException(500, detail) from exc


def _as_of(row: Mapping[str, Any]) -> str | None:
    value = row.get("as_of")
    return None if value is None else str(value)


# --- the app ----------------------------------------------------------------------------


class _ApiKeyMiddleware:
    """Plain ASGI (no per-request task like ``BaseHTTPMiddleware``): covers every route,
    including /docs and /openapi.json, except ``OPEN_PATHS``."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            supplied = next((v for k, v in scope["headers"] if k == b"x-api-key"), b"")
            if not hmac.compare_digest(supplied, self._key):  # constant time
                response = JSONResponse(
                    {"detail": f"missing or invalid {API_KEY_HEADER} header"}, status_code=401
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    holder: ChampionHolder, feature_source: FeatureSource, api_key: str | None
) -> FastAPI:
    """The scoring API over ``holder``'s model; ``api_key`` (if set) guards all but /health."""
    app = FastAPI(
        title="churn scoring",
        version="1",
        description=(
            "Churn probability of one customer or a batch, from the MLflow champion "
            "(hot-reloaded). Every prediction names the model version and ONNX sha256 that "
            f"produced it. When the server has an API key, send it in `{API_KEY_HEADER}` "
            "(all endpoints except /health)."
        ),
    )
    if api_key:
        app.add_middleware(_ApiKeyMiddleware, api_key=api_key)

    def serving_model() -> LoadedModel:
        model = holder.model
        if model is None:
            raise HTTPException(503, "no model loaded yet; see /health")
        return model

    def lookup(customer_id: str, request_id: str) -> dict[str, Any]:
        try:
            row = feature_source.get(customer_id)
        except Exception as exc:
            raise HTTPException(503, f"feature store unavailable: {exc}") from exc
        if row is None:
            raise HTTPException(
                404,
                f"customer {customer_id!r} not found in {FEATURE_TABLE}",
                headers={REQUEST_ID_HEADER: request_id},
            )
        return row

    @app.post(
        "/predict",
        responses={404: {"description": "unknown customer"}, 503: {"description": "no model"}},
    )
    async def predict(request: PredictRequest, response: Response) -> Prediction:
        """Score one customer, by id (warehouse features) or by features."""
        request_id = str(uuid.uuid4())
        as_of = None
        features = request.features
        if request.customer_id is not None:
            # psycopg2 blocks: keep it off the event loop
            row = await run_in_threadpool(lookup, request.customer_id, request_id)
            features, as_of = _stored_features(request.customer_id, row), _as_of(row)
        assert features is not None  # the request validator guarantees one of the two
        model = serving_model()  # read once: scoring and envelope use the same model
        probability = float(score(model, [features])[0])
        response.headers[REQUEST_ID_HEADER] = request_id
        return Prediction(
            model_name=model.name,
            model_version=model.version,
            model_sha256=model.sha256,
            request_id=request_id,
            scored_at=datetime.now(UTC),
            customer_id=request.customer_id,
            features_as_of=as_of,
            features=features,
            input_hash=input_hash(features.model_dump()),
            churn_probability=probability,
            risk_band=risk_band(probability),
        )

    @app.post(
        "/predict/batch",
        responses={404: {"description": "unknown customer(s)"}, 503: {"description": "no model"}},
    )
    def predict_batch(request: BatchRequest, response: Response) -> BatchPrediction:
        """Score up to 10,000 items (ids and/or features) in one onnxruntime call; any
        unknown customer fails the whole batch with 404, naming the missing ids."""
        request_id = str(uuid.uuid4())
        ids = list(dict.fromkeys(i.customer_id for i in request.items if i.customer_id))
        try:
            rows = feature_source.get_many(ids) if ids else {}
        except Exception as exc:
            raise HTTPException(503, f"feature store unavailable: {exc}") from exc
        missing = [c for c in ids if c not in rows]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise HTTPException(
                404,
                f"{len(missing)} customer(s) not found in {FEATURE_TABLE}: {shown}{more}",
                headers={REQUEST_ID_HEADER: request_id},
            )
        features: list[Features] = []
        as_ofs: list[str | None] = []
        for item in request.items:
            if item.customer_id is not None:
                features.append(_stored_features(item.customer_id, rows[item.customer_id]))
                as_ofs.append(_as_of(rows[item.customer_id]))
            else:
                assert item.features is not None
                features.append(item.features)
                as_ofs.append(None)
        model = serving_model()
        probabilities = score(model, features).tolist()
        dumped = [f.model_dump() for f in features]
        response.headers[REQUEST_ID_HEADER] = request_id
        return BatchPrediction(
            model_name=model.name,
            model_version=model.version,
            model_sha256=model.sha256,
            request_id=request_id,
            scored_at=datetime.now(UTC),
            input_hash=input_hash(dumped),
            count=len(features),
            predictions=[
                BatchItem(
                    customer_id=item.customer_id,
                    features_as_of=as_of,
                    input_hash=input_hash(values),
                    churn_probability=p,
                    risk_band=risk_band(p),
                )
                for item, as_of, values, p in zip(
                    request.items, as_ofs, dumped, probabilities, strict=True
                )
            ],
        )

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "no model loaded"}},
    )
    async def health() -> JSONResponse:
        """ok: a model serves and the last refresh succeeded; degraded otherwise (the
        old model keeps serving after a failed refresh: 200; no model at all: 503)."""
        state = holder.state()
        model, error = state.model, state.last_error
        body = Health(
            status="ok" if model is not None and error is None else "degraded",
            model=_model_info(model) if model is not None else None,
            polling=holder.polling,
            last_refresh_at=state.last_refresh_at,
            last_error=RefreshErrorInfo(message=error.message, at=error.at, version=error.version)
            if error is not None
            else None,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if model else 503)

    @app.get("/model", responses={503: {"description": "no model loaded"}})
    async def model_info() -> ModelInfo:
        """The model that serves now."""
        return _model_info(serving_model())

    return app


def _model_info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(
        name=model.name, version=model.version, sha256=model.sha256, loaded_at=model.loaded_at
    )
