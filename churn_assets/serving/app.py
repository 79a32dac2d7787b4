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
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from typing import Annotated, Any, Literal, Protocol, TypeVar, get_args

import numpy as np
import numpy.typing as npt
import psycopg2
import psycopg2.extensions
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg2.pool import ThreadedConnectionPool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_assets.limits import MAX_ID_LENGTH
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
# Request bodies over these sizes get 413 before anything reads them. One /predict body is
# under 2 KiB (with a 256-character id, even \u-escaped). 10,000 items weigh 2.2 MiB as
# compact JSON with typical features, 4.9 MiB pretty-printed (indent 4) with 17-digit
# floats, 7.5 MiB as ids of 256 three-byte UTF-8 characters: 8 MiB admits every batch of
# MAX_BATCH_ITEMS. The cap also bounds what a hostile body costs: batches are parsed off
# the event loop, but CPython's JSON parser holds the GIL, so the worst 8 MiB (2.8M empty
# arrays) still delays other requests by ~0.65 s on the 2-core reference machine.
MAX_BODY_BYTES = 64 * 1024
MAX_BATCH_BODY_BYTES = 8 * 1024 * 1024
# A 422 lists at most this many errors (plus how many it left out), each quoting at most
# this many characters of the offending input: an error must not echo a large body back.
MAX_ERRORS_SHOWN = 20
MAX_EXCERPT_CHARS = 80
API_KEY_HEADER = "X-API-Key"
REQUEST_ID_HEADER = "X-Request-ID"
OPEN_PATHS = frozenset({"/health"})  # reachable without the API key (load balancer probes)

_T = TypeVar("_T")


# --- features ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceError:
    """The latest lookup that failed for a warehouse reason (kept after recovery)."""

    message: str
    at: datetime


@dataclass(frozen=True)
class SourceState:
    """What ``/health`` shows of the feature store: whether the latest lookup reached it."""

    table: str
    available: bool
    last_error: SourceError | None


class FeatureSource(Protocol):
    """Where ``customer_id`` requests get their features; must be safe to call from many
    threads at once. Rows hold the eight features (plus ``as_of`` when known).

    ``get``/``get_many`` raise :class:`WarehouseError` when the store cannot answer (503)
    and ``ValueError`` for an id the store cannot even be asked about (422)."""

    def get(self, customer_id: str) -> dict[str, Any] | None: ...

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def state(self) -> SourceState: ...


class InMemoryFeatureSource:
    """Rows from a mapping (tests, benchmarks); read-only, hence thread-safe."""

    def __init__(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        self._rows = {key: dict(row) for key, row in rows.items()}

    def get(self, customer_id: str) -> dict[str, Any] | None:
        row = self._rows.get(customer_id)
        return dict(row) if row is not None else None

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {c: dict(self._rows[c]) for c in customer_ids if c in self._rows}

    def state(self) -> SourceState:
        return SourceState(table="(in memory)", available=True, last_error=None)


_COLUMNS = ("as_of", "customer_id", *NUMERIC_FEATURES, CATEGORICAL_FEATURE)
_SELECT = f"select {', '.join(_COLUMNS)} from {FEATURE_TABLE}"


class WarehouseFeatureSource:
    """Feature rows from ``marts.current_features`` over a small connection pool.

    psycopg2 connections must not be shared by concurrent threads, so each lookup borrows
    one from a ``ThreadedConnectionPool``. That pool raises instead of waiting when it is
    exhausted, hence the semaphore with one slot per connection in front of it. Every
    borrowed connection goes back on every path (a leaked one would exhaust the pool for
    good): a connection broken by a server restart is discarded and the lookup retried once
    on a fresh one, and after an error that is not a database error (e.g. the driver
    refusing a parameter) the connection is discarded too, since its state is unknown.

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
        self._state = SourceState(table=FEATURE_TABLE, available=True, last_error=None)
        self._state_lock = threading.Lock()
        try:  # one connection up front: a wrong URL fails at startup, not on first request
            self._pool = ThreadedConnectionPool(1, max_connections, dsn=url, connect_timeout=10)
        except psycopg2.Error as exc:
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

    def state(self) -> SourceState:
        return self._state

    def close(self) -> None:
        self._pool.closeall()

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            rows = self._fetch_pooled(sql, params)
        except WarehouseError as exc:
            with self._state_lock:
                failed = SourceError(message=str(exc), at=datetime.now(UTC))
                self._state = replace(self._state, available=False, last_error=failed)
            raise
        if not self._state.available:  # one attribute read on the normal path
            with self._state_lock:
                self._state = replace(self._state, available=True)
        return rows

    def _fetch_pooled(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._slots:
            for attempt in (1, 2):
                try:
                    conn = self._pool.getconn()
                except psycopg2.Error as exc:
                    raise WarehouseError(
                        f"cannot connect to the warehouse at {redact(self._url)}: {exc}"
                    ) from exc
                discard = True  # unless the query ran or failed inside the database
                try:
                    rows = _run_query(conn, sql, params)
                    discard = False
                    return rows
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    if attempt == 2:
                        raise WarehouseError(f"feature lookup failed: {exc}") from exc
                except psycopg2.Error as exc:
                    discard = bool(conn.closed)  # autocommit: a failed query leaves it usable
                    raise WarehouseError(f"feature lookup failed: {exc}") from exc
                finally:
                    self._pool.putconn(conn, close=discard)
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


# C0 and C1 controls (NUL included: Postgres text cannot hold it) and lone surrogates
# (not encodable as UTF-8): no warehouse id contains them, and the driver raises on some.
_ID_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


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
    status: Literal["ok", "unavailable"] = Field(
        description="whether the latest customer_id lookup reached the feature table"
    )
    table: str
    last_error: FeatureStoreErrorInfo | None = Field(
        description="the latest lookup that failed for a warehouse reason, kept after recovery"
    )


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model: ModelInfo | None
    polling: bool
    last_refresh_at: datetime | None
    last_error: RefreshErrorInfo | None
    feature_store: FeatureStoreInfo


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


def _ask_store(fetch: Callable[[], _T]) -> _T:
    """A feature-store call, its failures as HTTP errors: an id the store cannot be asked
    about is the caller's problem (422), anything else means no features (503)."""
    try:
        return fetch()
    except ValueError as exc:
        raise HTTPException(422, f"customer_id cannot be looked up: {exc}") from exc
    except Exception as exc:
        raise HTTPException(503, f"feature store unavailable: {exc}") from exc


# --- hostile input: body size, parsing off the event loop, short errors -----------------


class _BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes its limit."""


class _BodyLimitMiddleware:
    """413 for a request body over its path's limit, before anything reads or parses it.

    Plain ASGI (no per-request task). A declared Content-Length is checked up front and the
    request is then passed on untouched: the HTTP server delivers exactly that many bytes.
    Only a chunked body (no Content-Length) is counted as it streams; when it passes the
    limit, the app sees an error from ``receive`` and its answer is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, default_limit: int, limits: Mapping[str, int]) -> None:
        self.app = app
        self._default = default_limit
        self._limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limits.get(scope["path"], self._default)
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and (declared is None or declared.isdigit()):
            if declared is not None and int(declared) > limit:
                await _too_large(scope, receive, send, limit, int(declared))
            else:  # no body, or one within the limit
                await self.app(scope, receive, send)
            return

        received = 0
        exceeded = started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a body that broke off; the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await _too_large(scope, receive, send, limit, None)


async def _too_large(
    scope: Scope, receive: Receive, send: Send, limit: int, size: int | None
) -> None:
    got = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    detail = f"request body too large: {got}; {scope['path']} accepts at most {limit:,} bytes"
    # Close the connection: the rest of the body is never read, so it must not be taken
    # for the next request.
    response = JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
    await response(scope, receive, send)


def _clip(text: str, limit: int = MAX_EXCERPT_CHARS) -> str:
    """At most ``limit`` characters, encodable as UTF-8 (a lone surrogate is escaped)."""
    clipped = text if len(text) <= limit else text[:limit] + "…"
    return clipped.encode("utf-8", "backslashreplace").decode("utf-8")


_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _sample(value: Any, depth: int) -> Any:
    """A JSON-safe miniature of ``value``: 5 entries per container, 2 levels, cut strings
    (never walks the whole input, which may be megabytes)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE.get(value, "NaN")
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, bytes | bytearray):
        return _clip(bytes(value[: MAX_EXCERPT_CHARS + 1]).decode("utf-8", "replace"))
    if isinstance(value, Mapping | list | tuple) and depth <= 0:
        return "…"
    if isinstance(value, Mapping):
        return {_clip(str(k)): _sample(value[k], depth - 1) for k in islice(value, 5)}
    if isinstance(value, list | tuple):
        return [_sample(item, depth - 1) for item in value[:5]]
    return f"<{type(value).__name__}>"


def _excerpt(value: Any) -> Any:
    """What a 422 quotes of the offending input: scalars as they are (non-finite numbers
    by name, long strings cut), containers as cut JSON text."""
    sample = _sample(value, depth=2)
    if isinstance(sample, dict | list):
        return _clip(json.dumps(sample, ensure_ascii=False))
    if isinstance(sample, int) and not isinstance(sample, bool) and abs(sample) >= 10**15:
        return _clip(str(sample))
    return sample


def _short_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """One validation error, JSON-safe and short (FastAPI's default echoes the whole input
    and fails with a 500 when the input holds NaN)."""
    short: dict[str, Any] = {
        "type": str(error.get("type", "")),
        "loc": [p if isinstance(p, int) else _clip(str(p)) for p in error.get("loc", ())],
        "msg": _clip(str(error.get("msg", "")), 4 * MAX_EXCERPT_CHARS),
    }
    if "input" in error:
        short["input"] = _excerpt(error["input"])
    ctx = {
        key: _excerpt(value)
        for key, value in (error.get("ctx") or {}).items()
        if value is None or isinstance(value, str | int | float)  # not e.g. an exception
    }
    if ctx:
        short["ctx"] = ctx
    return short


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 listing the first ``MAX_ERRORS_SHOWN`` errors, each short, and how many more."""
    errors = exc.errors()
    body: dict[str, Any] = {"detail": [_short_error(e) for e in errors[:MAX_ERRORS_SHOWN]]}
    if len(errors) > MAX_ERRORS_SHOWN:
        body["errors_not_shown"] = len(errors) - MAX_ERRORS_SHOWN
    return JSONResponse(body, status_code=422)


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule for parsing a body as JSON: ``application/json`` or ``…+json``."""
    if content_type is None:
        return False
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _parse_batch(body: bytes, content_type: str | None) -> BatchRequest:
    """``body`` as a :class:`BatchRequest`, with FastAPI's error format (``loc`` from
    ``body``): run in a worker thread, the reason this route parses its own body."""
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    data: Any = body
    if _is_json(content_type):  # otherwise the bytes fail validation, as with FastAPI
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            position = getattr(exc, "pos", None)
            error = {
                "type": "json_invalid",
                "loc": ("body",) if position is None else ("body", position),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": getattr(exc, "msg", None) or str(exc)},
            }
            raise RequestValidationError([error]) from exc
    try:
        return BatchRequest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc


def _document_bodies(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put ``models`` into the OpenAPI components, so routes that parse their own body
    (off the event loop) still document it via ``openapi_extra`` (and in /docs)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas[model.__name__] = schema
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON body of ``model``."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


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
            "(all endpoints except /health). Request bodies are limited to "
            f"{MAX_BODY_BYTES // 1024} KiB ({MAX_BATCH_BODY_BYTES // 2**20} MiB for "
            "/predict/batch): larger ones get 413."
        ),
        exception_handlers={RequestValidationError: _validation_error},
    )
    app.add_middleware(
        _BodyLimitMiddleware,
        default_limit=MAX_BODY_BYTES,
        limits={"/predict/batch": MAX_BATCH_BODY_BYTES},
    )
    if api_key:  # added last, so it runs first: no 413 (or anything) before the key check
        app.add_middleware(_ApiKeyMiddleware, api_key=api_key)
    _document_bodies(app, BatchRequest)

    def serving_model() -> LoadedModel:
        model = holder.model
        if model is None:
            raise HTTPException(503, "no model loaded yet; see /health")
        return model

    def lookup(customer_id: str, request_id: str) -> dict[str, Any]:
        row = _ask_store(lambda: feature_source.get(customer_id))
        if row is None:
            raise HTTPException(
                404,
                f"customer {customer_id!r} not found in {FEATURE_TABLE}",
                headers={REQUEST_ID_HEADER: request_id},
            )
        return row

    too_large = {"description": "request body over the size limit"}

    @app.post(
        "/predict",
        responses={
            404: {"description": "unknown customer"},
            413: too_large,
            503: {"description": "no model"},
        },
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

    def score_batch(body: bytes, content_type: str | None) -> Response:
        """Parse, look up, score and serialise one batch: all of it in a worker thread."""
        request = _parse_batch(body, content_type)
        request_id = str(uuid.uuid4())
        ids = list(dict.fromkeys(i.customer_id for i in request.items if i.customer_id))
        rows = _ask_store(lambda: feature_source.get_many(ids)) if ids else {}
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
        prediction = BatchPrediction(
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
        return Response(
            prediction.model_dump_json(),
            media_type="application/json",
            headers={REQUEST_ID_HEADER: request_id},
        )

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        responses={
            404: {"description": "unknown customer(s)"},
            413: too_large,
            422: {"description": f"invalid items (the first {MAX_ERRORS_SHOWN} errors listed)"},
            503: {"description": "no model"},
        },
        openapi_extra=_json_body(BatchRequest),
    )
    async def predict_batch(request: Request) -> Response:
        """Score up to 10,000 items (ids and/or features) in one onnxruntime call; any
        unknown customer fails the whole batch with 404, naming the missing ids."""
        # FastAPI would parse and validate a declared body on the event loop, where a large
        # batch stalls every other request; reading the bytes here is cheap.
        body = await request.body()
        return await run_in_threadpool(score_batch, body, request.headers.get("content-type"))

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "no model loaded"}},
    )
    async def health() -> JSONResponse:
        """ok: a model serves, the last refresh succeeded and the latest customer_id lookup
        reached the feature store; degraded otherwise (a model that serves: 200, and
        requests by features still work; no model at all: 503)."""
        state = holder.state()
        model, error = state.model, state.last_error
        source = feature_source.state()
        body = Health(
            status="ok" if model is not None and error is None and source.available else "degraded",
            model=_model_info(model) if model is not None else None,
            polling=holder.polling,
            last_refresh_at=state.last_refresh_at,
            last_error=RefreshErrorInfo(message=error.message, at=error.at, version=error.version)
            if error is not None
            else None,
            feature_store=FeatureStoreInfo(
                status="ok" if source.available else "unavailable",
                table=source.table,
                last_error=FeatureStoreErrorInfo(
                    message=source.last_error.message, at=source.last_error.at
                )
                if source.last_error is not None
                else None,
            ),
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
