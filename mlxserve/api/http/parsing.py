"""Request bodies parsed into protocol models as early as possible."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import TypeVar

from pydantic import BaseModel
from quart import request

from mlxserve.pipeline.errors import RequestError

Model = TypeVar("Model", bound=BaseModel)
LARGE_BODY_BYTES = 256 * 1024


async def parse_body(model: type[Model]) -> Model:
    raw = await request.get_data()
    if asyncio.current_task().cancelling():
        # Python 3.11's wait_for (Quart's body read) drops a cancel that comes as the body
        # ends; a client gone by then must not start a generation nobody will read.
        raise asyncio.CancelledError
    if len(raw) > LARGE_BODY_BYTES:  # decoding megabytes takes a while: off the event loop
        return await asyncio.to_thread(_decoded, model, raw)
    return _decoded(model, raw)


def _decoded(model: type[Model], raw: bytes) -> Model:
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(
            400, f"request body is not valid JSON: {exc}", None, "invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object", None, "invalid_json")
    return model.model_validate(data)


def with_body(model: type[Model]):
    """Parse the request body into `model` and pass it to the view as its first argument; the
    OpenAPI document reads the model from the view's `request_model`."""

    def decorate(view):
        @functools.wraps(view)
        async def parsed(*args, **kwargs):
            return await view(await parse_body(model), *args, **kwargs)

        parsed.request_model = model
        return parsed

    return decorate


def answers(model: type[BaseModel]):
    """Name the model of the view's JSON answer (a stream's chunks aside) for the OpenAPI
    document, which schemathesis checks every answer against."""

    def decorate(view):
        view.response_model = model
        return view

    return decorate
