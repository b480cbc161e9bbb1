"""The one place where errors become HTTP responses: ``{"error": {"code", "message", "field"?}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.api.schemas import ErrorPublic
from server.errors import ServerError, Unauthorized

__all__ = ["document_errors", "error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)

_SOURCES = {"body", "query", "path", "header", "cookie"}


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def _server_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServerError)
    if exc.status >= 500:
        logger.error("%s: %s", exc.code, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return error_response(exc.status, exc.code, exc.message, exc.field, headers)


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in _SOURCES and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _field(tuple(first.get("loc", ())))
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (+{len(errors) - 1} more)"
    return error_response(422, "invalid_input", message, field or None)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {
        404: "not_found",
        405: "method_not_allowed",
        401: "unauthorized",
        403: "forbidden",
        413: "body_too_large",  # server/api/body_limit.py
    }.get(exc.status_code, "http_error")
    return error_response(
        exc.status_code, code, str(exc.detail), headers=dict(exc.headers) if exc.headers else None
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServerError, _server_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    document_errors(app)


_ERROR_REF = {"$ref": "#/components/schemas/ErrorPublic"}
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document say what the handlers above send: FastAPI documents every 422
    as its own ``{"detail": [...]}``, which this API never returns, and no other error at all.
    Every operation's 422 becomes :class:`ErrorPublic`, and a ``4XX`` response documents the
    rest (401, 403, 404, 409, 413 …), so a client generated from the document parses errors."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = generate()  # FastAPI caches it in app.openapi_schema: edited in place, once
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        model = ErrorPublic.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(model.pop("$defs", {}))
        schemas["ErrorPublic"] = model
        error = {"description": "Error", "content": {"application/json": {"schema": _ERROR_REF}}}
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {**error, "description": "Invalid input (names the field)"}
                responses.setdefault("4XX", error)
        for name in _FASTAPI_422:
            schemas.pop(name, None)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
