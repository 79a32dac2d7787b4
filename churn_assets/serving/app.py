"""The online scoring API (FastAPI): churn probability for one customer or a batch.

A request names a customer (features are read from ``marts.current_features``, the table
batch scoring and the drift monitor read, so online and batch scores agree) or carries the
eight features itself. Every prediction carries its lineage: which registered model version
(and ONNX sha256) produced it, a request id, and the sha256 of the features actually scored,
so a score can be traced and reproduced later.

Each request reads the holder's model reference once and uses only that object, so a hot
reload in the middle of a request can never mix two models (see ``model_store``). With a
challenger (see ``challenger``), ``/predict`` also feeds the shadow and serves the canary's
share of customers with the challenger; the envelope's ``served_by`` says which.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from churn_assets.ml.bands import RiskBands
from churn_assets.ml.features import (
    EMAIL_DOMAIN_CLASSES,
    NUMERIC_FEATURES,
    ModelInputs,
)
from churn_assets.policy import load_policy
from churn_assets.serving.challenger import in_canary
from churn_assets.serving.features import FEATURE_TABLE, FeatureSource
from churn_assets.serving.guards import (
    API_KEY_HEADER,
    MAX_BATCH_BODY_BYTES,
    MAX_BODY_BYTES,
    MAX_ERRORS_SHOWN,
    REQUEST_ID_HEADER,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    document_bodies,
    json_body,
    parse_batch,
    validation_error_response,
)
from churn_assets.serving.metrics import SERVED_BY, MetricsMiddleware, ServingMetrics
from churn_assets.serving.model_store import ChampionHolder, LoadedModel, RefreshError
from churn_assets.serving.prediction_log import LoggedPrediction, PredictionLog, ShadowJob
from churn_assets.serving.schemas import (
    BatchItem,
    BatchPrediction,
    BatchRequest,
    ChallengerInfo,
    Features,
    FeatureStoreErrorInfo,
    FeatureStoreInfo,
    Health,
    ModelInfo,
    Prediction,
    PredictRequest,
    RefreshErrorInfo,
    ServedBy,
)

_T = TypeVar("_T")

# --- scoring ----------------------------------------------------------------------------

_CATEGORY_INDEX = {name: index for index, name in enumerate(EMAIL_DOMAIN_CLASSES)}


def input_hash(payload: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces), stable across clients."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def model_inputs(features: Sequence[Features]) -> ModelInputs:
    """The model's input arrays for validated features (no pandas round trip)."""
    numeric = np.array(
        [[getattr(f, name) for name in NUMERIC_FEATURES] for f in features], dtype=np.float32
    ).reshape(len(features), len(NUMERIC_FEATURES))
    category = np.fromiter(
        (_CATEGORY_INDEX[f.email_domain_class] for f in features), dtype=np.int64
    )
    return ModelInputs(numeric=numeric, category=category)


def score(model: LoadedModel, inputs: ModelInputs) -> npt.NDArray[np.float32]:
    """One onnxruntime call for all rows; 422 when a row scores to a non-finite number."""
    probabilities = model.predict(inputs)
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


def create_app(
    holder: ChampionHolder,
    feature_source: FeatureSource,
    api_key: str | None,
    bands: RiskBands | None = None,
    metrics: ServingMetrics | None = None,
    prediction_log: PredictionLog | None = None,
    challenger: ChampionHolder | None = None,
    canary_percent: float = 0.0,
) -> FastAPI:
    """The scoring API over ``holder``'s model; ``api_key`` (if set) guards all but /health.
    ``bands`` default to the deployment's policy (the ``CHURN_RISK_*`` edges batch scoring
    uses too). ``metrics`` (a fresh registry by default) is what ``GET /metrics`` shows;
    the holder records its model swaps and reloads into it. ``prediction_log`` (if given)
    gets every prediction ``/predict`` and ``/predict/batch`` serve, queued without
    waiting. ``challenger`` (a holder of the ``challenger`` alias), when it holds another
    version than ``holder``, is shadow-scored on every prediction (results in the log, so
    it needs ``prediction_log``) and serves ``canary_percent`` % of customers by id on
    ``/predict``."""
    risk = bands or RiskBands.from_policy(load_policy())
    metrics = metrics or ServingMetrics()
    holder.attach_metrics(metrics)
    served_counters = {name: metrics.served.labels(name) for name in SERVED_BY}
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
        exception_handlers={RequestValidationError: validation_error_response},
    )
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=MAX_BODY_BYTES,
        limits={"/predict/batch": MAX_BATCH_BODY_BYTES},
    )
    if api_key:  # added last, so it runs first: no 413 (or anything) before the key check
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    document_bodies(app, BatchRequest)

    def serving_model() -> LoadedModel:
        model = holder.model
        if model is None:
            raise HTTPException(503, "no model loaded yet; see /health")
        return model

    def active_challenger(champion: LoadedModel | None) -> LoadedModel | None:
        """The challenger, when it is loaded and not the champion's version."""
        model = challenger.model if challenger is not None else None
        if model is None or champion is None or model.version == champion.version:
            return None
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
        response_model=Prediction,
        responses={
            404: {"description": "unknown customer"},
            413: too_large,
            503: {"description": "no model"},
        },
    )
    async def predict(request: PredictRequest) -> Response:
        """Score one customer, by id (warehouse features) or by features."""
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        as_of = None
        features = request.features
        if request.customer_id is not None:
            if feature_source.blocking:  # e.g. a pooled warehouse lookup: off the event loop
                row = await run_in_threadpool(lookup, request.customer_id, request_id)
            else:  # the online copy answers in microseconds; a thread hop costs ~0.1 ms
                row = lookup(request.customer_id, request_id)
            features, as_of = _stored_features(request.customer_id, row), _as_of(row)
        assert features is not None  # the request validator guarantees one of the two
        model = serving_model()  # read once: scoring and envelope use the same model
        shadow = active_challenger(model)
        served_by: ServedBy = "champion"
        if (
            shadow is not None
            and request.customer_id is not None
            and in_canary(request.customer_id, canary_percent)
        ):  # the canary: the challenger answers, the champion goes to the shadow
            model, shadow, served_by = shadow, model, "canary"
        inputs = model_inputs([features])
        probability = float(score(model, inputs)[0])
        prediction = Prediction(
            served_by=served_by,
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
            risk_band=risk.band(probability),
        )
        served_counters[served_by].inc()
        if prediction_log is not None:
            prediction_log.submit(
                LoggedPrediction(
                    request_id=request_id,
                    scored_at=prediction.scored_at,
                    customer_id=request.customer_id,
                    input_hash=prediction.input_hash,
                    features_as_of=as_of,
                    model_name=model.name,
                    model_version=model.version,
                    model_sha256=model.sha256,
                    churn_probability=probability,
                    risk_band=prediction.risk_band,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    served_by=served_by,
                ),
                ShadowJob(shadow, inputs) if shadow is not None else None,
            )
        # Built and serialised once here: returned as a model, FastAPI would validate it
        # again against the response model and encode it twice (~0.05 ms a request).
        return Response(
            prediction.model_dump_json(),
            media_type="application/json",
            headers={REQUEST_ID_HEADER: request_id},
        )

    def score_batch(body: bytes, content_type: str | None) -> Response:
        """Parse, look up, score and serialise one batch: all of it in a worker thread."""
        started = time.perf_counter()
        request = parse_batch(body, content_type)
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
        shadow = active_challenger(model)
        inputs = model_inputs(features)
        probabilities = score(model, inputs).tolist()
        dumped = [f.model_dump() for f in features]
        prediction = BatchPrediction(
            served_by="champion",
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
                    risk_band=risk.band(p),
                )
                for item, as_of, values, p in zip(
                    request.items, as_ofs, dumped, probabilities, strict=True
                )
            ],
        )
        served_counters["champion"].inc(len(features))
        if prediction_log is not None:
            _log_batch(prediction_log, prediction, model, shadow, inputs, started)
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
        openapi_extra=json_body(BatchRequest),
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
        """ok: a model serves, its last refresh succeeded and customer_id lookups answer
        from a current copy of the features; degraded otherwise (a model that serves: 200,
        and requests still work as far as they can: by features always, by id from the last
        copy of the features; no model at all: 503)."""
        state = holder.state()
        model, error = state.model, state.last_error
        source = feature_source.state()
        features_ok = source.available and not source.refresh_failed
        body = Health(
            status="ok" if model is not None and error is None and features_ok else "degraded",
            model=_model_info(model) if model is not None else None,
            polling=holder.polling,
            last_refresh_at=state.last_refresh_at,
            last_error=_refresh_error_info(error),
            feature_store=FeatureStoreInfo(
                status="ok" if features_ok else "degraded" if source.available else "unavailable",
                table=source.table,
                as_of=source.as_of,
                rows=source.rows,
                refreshed_at=source.refreshed_at,
                last_error=FeatureStoreErrorInfo(
                    message=source.last_error.message, at=source.last_error.at
                )
                if source.last_error is not None
                else None,
            ),
            challenger=_challenger_info(challenger, active_challenger(model), canary_percent)
            if challenger is not None
            else None,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if model else 503)

    @app.get("/model", responses={503: {"description": "no model loaded"}})
    async def model_info() -> ModelInfo:
        """The model that serves now."""
        return _model_info(serving_model())

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    async def prometheus_metrics() -> Response:
        """Counters, latency histogram and the serving model, in the Prometheus text format
        (guarded by the API key like the other endpoints when the server has one)."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # Added last, so it runs first: requests the guards refuse are counted too.
    app.add_middleware(
        MetricsMiddleware,
        metrics=metrics,
        routes=[route.path for route in app.routes if hasattr(route, "path")],
    )
    return app


def _log_batch(
    prediction_log: PredictionLog,
    batch: BatchPrediction,
    model: LoadedModel,
    shadow: LoadedModel | None,
    inputs: ModelInputs,
    started: float,
) -> None:
    """One log row per item (``batch_item`` is its index; the latency is the batch's), each
    with its shadow job when a challenger is active. The canary does not apply to batches:
    one answer names one model."""
    latency_ms = (time.perf_counter() - started) * 1000
    for index, item in enumerate(batch.predictions):
        prediction_log.submit(
            LoggedPrediction(
                request_id=batch.request_id,
                scored_at=batch.scored_at,
                customer_id=item.customer_id,
                input_hash=item.input_hash,
                features_as_of=item.features_as_of,
                model_name=model.name,
                model_version=model.version,
                model_sha256=model.sha256,
                churn_probability=item.churn_probability,
                risk_band=item.risk_band,
                latency_ms=latency_ms,
                served_by=batch.served_by,
                batch_item=index,
            ),
            ShadowJob(shadow, inputs, index) if shadow is not None else None,
        )


def _challenger_info(
    holder: ChampionHolder, active: LoadedModel | None, canary_percent: float
) -> ChallengerInfo:
    state = holder.state()
    return ChallengerInfo(
        model=_model_info(state.model) if state.model is not None else None,
        active=active is not None,
        canary_percent=canary_percent,
        last_error=_refresh_error_info(state.last_error),
    )


def _refresh_error_info(error: RefreshError | None) -> RefreshErrorInfo | None:
    if error is None:
        return None
    return RefreshErrorInfo(message=error.message, at=error.at, version=error.version)


def _model_info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(
        name=model.name, version=model.version, sha256=model.sha256, loaded_at=model.loaded_at
    )
