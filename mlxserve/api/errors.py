"""OpenAI-shaped errors: {"error": {message, type, param, code}} for every failure."""

from __future__ import annotations

import logging

from pydantic import ValidationError
from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

from mlxserve.engine.base import EngineError
from mlxserve.sampling.validation import SamplingParamError

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    503: "service_unavailable",
    507: "server_error",
}


class APIError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = ERROR_TYPES.get(self.status, "invalid_request_error")
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return {"error": error}

    def response(self) -> Response:
        response = jsonify(self.body())
        response.status_code = self.status
        return response


def from_validation_error(exc: ValidationError) -> APIError:
    """Missing required fields (and empty messages) are malformed requests (400); the rest are
    values out of range (422)."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = f"{param}: {first['msg']}" if param else first["msg"]
    if first["type"] == "missing" or (first["type"] == "too_short" and param == "messages"):
        return APIError(400, message, param, "missing_required_parameter")
    return APIError(422, message, param, "invalid_value")


def from_exception(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, SamplingParamError):
        return APIError(422, str(exc), exc.param, "invalid_value")
    if isinstance(exc, EngineError):
        return APIError(
            exc.status, str(exc), getattr(exc, "param", None), getattr(exc, "code", None)
        )
    log.error("unexpected error", exc_info=exc)
    return APIError(500, f"internal error: {type(exc).__name__}: {exc}")


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException):
        return APIError(exc.code or 500, exc.description or exc.name).response()

    @app.errorhandler(Exception)
    async def any_error(exc: Exception):
        return from_exception(exc).response()
