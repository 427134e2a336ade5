"""The OpenAPI 3.1 document of every route, made from the app's URL map and the pydantic models
its views parse (`with_body`), served at /openapi.json."""

from __future__ import annotations

import re

from quart import Quart

from mlxserve.api.http.errors import (
    ANTHROPIC_ERROR_TYPES,
    ANTHROPIC_PATHS,
    ERROR_TYPES,
    is_ollama_path,
)

SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}
STREAMING = {"text/event-stream": {"schema": SSE_EVENT}}
JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"enum": sorted(set(ERROR_TYPES.values()))},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"enum": sorted(set(ANTHROPIC_ERROR_TYPES.values()))},
                "message": {"type": "string"},
            },
        },
    },
}
OLLAMA_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
SKIPPED_METHODS = {"HEAD", "OPTIONS"}


def openapi_document(app: Quart) -> dict:
    schemas = {
        "ErrorResponse": ERROR,
        "AnthropicErrorResponse": ANTHROPIC_ERROR,
        "OllamaErrorResponse": OLLAMA_ERROR,
    }
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        if rule.endpoint == "static" or getattr(view, "undocumented", False):
            continue
        path, parameters = _openapi_path(rule.rule)
        for method in sorted(set(rule.methods) - SKIPPED_METHODS):
            operation = _operation(rule.endpoint, view, parameters, schemas)
            family = "Anthropic" if path.startswith(ANTHROPIC_PATHS) else None
            family = "Ollama" if is_ollama_path(path) else family
            if family:
                error = {"$ref": f"#/components/schemas/{family}ErrorResponse"}
                operation["responses"]["default"]["content"]["application/json"]["schema"] = error
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlxserve", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _operation(endpoint: str, view, parameters: list[dict], schemas: dict) -> dict:
    summary = (view.__doc__ or endpoint).strip().splitlines()[0]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    operation = {
        "operationId": endpoint,
        "summary": summary,
        "responses": {
            "200": {"description": "success", "content": _success_content(view, schemas)},
            "default": {"description": "an error", "content": error},
        },
    }
    if parameters:
        operation["parameters"] = parameters
    model = getattr(view, "request_model", None)
    if model is not None:
        body = {"application/json": {"schema": _reference(model, schemas, "validation")}}
        operation["requestBody"] = {"required": True, "content": body}
    return operation


def _reference(model, schemas: dict, mode: str) -> dict:
    """A pydantic model's schema among the document's components, by reference."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _success_content(view, schemas: dict) -> dict:
    """JSON (its model's schema where the view names one) or a stream (server-sent events
    unless the view names another type); a view that answers otherwise names its media type."""
    media_type = getattr(view, "response_media_type", None)
    if media_type is not None:
        return {media_type: {"schema": {"type": "string"}}}
    stream_type = getattr(view, "stream_media_type", None)
    streaming = {stream_type: {"schema": {"type": "string"}}} if stream_type else STREAMING
    model = getattr(view, "response_model", None)
    if model is None:
        return {**JSON_OBJECT, **streaming}
    return {
        "application/json": {"schema": _reference(model, schemas, "serialization")},
        **streaming,
    }


def _openapi_path(rule: str) -> tuple[str, list[dict]]:
    """Quart's `<path:model_id>` as OpenAPI's `{model_id}` with its parameter."""
    names = re.findall(r"<(?:\w+:)?(\w+)>", rule)
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]
    return path, parameters
