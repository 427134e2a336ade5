"""Errors in the shape of the API family a request was made to: OpenAI's
{"error": {message, type, param, code}} by default, Anthropic's on /v1/messages, and Ollama's
{"error": "..."} on its /api/ routes."""

from __future__ import annotations

import logging
import re
import uuid

from pydantic import ValidationError
from quart import Quart, Response, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from mlxserve.engine.base import EngineError
from mlxserve.pipeline.errors import RequestError
from mlxserve.sampling.validation import SamplingParamError

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    424: "external_connector_error",  # an MCP server the request names cannot be used
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
    507: "server_error",
}


# Anthropic's error types by status (its overloaded_error is a 529; a model still loading is ours)
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    507: "api_error",
}
ANTHROPIC_PATHS = "/v1/messages"
# Statuses Anthropic does not use, as the ones it uses for the same failures
ANTHROPIC_STATUSES = {405: 400, 415: 400, 422: 400, 503: 529, 507: 500}


# Ollama's routes are /api/<name>; LM Studio's sit under /api/v0 and /api/v1.
OLLAMA_PATH = re.compile(r"^/api/(?!v\d+(/|$))")


def is_ollama_path(path: str) -> bool:
    return OLLAMA_PATH.match(path) is not None


def ollama_body(error: RequestError) -> dict:
    return {"error": error.message}


def anthropic_body(error: RequestError) -> dict:
    kind = ANTHROPIC_ERROR_TYPES.get(error.status, "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def openai_body(error: RequestError) -> dict:
    kind = ERROR_TYPES.get(error.status, "invalid_request_error")
    return {
        "error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}
    }


def error_response(error: RequestError) -> Response:
    """In the error shape of the API family the request was made to."""
    path = request.path if has_request_context() else ""
    if path.startswith(ANTHROPIC_PATHS):
        response = jsonify(anthropic_body(error))
        response.status_code = ANTHROPIC_STATUSES.get(error.status, error.status)
    elif is_ollama_path(path):
        response = jsonify(ollama_body(error))
        # Ollama answers a value out of range as any other bad request.
        response.status_code = 400 if error.status == 422 else error.status
    else:
        response = jsonify(openai_body(error))
        response.status_code = error.status
    response.headers.update(error.headers)
    return response


def from_validation_error(exc: ValidationError) -> RequestError:
    """Missing required fields (and empty messages) are malformed requests (400); the rest are
    values out of range (422)."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = f"{param}: {first['msg']}" if param else first["msg"]
    if first["type"] == "missing" or (first["type"] == "too_short" and param == "messages"):
        return RequestError(400, message, param, "missing_required_parameter")
    return RequestError(422, message, param, "invalid_value")


def from_exception(exc: BaseException) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, SamplingParamError):
        return RequestError(422, str(exc), exc.param, "invalid_value")
    if isinstance(exc, EngineError):
        return RequestError(
            exc.status,
            str(exc),
            getattr(exc, "param", None),
            getattr(exc, "code", None),
            getattr(exc, "headers", None),
        )
    # The exception's text may hold internals (paths, addresses): the log has it, under an id.
    error_id = f"err_{uuid.uuid4().hex[:12]}"
    log.error("unexpected error %s", error_id, exc_info=exc)
    return RequestError(500, f"internal error {error_id}; the server's log has the details")


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException):
        return error_response(RequestError(exc.code or 500, exc.description or exc.name))

    @app.errorhandler(Exception)
    async def any_error(exc: Exception):
        return error_response(from_exception(exc))
