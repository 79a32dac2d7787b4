"""Hostile input and access: request size limits (413 before parsing), short validation
errors (a 422 never echoes a large body), batch parsing off the event loop, the API key.

All middleware here is plain ASGI (no per-request task like ``BaseHTTPMiddleware``), so the
normal path pays one header scan."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Mapping
from itertools import islice
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_assets.serving.schemas import BatchRequest

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

# --- hostile input: body size, parsing off the event loop, short errors -----------------


class _BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes its limit."""


class BodyLimitMiddleware:
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


async def validation_error_response(request: Request, exc: RequestValidationError) -> JSONResponse:
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


def parse_batch(body: bytes, content_type: str | None) -> BatchRequest:
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


def document_bodies(app: FastAPI, *models: type[BaseModel]) -> None:
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


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON body of ``model``."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# --- the app ----------------------------------------------------------------------------


class ApiKeyMiddleware:
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
